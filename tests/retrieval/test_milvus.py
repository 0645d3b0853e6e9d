"""The Milvus backend (Milvus Lite from PyPI): same answers as the local exact index."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

import medhash  # noqa: E402
from medhash import Archive  # noqa: E402
from medhash.ingest import ingest  # noqa: E402
from medhash.cli import main  # noqa: E402
from medhash.demo import write_demo_cohort  # noqa: E402
from medhash.errors import ModelMismatchError  # noqa: E402
from medhash.retrieval import Index, build_index  # noqa: E402


def test_milvus_lite_equals_local_exact_index(trained, tmp_path):
    root, arch0 = trained
    shutil.copytree(arch0.path, tmp_path / "arch")
    arch = Archive(tmp_path / "arch")
    uri = str(tmp_path / "milvus.db")
    assert main(["index", "--archive", str(arch.path), "--name", "local", "--bits", "32", "--no-progress"]) == 0
    assert main(["index", "--archive", str(arch.path), "--name", "mv", "--bits", "32", "--backend", "milvus",
                 "--uri", uri, "--no-progress"]) == 0
    mv, local = Index(arch, "mv"), Index(arch, "local")
    assert mv.manifest["backend"]["collection"] == "medhash_mv" and mv.manifest["backend"]["index"] == "BIN_FLAT"
    assert np.array_equal(np.asarray(mv.codes), np.asarray(local.codes))
    # 32-bit codes: many ties; rows and distances must still agree, same-patient exclusion included
    queries = [f"{s.patient_id}:{s.slice_index}" for s in arch.slices("DEMO001")[::6]]
    for q in queries:
        for same in (True, False):
            a = medhash.search(arch, q, index="mv", k=7, same_patient=same)
            b = medhash.search(arch, q, index="local", k=7, same_patient=same)
            assert a["results"] == b["results"]
    many = medhash.search_many(arch, queries, index="mv", k=5, rerank=20)
    assert [m["results"] for m in many] == [medhash.search(arch, q, index="local", k=5, rerank=20)["results"]
                                            for q in queries]
    # a new patient: only the new codes are pushed, answers still equal
    write_demo_cohort(tmp_path / "more", n_patients=4, rows=96, seed=5)
    shutil.rmtree(tmp_path / "more" / "DEMO001")
    ingest(arch, [tmp_path / "more"])
    man = build_index(arch, "mv", "ct", 32, backend={"type": "milvus", "uri": uri})
    build_index(arch, "local", "ct", 32)
    assert man["added"] > 0
    for q in queries[:3]:
        assert medhash.search(arch, q, index="mv", k=6)["results"] == \
            medhash.search(arch, q, index="local", k=6)["results"]


def test_milvus_mismatches_are_clear(trained, tmp_path):
    root, arch0 = trained
    shutil.copytree(arch0.path, tmp_path / "arch")
    arch = Archive(tmp_path / "arch")
    uri = str(tmp_path / "m.db")
    build_index(arch, "mv", "ct", 32, backend={"type": "milvus", "uri": uri})
    with pytest.raises(ModelMismatchError, match="backend"):
        build_index(arch, "mv", "ct", 32)                         # now asked local
    with pytest.raises(medhash.MedhashError, match="the index type applies to local"):
        build_index(arch, "x", "ct", 32, index_type="ivf", backend={"type": "milvus", "uri": uri})
    from pymilvus import MilvusClient
    c = MilvusClient(uri)
    c.delete("medhash_mv", ids=[0, 1])
    with pytest.raises(ModelMismatchError, match="holds .* codes but the index"):
        Index(arch, "mv")
    c.drop_collection("medhash_mv")
    with pytest.raises(ModelMismatchError, match="no collection"):
        Index(arch, "mv")
