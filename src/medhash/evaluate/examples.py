"""The report's pictures and sizes: reconstructions (section 3), retrieval examples (section 4) and
timings; and :func:`jsonable` for metrics.json."""
from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from .. import features  # torch-free to import: its torch names load on first use
from ..hashing import hamming_distances
from ..render import render_results
from ..retrieval import set_search_threads
from . import figures, relevance
from .data import FeatureSet, optional_feature_set
from .ranking import hamming_lists, method_hasher


def jsonable(obj):
    """Plain Python types for json (numpy scalars and arrays converted; NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def _example_queries(q: np.ndarray, patients: np.ndarray, archive, sets, n: int) -> list[int]:
    """Up to ``n`` query rows of distinct patients, preferring slices with dose and structures."""
    has = archive.table()["has_dose"]
    order = sorted(range(len(q)), key=lambda j: (not has[q[j]], not sets[q[j]], j))
    chosen, seen = [], set()
    for j in order:
        if patients[q[j]] not in seen:
            chosen.append(int(q[j]))
            seen.add(patients[q[j]])
        if len(chosen) == n:
            break
    return chosen


def reconstructions(archive, fs: FeatureSet, q, patients, out: Path, n_examples: int) -> tuple[dict, dict]:
    """Per model channel: reconstructions of a few query slices and of one patient's volume (figures and
    errors), beside the model's held-out figures."""
    # start-up: torch only when a model runs

    res, figs = {}, {}
    for ch, cfg in fs.models.items():
        model, config = features.load_model(archive, cfg["name"])
        src = archive.ct if ch == "ct" else archive.dose
        rows = q[np.argsort(-np.asarray(archive.dose[q]).reshape(len(q), -1).max(axis=1), kind="stable")] \
            if ch == "dose" else q
        picked, seen = [], set()
        for r in rows:
            if patients[r] not in seen:
                picked.append(int(r))
                seen.add(patients[r])
            if len(picked) == max(2, n_examples + 1):
                break
        picked = sorted(picked)
        inputs = np.asarray(src[picked], dtype=np.float32)
        if ch == "ct":
            inputs = np.clip(inputs, -1000, 1000)
        outputs = features.reconstruct_arrays(model, config, inputs)
        try:
            final = features.read_metrics(archive, cfg["name"])["final"]
            psnr_db, mse = final.get("held_out_psnr"), final.get("held_out_mse")
        except Exception:  # older models without metrics.json: leave the held-out figure out
            psnr_db = mse = None
        table = archive.table()
        caps = [f"{patients[r]}:{table['slice_index'][r]}" for r in picked]
        name = f"reconstruction-{ch}.png"
        figures.reconstructions(ch, inputs, outputs, caps, out / name, psnr_db=psnr_db,
                                ct=np.asarray(archive.ct[picked], dtype=np.float32))
        figs[f"reconstruction_{ch}"] = name
        res[ch] = {"model": cfg["name"], "held_out_psnr_db": psnr_db, "held_out_mse": mse,
                   "examples_mae": float(np.mean(np.abs(outputs - inputs))),
                   "unit": "HU" if ch == "ct" else "Gy"}
        if ch == "ct" or "ct" not in fs.models:
            pid = patients[q[0]]
            prow = np.flatnonzero(patients == pid)
            prow = prow[np.argsort(table["z_mm"][prow], kind="stable")]
            vol = np.asarray(src[prow], dtype=np.float32)
            if ch == "ct":
                vol = np.clip(vol, -1000, 1000)
            rec = features.reconstruct_arrays(model, config, vol)
            if ch == "ct":
                figures.volume_planes(vol, rec, table["z_mm"][prow],
                                      f"Patient {pid}: {len(prow)} slices, orthogonal planes, input vs "
                                      f"reconstruction ({cfg['name']})", out / "reconstruction-3d.png")
                figs["reconstruction_3d"] = "reconstruction-3d.png"
            res[ch]["volume"] = {"patient_id": pid, "slices": int(len(prow)),
                                 "mae": float(np.mean(np.abs(rec - vol)))}
    return res, figs


def examples(archive, fs: FeatureSet, q, patients, sets, out: Path, n: int, n_bits: int, gamma, seed: int,
             progress: bool) -> list[dict]:
    """Retrieval grids (top 5 of other patients, Hamming) for CT-only and joint features: with the
    index's own hasher for the index's features, else kernel LSH of ``n_bits`` bits."""
    sets_avail = {}
    for ch in ("ct", "ct+dose"):
        sets_avail[ch] = fs if fs.channel == ch else optional_feature_set(archive, ch, progress=progress)
    rows = _example_queries(q, patients, archive, sets, n)
    table = archive.table()
    out_list = []
    for ch, f in sets_avail.items():
        if f is None:
            continue
        cand = np.flatnonzero(f.valid)
        Xc = np.nan_to_num(f.X)
        hasher = method_hasher(f, Xc, cand, n_bits, gamma, seed)
        codes = hasher.transform(Xc)
        for j, r in enumerate(rows):
            if not f.valid[r]:
                continue
            excluded = np.ones(len(archive), dtype=bool)
            excluded[cand] = False
            excluded |= patients == patients[r]
            top = hamming_lists(codes, np.array([r]), excluded[None, :], 5)[0]
            d = hamming_distances(codes[[r]], codes[top])[0]
            name = f"retrieval-{'ct' if ch == 'ct' else 'joint'}-{j + 1}.png"
            _example_figure(archive, r, top, d, ch, hasher.get_params()["n_bits"], out / name)
            s = archive[r]
            out_list.append({"file": name, "channel": ch, "query": f"{s.patient_id}:{s.slice_index}",
                             "results": [f"{patients[t]}:{table['slice_index'][t]}" for t in top]})
    return out_list


def _example_figure(archive, r: int, top: np.ndarray, d: np.ndarray, ch: str, n_bits: int, path: Path) -> None:
    """One retrieval grid: query slice ``r`` and its results ``top`` with their Hamming distances ``d``."""
    s = archive[r]
    panels = []
    for rank, (t, dist) in enumerate(zip(top, d), start=1):
        res = archive[int(t)]
        panels.append((res.ct, res.dose if res.has_dose else None,
                       f"#{rank} {res.patient_id}:{res.slice_index}\nHamming {int(dist)}"))
    what = "CT features only" if ch == "ct" else "joint CT + dose features"
    render_results(s.ct, s.dose if s.has_dose else None, f"query {s.patient_id}:{s.slice_index}\nz {s.z_mm:.1f} mm",
                   panels, path, suptitle=f"{what}, {n_bits} bits, top 5 of other patients", ncols=6)


def timings(archive, fs: FeatureSet, X, candidates, codes, q, rerank: int, repeats: int) -> dict:
    """Per-query encode and search times (ms, medians) and bytes per slice."""
    # start-up: torch only when a model runs

    enc = {}
    for ch, cfg in fs.models.items():
        model, config = features.load_model(archive, cfg["name"])
        one = np.asarray((archive.ct if ch == "ct" else archive.dose)[q[:1]], dtype=np.float32)
        enc[ch] = relevance.median_ms(lambda: features.encode_arrays(model, config, one), repeats)
    set_search_threads(1)
    idx = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    idx.add(np.ascontiguousarray(codes[candidates]))
    Xc = np.ascontiguousarray(X[candidates], dtype=np.float32)
    sample = q[: min(len(q), 50)]
    it = iter(np.tile(sample, repeats * 4 + 8))

    def ham_search():
        idx.search(codes[[next(it)]], 10)

    def eu_search():
        v = X[next(it)]
        d = np.einsum("ij,ij->i", Xc - v, Xc - v)
        np.argpartition(d, 10)[:10]

    def rr_search():
        r = next(it)
        _, ids = idx.search(codes[[r]], rerank)
        sub = Xc[ids[0]] - X[r]
        np.argsort(np.einsum("ij,ij->i", sub, sub))[:10]

    n_bits = int(codes.shape[1] * 8)
    return {"encode_ms": enc,
            "search_ms": {"hamming_top10": relevance.median_ms(ham_search, repeats),
                          "euclidean_top10_numpy": relevance.median_ms(eu_search, repeats),
                          f"hamming_top{rerank}_rerank_top10": relevance.median_ms(rr_search, repeats)},
            "items": int(len(candidates)), "code_bits": n_bits,
            "bytes_per_slice": {"codes": n_bits // 8, "features": int(X.shape[1] * 4)},
            "note": "medians over single queries, 1 faiss thread, this machine"}
