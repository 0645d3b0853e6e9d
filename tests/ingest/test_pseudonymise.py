"""Keyed pseudonymisation: determinism, valid UIDs, resolvable references, ingest without originals."""
from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.uid import UID

from medhash import Archive
from medhash.ingest import ingest
from medhash.cli import main as cli_main
from medhash.demo import write_demo_cohort
from medhash.errors import InputError
from medhash.ingest.pseudonymise import DUMMY, EMPTY, KEY_MIN_BYTES, REMOVE, Pseudonymiser, load_key, make_key

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    folders = write_demo_cohort(root, n_patients=2, rows=64)
    # identity that the demo does not write: names, free text, a private element, nested and in meta
    for path in sorted(folders[0].glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.OperatorsName = "Doe^Jane"
        ds.InstitutionName = "St Elsewhere"
        ds.PhysiciansOfRecord = "House^Gregory"
        ds.OtherPatientIDs = ["MRN-12345"]
        ds.PatientBirthDate = "19600102"
        ds.AccessionNumber = "ACC-999"
        block = ds.private_block(0x0011, "ACME SECRET", create=True)
        block.add_new(0x01, "LO", "patient is DEMO001")
        if ds.Modality == "RTSTRUCT":
            ds.StructureSetROISequence[0].ROIDescription = "drawn by Dr Doe"
        ds.save_as(path, enforce_file_format=False)
    return root


def load(folder: Path) -> dict[str, list[pydicom.Dataset]]:
    out: dict[str, list[pydicom.Dataset]] = {"CT": [], "RTDOSE": [], "RTSTRUCT": []}
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        out[ds.Modality].append(ds)
    return out


def pseudonymised(cohort: Path, key: bytes = KEY) -> dict[str, dict[str, list[pydicom.Dataset]]]:
    p = Pseudonymiser(key)
    out = {}
    for folder in sorted(d for d in cohort.iterdir() if d.is_dir()):
        files = load(folder)
        out[folder.name] = {k: [p.dataset(ds) for ds in v] for k, v in files.items()}
    return out


def test_pseudonyms_are_deterministic_and_keyed():
    a, b, c = Pseudonymiser(KEY), Pseudonymiser(KEY), Pseudonymiser(OTHER)
    assert a.patient_id("DEMO001") == b.patient_id("DEMO001") != c.patient_id("DEMO001")
    assert a.patient_id("DEMO001") != a.patient_id("DEMO002")
    assert a.patient_id("DEMO001").startswith("P") and len(a.patient_id("DEMO001")) == 17
    uid = "1.2.826.0.1.3680043.8.498.12345"
    assert a.uid(uid) == b.uid(uid) != c.uid(uid)
    assert a.date_offset_days("DEMO001") == b.date_offset_days("DEMO001")
    offsets = {a.date_offset_days(f"PAT{i}") for i in range(200)}
    assert min(offsets) >= -365 and max(offsets) <= -1 and len(offsets) > 100


def test_uids_are_valid():
    p = Pseudonymiser(KEY)
    for i in range(500):
        new = p.uid(f"1.2.3.{i}")
        assert UID(new).is_valid and len(new) <= 64 and new.startswith("2.25.")


def test_key_files(tmp_path):
    key = make_key(tmp_path / "k")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert len(load_key(key)) == KEY_MIN_BYTES
    with pytest.raises(InputError, match="file exists; a key is never overwritten"):
        make_key(key)
    (tmp_path / "short").write_bytes(b"secret")
    with pytest.raises(InputError, match=r"short: the pseudonymisation key has 6 bytes; it must hold at least 32"):
        load_key(tmp_path / "short")
    with pytest.raises(InputError, match="cannot read the pseudonymisation key"):
        load_key(tmp_path / "missing")


def test_listed_keywords_exist():
    unknown = [k for k in [*REMOVE, *EMPTY, *DUMMY] if tag_for_keyword(k) is None]
    assert unknown == []


def test_cross_references_stay_resolvable(cohort):
    before = {name: load(cohort / name) for name in ("DEMO001", "DEMO002")}
    after = pseudonymised(cohort)
    p = Pseudonymiser(KEY)
    for name, files in after.items():
        ct, (dose,), (rs,) = files["CT"], files["RTDOSE"], files["RTSTRUCT"]
        orig_ct = before[name]["CT"]
        assert {str(d.PatientID) for d in ct + [dose, rs]} == {p.patient_id(name)}
        assert str(ct[0].PatientName) == p.patient_id(name)
        # new UIDs, consistent across the files
        series = {str(d.SeriesInstanceUID) for d in ct}
        (series_uid,) = series
        assert series_uid != str(orig_ct[0].SeriesInstanceUID)
        fuid = str(ct[0].FrameOfReferenceUID)
        assert fuid == str(dose.FrameOfReferenceUID) == str(rs.ReferencedFrameOfReferenceSequence[0]
                                                             .FrameOfReferenceUID)
        assert {str(r.ReferencedFrameOfReferenceUID) for r in rs.StructureSetROISequence} == {fuid}
        assert str(dose.StudyInstanceUID) == str(ct[0].StudyInstanceUID) == str(rs.StudyInstanceUID)
        ct_sops = {str(d.SOPInstanceUID) for d in ct}
        assert len(ct_sops) == len(ct) and not ct_sops & {str(d.SOPInstanceUID) for d in orig_ct}
        rfor = rs.ReferencedFrameOfReferenceSequence[0]
        study = rfor.RTReferencedStudySequence[0]
        rseries = study.RTReferencedSeriesSequence[0]
        assert str(rseries.SeriesInstanceUID) == series_uid
        contour_refs = {str(i.ReferencedSOPInstanceUID) for i in rseries.ContourImageSequence}
        for roi in rs.ROIContourSequence:
            for c in roi.ContourSequence:
                contour_refs |= {str(i.ReferencedSOPInstanceUID) for i in c.get("ContourImageSequence", [])}
        assert contour_refs and contour_refs <= ct_sops
        for ds in ct + [dose, rs]:
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID  # class UIDs kept
            assert ds.PatientIdentityRemoved == "YES"
        # geometry and dose kept
        for a, b in zip(ct, orig_ct):
            assert a.ImagePositionPatient == b.ImagePositionPatient and a.PixelSpacing == b.PixelSpacing
            assert a.PixelData == b.PixelData
        orig_dose = before[name]["RTDOSE"][0]
        assert dose.DoseGridScaling == orig_dose.DoseGridScaling
        assert dose.GridFrameOffsetVector == orig_dose.GridFrameOffsetVector
        assert [r.ROIName for r in rs.StructureSetROISequence] == \
            [r.ROIName for r in before[name]["RTSTRUCT"][0].StructureSetROISequence]


def test_dates_shifted_by_one_offset_per_patient(cohort):
    before = {name: load(cohort / name) for name in ("DEMO001", "DEMO002")}
    after = pseudonymised(cohort)
    p = Pseudonymiser(KEY)
    for name in before:
        expected = p.date_offset_days(name)
        for kind in ("CT", "RTDOSE", "RTSTRUCT"):
            for old, new in zip(before[name][kind], after[name][kind]):
                for kw in ("StudyDate", "SeriesDate", "ContentDate", "StructureSetDate"):
                    if kw in old:
                        d0 = dt.datetime.strptime(str(old[kw].value), "%Y%m%d")
                        d1 = dt.datetime.strptime(str(new[kw].value), "%Y%m%d")
                        assert (d1 - d0).days == expected, (name, kind, kw)
                assert new.StudyTime == old.StudyTime  # TM kept


def test_identifying_text_and_private_elements_gone(cohort):
    after = pseudonymised(cohort)["DEMO001"]
    for ds in after["CT"] + after["RTDOSE"] + after["RTSTRUCT"]:
        for elem in ds.iterall():
            assert not elem.tag.is_private
            assert elem.keyword not in REMOVE
            if elem.keyword in EMPTY:
                assert not elem.value
        assert ds.OtherPatientIDs == Pseudonymiser(KEY).patient_id("MRN-12345")
        assert "OperatorsName" not in ds and "InstitutionName" not in ds
        assert ds.PatientBirthDate == "" and ds.AccessionNumber == ""
        text = repr(ds)
        for secret in ("Doe", "Elsewhere", "House", "MRN-12345", "ACC-999", "DEMO001", "1960"):
            assert secret not in text
    assert after["RTSTRUCT"][0].StructureSetLabel == "PSEUDONYMISED"


def test_ingest_pseudonymised_matches_plain_ingest(cohort, tmp_path):
    keyfile = tmp_path / "key"
    assert cli_main(["keygen", str(keyfile)]) == 0
    plain, pseudo = Archive(tmp_path / "plain", create=True), Archive(tmp_path / "pseudo", create=True)
    r0 = ingest(plain, [cohort])
    r1 = ingest(pseudo, [cohort], pseudonymise=keyfile)
    assert r0.errors == [] and r1.errors == [], r1.errors
    assert (r1.series_added, r1.slices_added) == (r0.series_added, r0.slices_added) == (2, r0.slices_added)
    p = Pseudonymiser(load_key(keyfile))
    assert pseudo.patients() == sorted(p.patient_id(n) for n in plain.patients())
    for name in plain.patients():
        a, b = plain.slices(name), pseudo.slices(p.patient_id(name))
        assert len(a) == len(b)
        for sa, sb in zip(a, b):
            assert np.array_equal(sa.ct, sb.ct) and sa.ct.tobytes() == sb.ct.tobytes()
            assert sa.dose is not None and sa.dose.tobytes() == sb.dose.tobytes()
    originals = [b"DEMO00"]
    for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(cohort.rglob("*.dcm"))):
        originals += [str(ds[k].value).encode() for k in ("StudyInstanceUID", "SeriesInstanceUID",
                                                           "SOPInstanceUID", "FrameOfReferenceUID") if k in ds]
    pseudo.close()
    blob = b"".join(f.read_bytes() for f in (tmp_path / "pseudo").rglob("*") if f.is_file())
    leaked = {o for o in originals if o in blob}
    assert not leaked
    # the same key again: everything already there (idempotent re-ingest)
    again = ingest(Archive(tmp_path / "pseudo"), [cohort], pseudonymise=keyfile)
    assert (again.series_added, again.series_existing) == (0, 2)


def test_cli_ingest_pseudonymise_and_short_key(cohort, tmp_path, capsys):
    short = tmp_path / "short.key"
    short.write_bytes(b"0123456789")
    code = cli_main(["ingest", str(cohort), "--archive", str(tmp_path / "a"), "--no-progress",
                     "--pseudonymise", str(short)])
    err = capsys.readouterr().err
    assert code == 1 and "the pseudonymisation key has 10 bytes; it must hold at least 32" in err
    assert "Traceback" not in err
    key = tmp_path / "good.key"
    assert cli_main(["keygen", str(key)]) == 0
    assert cli_main(["keygen", str(key)]) == 1
    assert "never overwritten" in capsys.readouterr().err
    assert cli_main(["ingest", str(cohort), "--archive", str(tmp_path / "a"), "--no-progress",
                     "--pseudonymise", str(key)]) == 0
    assert "ingested 2 series" in capsys.readouterr().out


def test_problem_paths_name_the_original_files(cohort, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("not dicom")
    report = ingest(Archive(tmp_path / "a", create=True), [src, cohort / "DEMO002"], pseudonymise=KEY)
    assert report.series_added == 1
    paths = [pr.path for pr in report.problems]
    assert str(src / "notes.txt") in paths
    assert not any("medhash-pseudo-" in pr.path + pr.message for pr in report.problems)


def test_method_fits_its_vr():
    from medhash.ingest.pseudonymise import METHOD
    assert len(METHOD) <= 64  # DeidentificationMethod is LO


def test_openkbp_patient_ids_are_pseudonymised(tmp_path):
    from conftest import make_openkbp_patient

    make_openkbp_patient(tmp_path / "pats", "pt_7")
    arch = Archive(tmp_path / "a", create=True)
    report = ingest(arch, [tmp_path / "pats"], pseudonymise=KEY)
    assert report.errors == [] and report.series_added == 1
    assert arch.patients() == [Pseudonymiser(KEY).patient_id("pt_7")]
    arch.close()
    assert b"pt_7" not in (tmp_path / "a" / "catalog.sqlite").read_bytes()


def test_date_edge_cases():
    from medhash.ingest.pseudonymise import _shift
    assert _shift("20240301", -1, "DA") == "20240229"
    assert _shift("2024.03.01", -1, "DA") == "20240229"
    assert _shift("20240301103000.5+0100", -2, "DT") == "20240228103000.5+0100"
    assert _shift("20240101-20240201", -1, "DA") is None  # a range would leak its second date
    assert _shift("2024", -1, "DT") is None and _shift("garbage!", -1, "DA") is None
