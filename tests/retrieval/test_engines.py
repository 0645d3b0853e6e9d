"""Index types: flat (sharded), ivf and hnsw behind one API; manifests; incremental adds."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medhash import Archive
from medhash.ingest import ingest
from medhash.demo import write_demo_cohort
from medhash.errors import EngineError, ModelMismatchError
from medhash.retrieval import Engine, Index, build_index, hamming_topk
from medhash.retrieval.engines import ENGINE_FILE, FaissApproxEngine, FlatEngine, auto_nlist, resolve_params


def clustered_codes(n: int, n_bytes: int = 8, centres: int = 20, flip: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 2, (centres, n_bytes * 8), dtype=np.uint8)
    bits = c[rng.integers(0, centres, n)] ^ (rng.random((n, n_bytes * 8)) < flip)
    return np.packbits(bits.astype(np.uint8), axis=1)


def test_sharded_flat_equals_one_faiss_scan_ties_included():
    codes = clustered_codes(3000, n_bytes=2, flip=0.05)     # 16 bits: many ties
    keys = np.arange(3000, dtype=np.int64)
    ref = FlatEngine(codes, shards=1)
    sharded = FlatEngine(codes, shards=3)
    assert len(sharded.parts) == 3 and sharded.ntotal == 3000
    q = clustered_codes(20, n_bytes=2, seed=5)
    for i in range(len(q)):
        Dr, Ir = hamming_topk(ref, q[i:i + 1], 10, keys)
        Ds, Is = hamming_topk(sharded, q[i:i + 1], 10, keys)
        assert np.array_equal(Dr, Ds) and np.array_equal(Ir, Is)
    ex = [np.arange(3000) % 7 == 0 for _ in range(len(q))]
    Dr, Ir = hamming_topk(ref, q, 25, keys, ex)                   # batch path with exclusions
    Ds, Is = hamming_topk(sharded, q, 25, keys, ex)
    assert np.array_equal(Dr, Ds) and np.array_equal(Ir, Is)


@pytest.mark.parametrize("index_type,params", [("ivf", {"nlist": 16, "nprobe": 16}),
                                                ("hnsw", {"M": 16, "ef_search": 2000})])
def test_approximate_engines_are_exact_when_told_to_scan_everything(index_type, params):
    both = clustered_codes(2030, n_bytes=8)                       # queries from the same clusters
    codes, q = both[:2000], both[2000:]
    keys = np.arange(2000, dtype=np.int64)
    eng = FaissApproxEngine.create(index_type, resolve_params(index_type, params), codes, seed=0)
    assert not eng.exact and eng.ntotal == 2000 and isinstance(eng, Engine)
    Df, If = hamming_topk(FlatEngine(codes, shards=1), q, 10, keys)
    Da, Ia = hamming_topk(eng, q, 10, keys)
    assert np.array_equal(Df, Da)                                  # the distances of the true top-10
    # identical item sets up to ties at the 10th distance
    for a, b, d in zip(If, Ia, Df):
        sure = d < d[-1]
        assert set(a[sure]) == set(b[sure])
    for i in range(5):                                             # single-query fast path
        D1, _ = hamming_topk(eng, q[i:i + 1], 10, keys)
        assert np.array_equal(D1[0], Df[i])


def test_params_and_nlist():
    assert resolve_params("ivf", {"nprobe": 8})["nprobe"] == 8
    assert resolve_params("hnsw", None)["M"] == 32
    with pytest.raises(EngineError, match="does not apply to a flat index"):
        resolve_params("flat", {"nprobe": 8})
    with pytest.raises(EngineError, match="index type must be one of"):
        resolve_params("lsh-forest", {})
    with pytest.raises(EngineError, match="whole number"):
        resolve_params("ivf", {"nlist": 0})
    assert auto_nlist(10**7) == 1024 and auto_nlist(10**6) == 256 and auto_nlist(10**5) == 64 and auto_nlist(1000) == 16
    assert auto_nlist(300) == 7                       # n / 39: enough training codes per centroid
    with pytest.raises(EngineError, match="needs at least 64 codes"):
        FaissApproxEngine.create("ivf", resolve_params("ivf", {"nlist": 64}), clustered_codes(40), seed=0)


# ------------------------------------------------------------------ indexes in an archive
def _results(idx: Index, k: int = 8):
    feats = idx.features()[::11]
    return [[(h.row, h.hamming) for h in hits] for hits in idx.search(feats, k)]


@pytest.mark.parametrize("index_type,params", [("ivf", {"nlist": 8, "nprobe": 8}),
                                                ("hnsw", {"ef_search": 1000})])
def test_index_types_in_an_archive_incremental_equals_rebuild(trained, tmp_path, index_type, params):
    root, arch0 = trained
    shutil.copytree(arch0.path, tmp_path / "arch")
    arch = Archive(tmp_path / "arch")
    man = build_index(arch, "flat", "ct", 128, seed=0)
    assert man["index_type"] == "flat"
    g = man["gamma_"]                  # one fixed gamma: the fresh build below hashes like the incremental one
    # the same codes through the approximate engine, asked to scan everything: the exact answer
    build_index(arch, "approx", "ct", 128, g, seed=0, index_type=index_type, index_params=params)
    man = json.loads((arch.path / "indexes" / "approx" / "manifest.json").read_text())
    assert man["index_type"] == index_type and man["engine"]["built_on"] == len(arch)
    exact = _results(Index(arch, "flat"))
    assert [[d for _, d in r] for r in _results(Index(arch, "approx"))] == [[d for _, d in r] for r in exact]
    # a new patient arrives: both indexes grow; the approximate one still answers like the flat one
    write_demo_cohort(tmp_path / "more", n_patients=4, rows=96, seed=11)
    shutil.rmtree(tmp_path / "more" / "DEMO001")
    ingest(arch, [tmp_path / "more"])
    added = build_index(arch, "approx", "ct", 128, g, seed=0, index_type=index_type, index_params=params)
    assert added["added"] > 0 and added["items"] == len(arch)
    assert added["engine"]["built_on"] < added["items"]          # trained before the new patient came
    build_index(arch, "flat", "ct", 128, seed=0)
    a, f = Index(arch, "approx"), Index(arch, "flat")
    assert np.array_equal(np.asarray(a.codes), np.asarray(f.codes))
    assert [[d for _, d in r] for r in _results(a)] == [[d for _, d in r] for r in _results(f)]
    # the engine grown by an add equals one built on all the codes at once
    codes = np.asarray(a.codes)
    fresh = FaissApproxEngine.create(index_type, resolve_params(index_type, params), codes, seed=0)
    D1, _ = hamming_topk(a.engine, codes[::7], 8, a.rows)
    D2, _ = hamming_topk(fresh, codes[::7], 8, a.rows)
    assert np.array_equal(D1, D2)


def test_index_type_mismatches_are_clear_errors(trained, tmp_path):
    root, arch0 = trained
    shutil.copytree(arch0.path, tmp_path / "arch")
    arch = Archive(tmp_path / "arch")
    build_index(arch, "i", "ct", 64, seed=0, index_type="ivf", index_params={"nlist": 8})
    with pytest.raises(ModelMismatchError, match="index_type: index has 'ivf', asked 'flat'"):
        build_index(arch, "i", "ct", 64, seed=0)
    with pytest.raises(ModelMismatchError, match="index_params"):
        build_index(arch, "i", "ct", 64, seed=0, index_type="ivf", index_params={"nlist": 16})
    # an engine file of another kind, or none, under an ivf manifest
    build_index(arch, "h", "ct", 64, seed=0, index_type="hnsw")
    shutil.copy(arch.path / "indexes" / "h" / ENGINE_FILE, arch.path / "indexes" / "i" / ENGINE_FILE)
    with pytest.raises(ModelMismatchError, match="holds a hnsw engine but the manifest says ivf"):
        Index(arch, "i")
    (arch.path / "indexes" / "i" / ENGINE_FILE).unlink()
    with pytest.raises(ModelMismatchError, match="is missing"):
        Index(arch, "i")
    # rebuilding replaces it
    build_index(arch, "i", "ct", 64, seed=0, rebuild=True)
    assert Index(arch, "i").index_type == "flat"
    assert not (arch.path / "indexes" / "i" / ENGINE_FILE).exists()


def test_index_cache_reuses_an_index_until_its_manifest_changes(trained, tmp_path):
    import os

    from medhash.retrieval import IndexCache, open_index
    root, arch0 = trained
    shutil.copytree(arch0.path, tmp_path / "arch")
    arch = Archive(tmp_path / "arch")
    build_index(arch, "c", "ct", 64, seed=0)
    cache = IndexCache()
    first = open_index(arch, "c", cache)
    assert open_index(arch, None, cache) is first and len(cache) == 1
    assert open_index(arch, "c") is not first                     # no cache given: opened afresh
    assert open_index(arch, "c", IndexCache()) is not first       # caches are not shared
    mpath = arch.path / "indexes" / "c" / "manifest.json"
    st = mpath.stat()
    os.utime(mpath, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the index was written again
    again = open_index(arch, "c", cache)
    assert again is not first and open_index(arch, "c", cache) is again
    assert open_index(Archive(tmp_path / "arch"), "c", cache) is not again   # another Archive object
    cache.clear()
    assert len(cache) == 0


def test_search_many_equals_one_search_per_query(trained, tmp_path):
    import medhash
    root, arch0 = trained
    shutil.copytree(arch0.path, tmp_path / "arch")
    arch = Archive(tmp_path / "arch")
    build_index(arch, "ct64", "ct", 64, seed=0)
    qs = [f"{s.patient_id}:{s.slice_index}" for s in arch.slices("DEMO002")[::9]]
    many = medhash.search_many(arch, qs, index="ct64", k=5, rerank=20)
    assert len(many) == len(qs)
    for q, m in zip(qs, many):
        one = medhash.search(arch, q, index="ct64", k=5, rerank=20)
        assert m["results"] == one["results"] and m["query"] == one["query"]
        assert all(r["patient_id"] != "DEMO002" for r in m["results"])
    assert medhash.search_many(arch, [], index="ct64") == []


@pytest.mark.parametrize("hasher", ["itq", "pca-sign", "trained"])
def test_index_with_each_hasher(trained, tmp_path, hasher):
    import medhash
    from medhash.hashing import load_hasher
    root, arch0 = trained
    shutil.copytree(arch0.path, tmp_path / "arch")
    arch = Archive(tmp_path / "arch")
    params = {"epochs": 1} if hasher == "trained" else None
    man = build_index(arch, "h", "ct", 16, seed=0, hasher=hasher, hasher_params=params)
    assert man["hasher"]["name"] == hasher and man["code_bytes"] == 2
    idx = Index(arch, "h")
    # the stored codes are the hasher's codes of the features; the query slice is found at distance 0
    assert np.array_equal(np.asarray(idx.codes), load_hasher(idx.path / "hasher.pkl").transform(idx.features()))
    res = medhash.search(arch, "DEMO002:30", index="h", k=3, same_patient=True)
    assert res["results"][0]["hamming"] == 0
    with pytest.raises(ModelMismatchError, match=f"exists with hasher '{hasher}'"):
        build_index(arch, "h", "ct", 16, seed=0)
    if hasher != "trained":
        with pytest.raises(medhash.MedhashError, match="at most 32 bits"):
            build_index(arch, "wide", "ct", 64, seed=0, hasher=hasher)
