"""`medhash check`: each thing it looks at, damaged in a small archive, is named; --repair mends what it can.

One archive per module (the trained demo archive of conftest, with a flat and an IVF index built here);
each test damages a private copy of it.
"""
from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest

from medhash import Archive
from medhash.check import check_archive
from medhash.cli import main
from medhash.dose.model import ATLAS_FILE, FEATURES, FORMAT, MODEL_FILE
from medhash.net import spool as net_spool
from medhash.retrieval import Index, build_index
from medhash.retrieval.verify import file_record, sha256_prefix
from medhash.store import check as store_check
from medhash.store.durable import file_lock


@pytest.fixture(scope="module")
def indexed(trained):
    """The trained demo archive with index ``ct64`` (flat, 64 bits) and ``ivf16`` (IVF, 2 lists); their
    manifests record no checksums (test_recorded_checksums_... adds them), so that each test sees the check
    it is about."""
    root, arch = trained
    build_index(arch, "ct64", "ct", 64, seed=0)
    build_index(arch, "ivf16", "ct", 16, seed=1, index_type="ivf", index_params={"nlist": 2})
    arch.close()
    for name in ("ct64", "ivf16"):   # manifests without recorded checksums (sizes only), as before they were recorded
        path = root / "arch" / "indexes" / name / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest.pop("files", None)
        path.write_text(json.dumps(manifest))
    return root / "arch"


@pytest.fixture
def arch_dir(indexed, tmp_path):
    """A private copy of the indexed archive (damaged by the test)."""
    dest = tmp_path / "arch"
    shutil.copytree(indexed, dest)
    return dest


def kinds(findings) -> list[tuple[str, str]]:
    return [(f.kind, f.where) for f in findings]


def rows_of(arch_dir) -> int:
    with Archive(arch_dir, read_only=True) as a:
        return len(a)


def test_a_clean_archive_is_clean(arch_dir, capsys):
    report = check_archive(arch_dir)
    assert report.findings == [] and report.clean and report.exit_code == 0
    assert main(["check", "--archive", str(arch_dir)]) == 0
    assert capsys.readouterr().out == f"archive {arch_dir}: clean (0 damage, 0 incomplete, 0 leftover, 0 note)\n"
    assert main(["check", "--archive", str(arch_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["clean"] is True and data["counts"] == {"damage": 0, "incomplete": 0, "leftover": 0, "note": 0}


def test_an_array_tail_past_the_committed_rows_is_cut(arch_dir, capsys):
    ct = arch_dir / "arrays" / "ct.i16"
    size = ct.stat().st_size
    assert size == rows_of(arch_dir) * 128 * 128 * 2
    with open(ct, "ab") as f:            # what an ingest killed between its append and its commit leaves
        f.write(b"\1" * 1000)
    assert main(["check", "--archive", str(arch_dir)]) == 1
    out = capsys.readouterr().out
    assert (f"leftover: arrays/ct.i16: 1000 bytes past the {rows_of(arch_dir)} committed rows ({size} bytes): an "
            f"append interrupted before its commit (--repair: cut the file to {size} bytes)\n") in out
    assert main(["check", "--archive", str(arch_dir), "--repair"]) == 0
    assert ct.stat().st_size == size
    assert check_archive(arch_dir).clean


def test_a_truncated_array_is_damage_that_repair_cannot_mend(arch_dir):
    dose = arch_dir / "arrays" / "dose.f32"
    with open(dose, "r+b") as f:
        f.truncate(dose.stat().st_size - 4096)
    report = check_archive(arch_dir, repair=True)
    assert kinds(report.findings) == [("damage", "arrays/dose.f32")]
    f = report.findings[0]
    assert f.repair is None and not f.repaired and "committed data is missing" in f.what
    assert report.exit_code == 1 and kinds(report.remaining) == [("damage", "arrays/dose.f32")]


def test_a_missing_index_file_is_named_and_the_index_rebuilt_as_it_was(arch_dir):
    codes = arch_dir / "indexes" / "ct64" / "codes.u8"
    before = codes.read_bytes()
    codes.unlink()
    report = check_archive(arch_dir)
    assert kinds(report.findings) == [("damage", "indexes/ct64/codes.u8")]
    assert report.findings[0].what == "is missing"
    assert report.findings[0].repair == "build index ct64 again from scratch (ct, 64 bits, seed 0, flat)"
    report = check_archive(arch_dir, repair=True)
    assert report.findings[0].repaired and report.clean
    assert codes.read_bytes() == before       # the manifest's own parameters: the same codes


def test_a_corrupt_hasher_is_named_and_repair_makes_the_index_usable(arch_dir, capsys):
    (arch_dir / "indexes" / "ct64" / "hasher.pkl").write_bytes(b"not a pickle")
    assert main(["check", "--archive", str(arch_dir)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("damage: indexes/ct64/hasher.pkl: cannot be loaded (not a saved hasher (cannot unpickle")
    assert main(["check", "--archive", str(arch_dir), "--repair"]) == 0
    assert "(repaired: build index ct64 again from scratch (ct, 64 bits, seed 0, flat))" in capsys.readouterr().out
    with Archive(arch_dir) as a:
        assert len(Index(a, "ct64")) == len(a)


def test_an_unreadable_engine_file_is_named_and_rebuilt(arch_dir):
    engine = arch_dir / "indexes" / "ivf16" / "engine.faissbin"
    before = engine.read_bytes()
    engine.write_bytes(before[:200])
    report = check_archive(arch_dir)
    assert kinds(report.findings) == [("damage", "indexes/ivf16/engine.faissbin")]
    assert report.findings[0].what.startswith("cannot be read by faiss")
    assert check_archive(arch_dir, repair=True).clean
    assert engine.read_bytes() == before


def test_recorded_checksums_find_a_changed_byte_that_sizes_cannot(arch_dir):
    folder = arch_dir / "indexes" / "ct64"
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = {f: file_record(folder / f) for f in ("codes.u8", "rows.i64", "hasher.pkl")}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert check_archive(arch_dir).clean
    codes = bytearray((folder / "codes.u8").read_bytes())
    codes[5] ^= 0xFF
    (folder / "codes.u8").write_bytes(bytes(codes))
    report = check_archive(arch_dir)
    assert [(f.kind, f.where, f.what) for f in report.findings] == [
        ("damage", "indexes/ct64/codes.u8", "does not match the sha256 its manifest records")]
    # a tail past the recorded bytes is a leftover, not a checksum failure
    codes[5] ^= 0xFF
    (folder / "codes.u8").write_bytes(bytes(codes) + b"\0" * 8)
    assert kinds(check_archive(arch_dir).findings) == [("leftover", "indexes/ct64/codes.u8")]
    assert sha256_prefix(folder / "codes.u8", len(codes)) == manifest["files"]["codes.u8"]["sha256"]
    assert check_archive(arch_dir, repair=True).clean


def test_rows_out_of_order_are_damage(arch_dir):
    rows_path = arch_dir / "indexes" / "ct64" / "rows.i64"
    rows = np.fromfile(rows_path, dtype=np.int64)
    rows[[3, 4]] = rows[[4, 3]]
    rows.tofile(rows_path)
    report = check_archive(arch_dir)
    assert [(f.where, f.what) for f in report.findings] == [
        ("indexes/ct64/rows.i64", "rows are not strictly increasing (1 steps down or repeated)")]
    assert check_archive(arch_dir, repair=True).clean


def test_leftover_temporaries_are_named_and_removed(arch_dir):
    tmp_file = arch_dir / "indexes" / "ct64" / ".hasher.pkl.k2x9.tmp"
    tmp_file.write_bytes(b"half")
    tmp_dir = arch_dir / "models" / ".ct-shallow.tmp-123-456"
    tmp_dir.mkdir()
    (tmp_dir / "model.pt").write_bytes(b"half")
    report = check_archive(arch_dir)
    assert kinds(report.findings) == [("leftover", "models/.ct-shallow.tmp-123-456"),
                                      ("leftover", "indexes/ct64/.hasher.pkl.k2x9.tmp")]
    assert all(f.repair == "remove it" for f in report.findings)
    assert check_archive(arch_dir, repair=True).clean
    assert not tmp_file.exists() and not tmp_dir.exists()


def test_orphan_spool_files_are_reported_and_only_unacknowledged_ones_removed(arch_dir, capsys):
    study = arch_dir / "spool" / "assoc1.1"
    study.mkdir(parents=True)
    (study / "1.2.3.dcm").write_bytes(b"received")
    (study / "1.2.4.dcm.part").write_bytes(b"half")
    assert main(["check", "--archive", str(arch_dir), "--repair"]) == 1
    out = capsys.readouterr().out
    assert "leftover: spool/assoc1.1/1.2.4.dcm.part: a file half received" in out
    assert ("after repair, leftover: spool/assoc1.1: 1 received file(s) not yet ingested (acknowledged to the "
            "sender): start medhash listen on this archive, which ingests what is left at start") in out
    assert not (study / "1.2.4.dcm.part").exists() and (study / "1.2.3.dcm").read_bytes() == b"received"
    # a running listener owns its spool: not checked, said so
    with file_lock(arch_dir / "spool" / net_spool.LOCK):
        assert kinds(check_archive(arch_dir).findings) == [("note", "spool")]


def test_spool_names_match_the_listener():
    assert (store_check._SPOOL_LOCK, store_check._SPOOL_FAILED, store_check._SPOOL_PART) == \
        (net_spool.LOCK, net_spool.FAILED, net_spool.PART)


def test_a_feature_cache_of_the_wrong_size_is_dropped(arch_dir):
    data = arch_dir / "features" / "ct-shallow.f32"
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size - 128)
    report = check_archive(arch_dir)
    assert kinds(report.findings) == [("damage", "features/ct-shallow.f32")]
    assert report.findings[0].repair == "remove the cache (encoded again on next use)"
    assert check_archive(arch_dir, repair=True).clean
    assert not data.exists() and not data.with_suffix(".json").exists()


def test_catalog_rows_that_disagree_with_the_arrays_are_damage(arch_dir):
    n = rows_of(arch_dir)
    con = sqlite3.connect(arch_dir / "catalog.sqlite")
    con.execute("DELETE FROM slices WHERE row = ?", (n - 1,))
    con.commit()
    con.close()
    whats = [f.what for f in check_archive(arch_dir).findings if f.where == "catalog.sqlite"]
    assert f"the slices table has {n - 1} rows numbered 0 to {n - 2}, but the arrays commit {n} rows numbered 0 " \
           f"to {n - 1}" in whats
    assert "1 series whose slice count differs from the slices stored for them" in whats


def test_dose_that_is_not_finite_is_named_by_slice(arch_dir):
    with Archive(arch_dir, read_only=True) as a:
        first = a[0]
    dose = np.memmap(arch_dir / "arrays" / "dose.f32", dtype=np.float32, mode="r+", shape=(rows_of(arch_dir), 16384))
    dose[0, 100] = np.nan
    dose.flush()
    del dose
    report = check_archive(arch_dir)
    assert [(f.where, f.what) for f in report.findings] == [
        ("arrays/dose.f32", f"1 slices hold dose that is not finite or negative ({first.patient_id}:"
                            f"{first.slice_index}); ingest those series again into a new archive")]


def test_a_dose_model_whose_file_changed_is_named(arch_dir):
    folder = arch_dir / "dose-models" / "default"
    folder.mkdir(parents=True)
    (folder / MODEL_FILE).write_text("tree\n")
    (folder / ATLAS_FILE).write_bytes(b"atlas")
    manifest = {"format": FORMAT, "features": list(FEATURES), "name": "default",
                "sha256": {f: sha256_prefix(folder / f) for f in (MODEL_FILE, ATLAS_FILE)}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert check_archive(arch_dir).clean
    (folder / ATLAS_FILE).write_bytes(b"atlaS")
    report = check_archive(arch_dir, repair=True)
    assert [(f.where, f.what) for f in report.remaining] == [
        ("dose-models/default/atlas.npz", "does not match the sha256 its manifest records; fit it again "
                                          "(medhash fit-dose-model, name 'default')")]


def test_a_model_changed_after_indexing_is_damage_to_its_indexes(arch_dir):
    weights = arch_dir / "models" / "ct-shallow" / "model.pt"
    weights.write_bytes(weights.read_bytes() + b"\0")
    report = check_archive(arch_dir)
    assert ("damage", "models/ct-shallow/model.pt") in kinds(report.findings)
    assert report.findings[0].repair is None and "train the model again" in report.findings[0].what


def test_exit_codes(arch_dir, tmp_path, capsys):
    assert main(["check", "--archive", str(tmp_path / "nowhere")]) == 3
    assert "no such archive folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["check", "--archive", str(tmp_path / "empty")]) == 3
    assert "not a medhash archive" in capsys.readouterr().err
    (arch_dir / "indexes" / "ct64" / ".codes.u8.x.tmp").write_bytes(b"")
    with file_lock(arch_dir / ".lock"):      # another writer: repair refuses, check still reports
        assert main(["check", "--archive", str(arch_dir), "--repair"]) == 3
        assert "another medhash process is writing" in capsys.readouterr().err
        assert main(["check", "--archive", str(arch_dir), "--json"]) == 1
        data = json.loads(capsys.readouterr().out)
        assert data["clean"] is False and data["counts"]["leftover"] == 1


def test_files_of_unexpected_content_are_findings_not_tracebacks(arch_dir):
    (arch_dir / "indexes" / "ct64" / "manifest.json").write_text(json.dumps({"items": "many"}))
    (arch_dir / "indexes" / "ivf16" / "manifest.json").write_text(json.dumps({**json.loads(
        (arch_dir / "indexes" / "ivf16" / "manifest.json").read_text()), "models": ["ct-shallow"]}))
    (arch_dir / "features" / "ct-shallow.json").write_text(json.dumps({"rows": "x", "dim": 32}))
    report = check_archive(arch_dir)
    assert [(f.kind, f.where) for f in report.findings] == [
        ("leftover", "features/ct-shallow.f32"), ("damage", "indexes/ct64/manifest.json"),
        ("damage", "indexes/ivf16/manifest.json")]
    assert report.findings[1].what == ("lacks items, code_bytes, channel, n_bits or models; rebuild the index "
                                       "(medhash index)")
    (arch_dir / "catalog.sqlite").write_bytes(b"not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (arch_dir / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    report = check_archive(arch_dir)
    assert report.findings[0].where == "catalog.sqlite" and report.findings[0].kind == "damage"
    assert report.findings[0].what.startswith("SQLite cannot check the catalog (file is not a database)")
