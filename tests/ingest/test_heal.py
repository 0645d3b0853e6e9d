"""Series that heal (issue 17, point 4): a series missing instances is recorded as incomplete, listed by
``medhash info`` and ``medhash check``, and completed when an ingest later holds all its instances: its
slices are then recomputed on the grid the whole series gives, byte for byte what an ingest of the whole
series gives, and the superseded slices never come back (table, search, index updates)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medhash import Archive
from medhash.check import check_archive
from medhash.demo import write_demo_cohort
from medhash.ingest import ingest
from medhash.io.dicom.completeness import gap_slices, instance_evidence, instance_number_holes

sys.path.insert(0, str(Path(__file__).parents[1]))
from archives import assert_same_archive  # noqa: E402


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    write_demo_cohort(root, n_patients=2, rows=64)
    return root


@pytest.fixture(scope="module")
def clean(cohort, tmp_path_factory) -> Path:
    """The whole cohort ingested at once: what every completed archive must equal."""
    path = tmp_path_factory.mktemp("clean") / "arch"
    with Archive(path, create=True) as arch:
        ingest(arch, [cohort])
    return path


def cut_copy(cohort: Path, dest: Path, drop_ct=(), keep_rs: bool = True, keep_rd: bool = True) -> Path:
    """A copy of the cohort with DEMO001's CT files at positions ``drop_ct`` (in file order) removed,
    and its RTSTRUCT / RTDOSE kept or not."""
    shutil.copytree(cohort, dest)
    pt = dest / "DEMO001"
    cts = sorted(pt.glob("CT_*.dcm"))
    for k in drop_ct:
        cts[k].unlink()
    if not keep_rs:
        (pt / "RS_DEMO001.dcm").unlink()
    if not keep_rd:
        (pt / "RD_DEMO001.dcm").unlink()
    return dest


def test_evidence_closed_forms():
    z = np.array([0.0, 2.5, 5.0, 12.5, 15.0, 25.0])      # steps 2.5 (median) with gaps of 7.5 and 10
    assert gap_slices(z) == 2 + 3
    assert gap_slices(np.array([0.0, 2.5])) == 0
    assert instance_number_holes([3, 4, 7, 8]) == (2, [5, 6])
    assert instance_number_holes([3, None, 7]) == (0, [])     # no evidence without every number
    assert instance_number_holes([3, 3, 7]) == (0, [])        # nor with repeated numbers
    ev = instance_evidence("S", ["a", "b", "c"], np.array([0.0, 2.5, 7.5]), [1, 2, 4])
    assert (ev["present"], ev["expected"], ev["complete"]) == (3, 4, False)
    assert ev["sop_uids"] == ["a", "b", "c"]
    assert instance_evidence("S", ["a", "b"], np.array([0.0, 2.5]), [1, 2])["complete"]


def test_structure_set_references_are_evidence(cohort):
    rs = pydicom.dcmread(cohort / "DEMO001" / "RS_DEMO001.dcm")
    ct = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted((cohort / "DEMO001").glob("CT_*.dcm"))]
    uid = str(ct[0].SeriesInstanceUID)
    sops = [str(d.SOPInstanceUID) for d in ct]
    z = np.array([float(d.ImagePositionPatient[2]) for d in ct])
    nums = [int(d.InstanceNumber) for d in ct]
    full = instance_evidence(uid, sops, z, nums, rs)
    assert full["complete"] and full["expected"] == len(ct)
    cut = instance_evidence(uid, sops[:-5], z[:-5], nums[:-5], rs)   # the last 5: no gap, no hole
    assert (cut["present"], cut["expected"]) == (len(ct) - 5, len(ct))
    assert cut["missing"] == ["5 CT instance(s) listed by the structure set not received or not readable"]
    assert instance_evidence(uid, sops[:-5], z[:-5], nums[:-5], None)["complete"]   # nothing says otherwise
    # a slice whose SOPInstanceUID was lost (or changed) is there all the same: not a missing instance
    assert instance_evidence(uid, sops[:3] + [""] + sops[4:], z, nums, rs)["complete"]
    assert instance_evidence(uid, sops[:3] + ["1.2.3"] + sops[4:], z, nums, rs)["complete"]


def test_incomplete_series_is_recorded_listed_and_completed(cohort, clean, tmp_path, capsys):
    cut = cut_copy(cohort, tmp_path / "cut", drop_ct=(10,))
    path = tmp_path / "arch"
    with Archive(path, create=True) as arch:
        report = ingest(arch, [cut])
        assert report.series_added == 2 and report.series_completed == 0
        warned = [w.message for w in report.warnings if "is incomplete" in w.message]
        assert len(warned) == 1 and "49 of 50 instances" in warned[0]
        (inc,) = arch.incomplete_series()
        assert (inc["patient_id"], inc["present"], inc["expected"]) == ("DEMO001", 49, 50)
        assert inc["missing"] == ["1 slice position(s) missing in gaps along z", "1 InstanceNumber(s) missing (11)",
                                  "1 CT instance(s) listed by the structure set not received or not readable"]
        assert arch.info()["incomplete_series"] == [inc]
    found = check_archive(path)
    assert found.exit_code == 1 and [f.kind for f in found.remaining] == ["incomplete"]
    assert "49 of 50 instances" in found.remaining[0].what and found.remaining[0].repair is None
    from medhash.cli import main
    assert main(["info", "--archive", str(path)]) == 0
    out = capsys.readouterr().out
    assert "incomplete series  1" in out and "DEMO001  series" in out and "49 of 50 instances" in out
    # the whole cohort again: DEMO001 completed, DEMO002 untouched
    with Archive(path) as arch:
        report = ingest(arch, [cohort])
        assert (report.series_added, report.series_completed, report.series_existing) == (1, 1, 1)
        assert report.slices_added == 50 and not report.errors
        assert arch.incomplete_series() == []
        assert len(arch.superseded_rows()) == 49 and len(arch) == 110 + 49
        table = arch.table()
        assert table["live"].sum() == 110 and set(table["patient_id"][~table["live"]]) == {""}
        assert not table["has_dose"][arch.superseded_rows()].any()
        with pytest.raises(Exception, match="superseded"):
            arch[int(arch.superseded_rows()[0])]
        assert_same_archive(Archive(clean, read_only=True), arch)
        assert arch.info()["superseded_slices"] == 49
        again = ingest(arch, [cohort])   # idempotent: nothing read again, nothing added
        assert (again.series_added, again.series_existing) == (0, 2)
    assert check_archive(path).clean


def test_cut_without_evidence_is_still_completed_by_the_whole_series(cohort, clean, tmp_path):
    """The last 10 slices cut and no structure set: nothing says the series is incomplete, yet an ingest
    that holds all its instances (and its RTSTRUCT and RTDOSE) completes it."""
    cut = cut_copy(cohort, tmp_path / "cut", drop_ct=range(40, 50), keep_rs=False, keep_rd=False)
    path = tmp_path / "arch"
    with Archive(path, create=True) as arch:
        ingest(arch, [cut])
        assert arch.incomplete_series() == [] and len(arch.slices("DEMO001")) == 40
        report = ingest(arch, [cohort])
        assert report.series_completed == 1
        assert_same_archive(Archive(clean, read_only=True), arch)


def test_a_later_rtdose_completes_a_series(cohort, clean, tmp_path):
    cut = cut_copy(cohort, tmp_path / "cut", keep_rd=False)
    path = tmp_path / "arch"
    with Archive(path, create=True) as arch:
        ingest(arch, [cut])
        assert arch.slices("DEMO001")[0].dose is None
        report = ingest(arch, [cohort])
        assert report.series_completed == 1 and report.slices_added == 50
        assert_same_archive(Archive(clean, read_only=True), arch)


def test_only_the_missing_instances_do_not_complete_and_say_why(cohort, tmp_path):
    cut = cut_copy(cohort, tmp_path / "cut", drop_ct=(10, 11))
    path = tmp_path / "arch"
    with Archive(path, create=True) as arch:
        ingest(arch, [cut])
        rest = tmp_path / "rest"
        rest.mkdir()
        for f in sorted((cohort / "DEMO001").glob("CT_*.dcm"))[10:12]:
            shutil.copy(f, rest / f.name)
        report = ingest(arch, [rest])
        assert report.series_added == 0
        (w,) = [w for w in report.warnings if "lack" in w.message]
        assert "add 2 but lack 48 of those stored" in w.message and "whole series again" in w.message
        assert arch.incomplete_series()[0]["present"] == 48


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_indexes_never_return_superseded_slices_and_drop_them_on_update(cohort, clean, tmp_path, index_type):
    from medhash import search
    from medhash.retrieval import build_index
    from medhash.features import train_model
    cut = cut_copy(cohort, tmp_path / "cut", drop_ct=(10,))
    path = tmp_path / "arch"
    with Archive(path, create=True) as arch:
        ingest(arch, [cut])
        train_model(arch, "ct", "shallow", epochs=1, latent_dim=16, seed=0, progress=False)
        build_index(arch, "i", channel="ct", n_bits=32, progress=False, index_type=index_type)
        ingest(arch, [cohort])
        dead = set(arch.superseded_rows().tolist())
        res = search(arch, "DEMO002:20", index="i", k=49, same_patient=True)
        assert len(res["results"]) == 49     # DEMO002's 60 slices and DEMO001's old 49: the old never come back
        assert all(r["patient_id"] == "DEMO002" for r in res["results"])
        note = [f for f in check_archive(path).remaining if "superseded" in f.what]
        assert len(note) == 1 and note[0].kind == "note" and "holds 49 slice(s)" in note[0].what
        man = build_index(arch, "i", channel="ct", n_bits=32, progress=False, index_type=index_type)
        assert (man["items"], man["added"]) == (110, 50)
        rows = np.fromfile(path / "indexes" / "i" / "rows.i64", dtype=np.int64)
        assert len(rows) == 110 and not (set(rows.tolist()) & dead)
        assert json.loads((path / "indexes" / "i" / "manifest.json").read_text())["items"] == 110
        res = search(arch, "DEMO002:20", index="i", k=5)
        assert {r["patient_id"] for r in res["results"]} == {"DEMO001"}
    assert check_archive(path).clean
