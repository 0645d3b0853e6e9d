"""Ingest that survives any damaged file (issue 17 points 1-3, issue 16 point 7).

Each test writes the demo cohort (two patients, small slices), damages one file of DEMO002 the way a
fuzzer or a broken export does, ingests the folder in this process (two forked workers: one per
series) and checks that
- the damage is reported as a Problem naming the file (and the DICOM element, where there is one),
- DEMO001, the intact patient next to it, is ingested exactly as when it is ingested alone,
- the archive holds no NaN, no inf and nothing outside the documented ranges.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement

from medhash import Archive
from medhash.core.grid import DOSE_MAX_GY, HU_MAX, HU_MIN
from medhash.core.records import Volume
from medhash.demo import write_demo_cohort
from medhash.errors import InputError
from medhash.ingest import ingest


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """``demo/`` (DEMO001, DEMO002: 64 x 64 slices) and ``ref/``: DEMO001 and DEMO002 each ingested alone."""
    root = tmp_path_factory.mktemp("damaged")
    write_demo_cohort(root / "demo", n_patients=2, rows=64)
    refs = {}
    for pid in ("DEMO001", "DEMO002"):
        with Archive(root / f"ref-{pid}", create=True) as arch:
            assert ingest(arch, [root / "demo" / pid]).exit_code == 0
        refs[pid] = root / f"ref-{pid}"
    return root, refs


@pytest.fixture
def src(cohort, tmp_path):
    """A fresh copy of the demo cohort to damage."""
    shutil.copytree(cohort[0] / "demo", tmp_path / "src")
    return tmp_path / "src"


def ct_file(src: Path, k: int = 5) -> Path:
    return sorted((src / "DEMO002").glob("CT_*.dcm"))[k]


def edit(path: Path, change) -> Path:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)
    return path


def set_raw(path: Path, keyword: str, vr: str, value) -> Path:
    """Store ``value`` in ``keyword`` under another VR (a wrong VR, as some exports write)."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    return edit(path, lambda ds: ds.__setitem__(tag, DataElement(tag, vr, value)))


def poke(path: Path, needle: bytes, offset: int, new: bytes) -> Path:
    """Overwrite bytes of the file at ``offset`` after the first ``needle`` (same length: no fix-ups)."""
    raw = bytearray(path.read_bytes())
    i = raw.find(needle)
    assert i >= 0
    raw[i + offset:i + offset + len(new)] = new
    path.write_bytes(bytes(raw))
    return path


def run(src: Path, tmp_path: Path):
    with Archive(tmp_path / "arch", create=True) as arch:
        report = ingest(arch, [src])
    return report, tmp_path / "arch"


def assert_values_in_range(archive: Path) -> None:
    """The archive holds no NaN, no inf, HU within [HU_MIN, HU_MAX] and Gy within [0, DOSE_MAX_GY]."""
    with Archive(archive) as arch:
        ct, dose = np.asarray(arch.ct), np.asarray(arch.dose)
        assert ct.min() >= HU_MIN and ct.max() <= HU_MAX
        assert np.isfinite(dose).all() and dose.min() >= 0 and dose.max() <= DOSE_MAX_GY
        table = arch.table()
        for name in ("z_mm",):
            if name in table:
                assert np.isfinite(table[name]).all()


def assert_intact(archive: Path, cohort, pid: str = "DEMO001") -> None:
    """``pid`` is in the archive exactly as when it was ingested alone (positions, CT, dose, structures)."""
    with Archive(cohort[1][pid]) as ref, Archive(archive) as got:
        a, b = ref.slices(pid), got.slices(pid)
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            assert (x.slice_index, x.z_mm) == (y.slice_index, y.z_mm)
            assert x.ct.tobytes() == y.ct.tobytes()
            assert x.dose.tobytes() == y.dose.tobytes()
            assert x.structures == y.structures


def problems_of(report, path: Path, level: str | None = None) -> list[str]:
    return [p.message for p in report.problems if p.path == str(path) and (level is None or p.level == level)]


def damaged_slices(archive: Path, cohort) -> tuple[int, int]:
    """(slices of DEMO002 stored, slices of DEMO002 ingested alone)."""
    with Archive(cohort[1]["DEMO002"]) as ref, Archive(archive) as got:
        return len(got.slices("DEMO002")), len(ref.slices("DEMO002"))


# -- 1 and 2: one damaged file costs that file only; values validated at the boundary ------------------

CT_DAMAGE = {
    # name: (change to CT_0005 of DEMO002, the element named in the message)
    "position NaN": (lambda p: edit(p, lambda ds: setattr(ds, "ImagePositionPatient", ["nan", "0", "0"])), "(0020,0032)"),
    "position inf": (lambda p: edit(p, lambda ds: setattr(ds, "ImagePositionPatient", ["0", "inf", "0"])), "(0020,0032)"),
    "position 1e30": (lambda p: edit(p, lambda ds: setattr(ds, "ImagePositionPatient", ["0", "0", "1e30"])), "(0020,0032)"),
    "orientation NaN": (lambda p: edit(p, lambda ds: setattr(ds, "ImageOrientationPatient", ["nan"] * 6)), "(0020,0037)"),
    "pixel spacing as UL": (lambda p: set_raw(p, "PixelSpacing", "UL", 7), "(0028,0030)"),
    "pixel spacing negative": (lambda p: edit(p, lambda ds: setattr(ds, "PixelSpacing", ["-1", "1"])), "(0028,0030)"),
    "pixel spacing VR XX": (lambda p: poke(p, b"\x28\x00\x30\x00DS", 4, b"XX"), "(0028,0030)"),
    "slope 1e30": (lambda p: edit(p, lambda ds: setattr(ds, "RescaleSlope", "1e30")), "(0028,1053)"),
    "slope as AT": (lambda p: set_raw(p, "RescaleSlope", "AT", 0x00100020), "(0028,1053)"),
    "intercept inf": (lambda p: edit(p, lambda ds: setattr(ds, "RescaleIntercept", "inf")), "(0028,1052)"),
    "intercept missing": (lambda p: edit(p, lambda ds: delattr(ds, "RescaleIntercept")), "(0028,1052)"),
    "bits stored 1": (lambda p: edit(p, lambda ds: setattr(ds, "BitsStored", 1)), "(0028,0101)"),
}


@pytest.mark.parametrize("kind", sorted(CT_DAMAGE))
def test_damaged_ct_slice_is_skipped_and_named(kind, src, tmp_path, cohort):
    damage, tag = CT_DAMAGE[kind]
    path = damage(ct_file(src))
    report, archive = run(src, tmp_path)
    msgs = problems_of(report, path, "error")
    assert len(msgs) == 1 and tag in msgs[0] and msgs[0].endswith("slice skipped"), report.problems
    assert report.exit_code == 1 and sorted(report.patients) == ["DEMO001", "DEMO002"]
    assert_intact(archive, cohort)
    stored, alone = damaged_slices(archive, cohort)
    assert stored == alone - 1
    assert any("1 slice(s) missing" in p.message for p in report.problems if p.level == "warning")
    assert_values_in_range(archive)


def damage_contour(src: Path) -> Path:
    """The first contour point of the first ROI written as '2£.81' (a byte pydicom cannot decode as a number)."""
    path = src / "DEMO002" / "RS_DEMO002.dcm"
    return poke(path, b"\x06\x30\x50\x00DS", 9, b"\xa3")


def test_damaged_contour_costs_its_roi_only(src, tmp_path, cohort):
    path = damage_contour(src)
    report, archive = run(src, tmp_path)
    msgs = problems_of(report, path, "error")
    assert len(msgs) == 1 and "(3006,0050) 'Contour Data' cannot be read" in msgs[0], report.problems
    roi = msgs[0].split("'")[1]
    assert msgs[0].startswith(f"ROI {roi!r}") and msgs[0].endswith("this ROI is not ingested")
    assert_intact(archive, cohort)
    with Archive(cohort[1]["DEMO002"]) as ref, Archive(archive) as got:
        want = {s for sl in ref.slices("DEMO002") for s in sl.structures} - {roi}
        assert {s for sl in got.slices("DEMO002") for s in sl.structures} == want and want
        assert [s.ct.tobytes() for s in got.slices("DEMO002")] == [s.ct.tobytes() for s in ref.slices("DEMO002")]
    assert_values_in_range(archive)


def test_missing_roi_number_is_named(src, tmp_path, cohort):
    path = edit(src / "DEMO002" / "RS_DEMO002.dcm", lambda ds: delattr(ds.StructureSetROISequence[0], "ROINumber"))
    report, archive = run(src, tmp_path)
    msgs = problems_of(report, path, "error")
    assert any("(3006,0022) 'ROI Number'" in m for m in msgs), report.problems
    assert_intact(archive, cohort)
    assert damaged_slices(archive, cohort)[0] == damaged_slices(archive, cohort)[1]



def test_roi_without_contour_sequence_is_named(src, tmp_path, cohort):
    """An ROI whose (3006,0040) Contour Sequence was deleted: a warning naming the file and the ROI;
    the other ROIs are ingested as when the patient is ingested alone."""
    path = src / "DEMO002" / "RS_DEMO002.dcm"
    ds = pydicom.dcmread(path)
    number = int(ds.ROIContourSequence[0].ReferencedROINumber)
    roi = next(str(it.ROIName) for it in ds.StructureSetROISequence if int(it.ROINumber) == number)
    del ds.ROIContourSequence[0].ContourSequence
    ds.save_as(path)
    report, archive = run(src, tmp_path)
    msgs = problems_of(report, path, "warning")
    assert any("have no (3006,0040) 'Contour Sequence'" in m and repr(roi) in m for m in msgs), report.problems
    assert_intact(archive, cohort)
    with Archive(cohort[1]["DEMO002"]) as ref, Archive(archive) as got:
        want = {s for sl in ref.slices("DEMO002") for s in sl.structures} - {roi}
        assert {s for sl in got.slices("DEMO002") for s in sl.structures} == want and want


def test_an_empty_frame_of_reference_matches_nothing(src, tmp_path, cohort):
    """A stray CT slice without FrameOfReferenceUID (its own series) and an RTSTRUCT whose first ROI lost
    its Referenced Frame of Reference UID: the structure set still goes with the series its referenced
    frame names, never with the stray slice by an empty UID."""
    rs = src / "DEMO002" / "RS_DEMO002.dcm"
    edit(rs, lambda ds: delattr(ds.StructureSetROISequence[0], "ReferencedFrameOfReferenceUID"))
    edit(ct_file(src, 0), lambda ds: (delattr(ds, "FrameOfReferenceUID"),
                                      setattr(ds, "SeriesInstanceUID", "1.2.826.0.1.3680043.8.498.77")))
    report, archive = run(src, tmp_path)
    assert_intact(archive, cohort)
    with Archive(cohort[1]["DEMO002"]) as ref, Archive(archive) as got:
        want = {s for sl in ref.slices("DEMO002") for s in sl.structures}
        got_names = {s for sl in got.slices("DEMO002") for s in sl.structures}
        assert want and got_names == want, report.problems
    assert_values_in_range(archive)

STRUCT_DAMAGE = {
    "no ROI contour sequence": (lambda ds: delattr(ds, "ROIContourSequence"),
                                "(3006,0039) 'ROI Contour Sequence' is missing or empty"),
    "no structure set ROI sequence": (lambda ds: delattr(ds, "StructureSetROISequence"),
                                      "(3006,0084) 'Referenced ROI Number' (1) names no usable ROI"),
    "no referenced ROI number": (lambda ds: delattr(ds.ROIContourSequence[0], "ReferencedROINumber"),
                                 "(3006,0084) 'Referenced ROI Number' (missing) names no usable ROI"),
}


@pytest.mark.parametrize("kind", sorted(STRUCT_DAMAGE))
def test_structure_set_without_names_or_contours_is_never_guessed(kind, src, tmp_path, cohort):
    change, text = STRUCT_DAMAGE[kind]
    path = edit(src / "DEMO002" / "RS_DEMO002.dcm", change)
    report, archive = run(src, tmp_path)
    msgs = problems_of(report, path, "error")
    assert msgs and text in msgs[0], report.problems
    assert_intact(archive, cohort)
    with Archive(archive) as got:
        names = {s for sl in got.slices("DEMO002") for s in sl.structures}
        assert not any(n.startswith("ROI") for n in names)


def test_truncated_structure_set_is_named_not_read_silently(src, tmp_path, cohort):
    path = src / "DEMO002" / "RS_DEMO002.dcm"
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    report, archive = run(src, tmp_path)
    msgs = problems_of(report, path, "error")
    assert len(msgs) == 1 and "truncated" in msgs[0] and msgs[0].endswith("structures not ingested")
    assert_intact(archive, cohort)
    with Archive(archive) as got:
        assert all(not s.structures for s in got.slices("DEMO002"))


DOSE_DAMAGE = {
    "scaling as US": (lambda p: set_raw(p, "DoseGridScaling", "US", [1, 2]), "(3004,000E)"),
    "scaling 1e30": (lambda p: edit(p, lambda ds: setattr(ds, "DoseGridScaling", "1e30")), "(3004,000E)"),
    "scaling missing": (lambda p: edit(p, lambda ds: delattr(ds, "DoseGridScaling")), "(3004,000E)"),
    "frame offsets NaN": (lambda p: edit(p, lambda ds: setattr(ds, "GridFrameOffsetVector",
                                                               ["nan"] * len(ds.GridFrameOffsetVector))), "(3004,000C)"),
    "frame offsets repeated": (lambda p: edit(p, lambda ds: setattr(ds, "GridFrameOffsetVector",
                                                                    ["0"] * len(ds.GridFrameOffsetVector))), "(3004,000C)"),
    "dose above 200 Gy": (lambda p: edit(p, lambda ds: setattr(ds, "DoseGridScaling", "150")), "(3004,000E)"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:3000]), "truncated"),
}


@pytest.mark.parametrize("kind", sorted(DOSE_DAMAGE))
def test_damaged_dose_costs_the_dose_only(kind, src, tmp_path, cohort):
    damage, tag = DOSE_DAMAGE[kind]
    path = src / "DEMO002" / "RD_DEMO002.dcm"
    damage(path)
    report, archive = run(src, tmp_path)
    msgs = problems_of(report, path, "error")
    assert len(msgs) == 1 and tag in msgs[0], report.problems
    assert_intact(archive, cohort)
    with Archive(archive) as got:
        assert all(s.dose is None for s in got.slices("DEMO002"))
    stored, alone = damaged_slices(archive, cohort)
    assert stored == alone
    assert_values_in_range(archive)


def test_hu_outside_the_range_are_clipped_and_counted(src, tmp_path, cohort):
    path = ct_file(src)
    ds = pydicom.dcmread(path)
    assert (ds.PixelRepresentation, float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (0, 1.0, -1024.0)
    arr = ds.pixel_array.astype(np.int64) + 3072        # the same HU with an intercept of -4096
    ds.RescaleIntercept = "-4096"
    arr.flat[:7] = 5000 + 4096                          # 7 pixels of 5000 HU (metal)
    arr.flat[7:10] = 0                                  # 3 pixels of -4096 HU (padding)
    ds.PixelData = arr.astype(np.uint16).tobytes()
    ds.save_as(path)
    report, archive = run(src, tmp_path)
    clipped = [p for p in report.warnings if "clipped" in p.message]
    assert len(clipped) == 1 and clipped[0].path == str(path)
    assert clipped[0].message.endswith("10 pixel(s) outside [-1024, 3071] HU clipped to that range (3 below, "
                                       "7 above) in 1 slice(s), 10 in this one")
    assert report.exit_code == 0
    assert_intact(archive, cohort)
    assert_values_in_range(archive)


# -- 3: duplicates decided, not guessed ---------------------------------------------------------------

def test_identical_duplicate_is_kept_once_silently(src, tmp_path, cohort):
    (src / "DEMO002" / "CT_copy.dcm").write_bytes(ct_file(src).read_bytes())
    report, archive = run(src, tmp_path)
    assert report.exit_code == 0 and not [p for p in report.problems if "CT_copy" in p.path + p.message]
    stored, alone = damaged_slices(archive, cohort)
    assert stored == alone
    assert_intact(archive, cohort, "DEMO002")


def test_truncated_duplicate_is_named_with_the_copy_used(src, tmp_path, cohort):
    intact = ct_file(src)
    dup = src / "DEMO002" / "CT_copy.dcm"   # sorts after CT_0005: the damaged one is not simply the second read
    dup.write_bytes(intact.read_bytes()[:-500])
    report, archive = run(src, tmp_path)
    msgs = problems_of(report, dup)
    assert len(msgs) == 1 and msgs[0].endswith(f"the other copy of SOP instance "
                                                f"{pydicom.dcmread(intact).SOPInstanceUID}, {intact}, was used"), msgs
    assert report.exit_code == 0
    assert_intact(archive, cohort, "DEMO002")
    assert_intact(archive, cohort)


def test_duplicate_with_other_content_at_the_same_position_is_reported_and_skipped(src, tmp_path, cohort):
    intact = ct_file(src)
    dup = src / "DEMO002" / "CT_0000a.dcm"  # sorts first
    ds = pydicom.dcmread(intact)
    arr = ds.pixel_array.copy()
    arr[10:20, 10:20] = arr.max()
    ds.PixelData = arr.tobytes()
    ds.save_as(dup)
    report, archive = run(src, tmp_path)
    for path, other in ((intact, dup), (dup, intact)):
        msgs = problems_of(report, path, "error")
        assert len(msgs) == 1 and f"also in {other} with other content; cannot tell which is right" in msgs[0]
    stored, alone = damaged_slices(archive, cohort)
    assert stored == alone - 1
    assert_intact(archive, cohort)


def test_duplicate_at_another_slice_position_loses_to_its_consistent_twin(src, tmp_path, cohort):
    intact = ct_file(src, 5)
    dup = src / "DEMO002" / "CT_0000a.dcm"  # the SOP instance of slice 5, with the content of slice 2
    ds = pydicom.dcmread(ct_file(src, 2))
    ds.SOPInstanceUID = pydicom.dcmread(intact).SOPInstanceUID
    ds.save_as(dup)
    report, archive = run(src, tmp_path)
    msgs = problems_of(report, dup)
    assert len(msgs) == 1 and f"its copy {intact} was used" in msgs[0], report.problems
    assert not problems_of(report, intact)
    assert_intact(archive, cohort, "DEMO002")


# -- issue 16 point 7: symbolic links ------------------------------------------------------------------

def test_symbolic_links_to_patient_folders_are_followed_once(cohort, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for pid in ("DEMO001", "DEMO002"):
        os.symlink(cohort[0] / "demo" / pid, src / pid)
    os.symlink(cohort[0] / "demo" / "DEMO002", src / "again")          # the same folder twice
    os.symlink(src, cohort_loop := tmp_path / "src" / "loop")          # a loop
    os.symlink(tmp_path / "nowhere", src / "broken")                   # a broken link
    report, archive = run(src, tmp_path)
    assert sorted(report.patients) == ["DEMO001", "DEMO002"]
    assert problems_of(report, cohort_loop, "warning") == [f"symbolic link loop: it leads back to {src}; not followed"]
    assert problems_of(report, src / "again", "warning") == [
        f"the same folder as {src / 'DEMO002'} (a link); not read twice"]
    assert problems_of(report, src / "broken", "error") == [f"broken symbolic link (to {tmp_path / 'nowhere'}); skipped"]
    assert_intact(archive, cohort)
    assert_intact(archive, cohort, "DEMO002")


# -- the archive's last line of defence ---------------------------------------------------------------

@pytest.mark.parametrize("what", ["ct nan", "ct 32767", "dose inf", "dose negative", "z nan"])
def test_add_volume_refuses_values_out_of_range(what, tmp_path):
    n = 2
    ct = np.full((n, 128, 128), -1000.0, np.float32)
    ct[:, 40:90, 40:90] = 40.0
    dose = np.zeros((n, 128, 128), np.float32)
    z = np.array([0.0, 2.5])
    if what == "ct nan":
        ct[1, 50, 50] = np.nan
    elif what == "ct 32767":
        ct[0, 60, 60] = 32767
    elif what == "dose inf":
        dose[0, 1, 1] = np.inf
    elif what == "dose negative":
        dose[0, 1, 1] = -3
    else:
        z[1] = np.nan
    vol = Volume(patient_id="P1", series_uid="1.2.3.4", source="dicom", slice_index=np.arange(n), z_mm=z,
                 origins_mm=np.zeros((n, 3)), row_dir=np.array([1.0, 0, 0]), col_dir=np.array([0, 1.0, 0]),
                 native_spacing=(1.0, 1.0, 2.5), ct=ct, dose=dose)
    with Archive(tmp_path / "arch", create=True) as arch:
        with pytest.raises(InputError, match=r"^series 1\.2\.3\.4 of patient P1: .*; not stored$"):
            arch.add_volume(vol)
        assert len(arch) == 0 and arch.series_uids() == set()


@pytest.mark.parametrize("name", ["RD_DEMO002.dcm", "RS_DEMO002.dcm"])
def test_truncated_copy_of_dose_or_structure_set_loses_to_its_twin(name, src, tmp_path, cohort):
    intact = src / "DEMO002" / name
    dup = src / "DEMO002" / ("A" + name)   # sorts first
    dup.write_bytes(intact.read_bytes()[:len(intact.read_bytes()) * 2 // 3])
    report, archive = run(src, tmp_path)
    msgs = problems_of(report, dup, "warning")
    kind = "RTDOSE" if name.startswith("RD") else "RTSTRUCT"
    assert len(msgs) == 1 and msgs[0].endswith(f"not used: the other copy of this {kind}, {intact}, was used"), \
        report.problems
    assert report.exit_code == 0
    assert_intact(archive, cohort, "DEMO002")
    assert_intact(archive, cohort)


@pytest.mark.parametrize("damage", ["dose nan", "ct nan"])
def test_damaged_openkbp_patient_costs_itself_only(damage, openkbp_root, tmp_path):
    root, _ = openkbp_root
    folder = root / "pt_12"
    if damage.startswith("dose"):
        target = folder / "dose.csv"
        with open(target, "a") as f:
            f.write("5,nan\n" if damage == "dose nan" else "5,-3\n")
    elif damage == "ct nan":
        target = folder / "ct.csv"
        with open(target, "a") as f:
            f.write("5,nan\n")
    else:
        target = folder / "voxel_dimensions.csv"
        target.write_text("3.906\nnan\n2.5\n")
    with Archive(tmp_path / "arch", create=True) as arch:
        report = ingest(arch, [root])
        assert "pt_7" in report.patients
        assert [s.slice_index for s in arch.slices("pt_7")] == list(range(40, 80))  # its slices with body
    msgs = [p.message for p in report.errors if str(target) in p.path + p.message]
    assert len(msgs) == 1, report.problems
    if damage.startswith("dose"):
        assert msgs[0].endswith("dose not used") and "pt_12" in report.patients
    else:
        assert "pt_12" not in report.patients
    assert_values_in_range(tmp_path / "arch")


def test_damaged_query_file_is_an_input_error_naming_it(src):
    from medhash.io.dicom import read_query
    path = edit(ct_file(src), lambda ds: setattr(ds, "ImagePositionPatient", ["nan", "0", "0"]))
    with pytest.raises(InputError, match=rf"^{path}: \(0020,0032\) 'Image Position \(Patient\)' value .* is out of range"):
        read_query(path)
    path = set_raw(ct_file(src, 6), "RescaleSlope", "AT", 0x00100020)
    with pytest.raises(InputError, match=rf"^{path}: \(0028,1053\) 'Rescale Slope'"):
        read_query(path)
