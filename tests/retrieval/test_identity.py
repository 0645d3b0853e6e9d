"""Query identity (issue 16 point 1): a DICOM file or folder of an archive patient is recognised, and that
patient is left out of slice search, patient search and dose prediction unless asked for."""
import json
import shutil

import numpy as np
import pydicom
import pytest

from medhash import Archive, search, search_many
from medhash.cli import main
from medhash.demo import DEMO_PROVENANCE, make_phantom
from medhash.dose import predict_dose, predict_dose_planned
from medhash.dose.planning import rank_patients_by_geometry
from medhash.errors import IndexConfigError, InputError
from medhash.ingest import ingest
from medhash.io.writers import write_ct_series
from medhash.retrieval import build_index, patient_search
from medhash.retrieval.query import recognise

ALL = ["series_uid", "study_uid", "frame_of_reference_uid", "patient_id"]


@pytest.fixture(scope="module")
def indexed(trained):
    """(root, archive) of the three demo patients with a 256-bit CT index ``ct256``."""
    root, arch = trained
    build_index(arch, "ct256", "ct", 256, seed=0)
    return root, arch


def _header(folder):
    return pydicom.dcmread(sorted(folder.glob("CT_*.dcm"))[0], stop_before_pixels=True)


def _write_copy(dest, *, patient_id, uid_root, index=0, rows=96):
    """Demo patient ``index``'s CT written again under new study / series / frame UIDs and ``patient_id``."""
    ph = make_phantom(index, 0, rows=rows)
    write_ct_series(dest, ph.hu, pixel_spacing=ph.pixel_spacing, slice_positions_mm=ph.slice_positions_mm,
                    origin_xy_mm=ph.origin_xy_mm, patient_id=patient_id, study_uid=uid_root + ".1",
                    series_uid=uid_root + ".2", frame_of_reference_uid=uid_root + ".3", provenance=DEMO_PROVENANCE)
    return dest


# ---------------------------------------------------------------------- the catalog lookup
def test_archive_identify_says_what_matched(indexed):
    root, arch = indexed
    ds = _header(root / "demo" / "DEMO002")
    full = arch.identify(patient_id=ds.PatientID, study_uid=ds.StudyInstanceUID, frame_uid=ds.FrameOfReferenceUID,
                         series_uid=ds.SeriesInstanceUID)
    assert full == [{"patient_id": "DEMO002", "matched_on": ALL}]
    assert arch.identify(frame_uid=ds.FrameOfReferenceUID) == [{"patient_id": "DEMO002",
                                                                 "matched_on": ["frame_of_reference_uid"]}]
    assert arch.identify(patient_id="DEMO003") == [{"patient_id": "DEMO003", "matched_on": ["patient_id"]}]
    # the strongest identifier first: DEMO001's series beats DEMO003's PatientID
    one = _header(root / "demo" / "DEMO001")
    both = arch.identify(patient_id="DEMO003", series_uid=one.SeriesInstanceUID)
    assert [m["patient_id"] for m in both] == ["DEMO001", "DEMO003"]
    assert arch.identify(patient_id="NOBODY", series_uid="1.2.3") == []
    assert arch.identify(patient_id="", study_uid="", frame_uid=None, series_uid="") == []


# ---------------------------------------------------------------------- slice search
def test_dicom_file_query_leaves_its_archive_patient_out(indexed):
    root, arch = indexed
    ct = root / "demo" / "DEMO002" / "CT_0012.dcm"
    res = search(arch, ct, index="ct256", k=5)
    assert res["recognised"] == {"patient_id": "DEMO002", "matched_on": ALL}
    assert res["excluded_patient"] == "DEMO002" and res["same_patient"] is False
    assert len(res["results"]) == 5 and all(r["patient_id"] != "DEMO002" for r in res["results"])
    # --include-same-patient: the old answer, the slice itself at distance 0
    kept = search(arch, ct, index="ct256", k=5, same_patient=True)
    assert kept["recognised"]["patient_id"] == "DEMO002" and kept["excluded_patient"] is None
    assert kept["same_patient"] is True
    assert ("DEMO002", 12, 0) in [(r["patient_id"], r["slice_index"], r["hamming"]) for r in kept["results"]]
    # a batch: each query recognised (or not) on its own
    many = search_many(arch, [ct, "DEMO001:20"], index="ct256", k=5)
    assert many[0]["results"] == res["results"] and many[0]["recognised"] == res["recognised"]
    assert (many[1]["recognised"], many[1]["excluded_patient"]) == (None, "DEMO001")


def test_series_folder_query_and_archive_query_agree(indexed):
    root, arch = indexed
    by_file = search(arch, root / "demo" / "DEMO001", index="ct256", slice_index=20, k=6)
    by_name = search(arch, "DEMO001:20", index="ct256", k=6)
    assert by_file["recognised"] == {"patient_id": "DEMO001", "matched_on": ALL}
    assert by_file["excluded_patient"] == by_name["excluded_patient"] == "DEMO001"
    assert by_name["recognised"] is None                      # an archive query is its own patient
    assert [(r["patient_id"], r["slice_index"], r["hamming"]) for r in by_file["results"]] == \
        [(r["patient_id"], r["slice_index"], r["hamming"]) for r in by_name["results"]]


def test_unrelated_folder_is_not_recognised_and_a_patient_id_alone_is(indexed, tmp_path):
    root, arch = indexed
    other = _write_copy(tmp_path / "other", patient_id="SOMEONE", uid_root="1.2.826.0.1.3680043.8.498.71")
    res = search(arch, other, index="ct256", slice_index=20, k=3)
    assert res["recognised"] is None and res["excluded_patient"] is None and res["same_patient"] is True
    # DEMO001's anatomy under new ids: nothing to leave out, so DEMO001 is found
    assert res["results"][0]["patient_id"] == "DEMO001"
    pid_only = _write_copy(tmp_path / "rescan", patient_id="DEMO001", uid_root="1.2.826.0.1.3680043.8.498.72")
    res = search(arch, pid_only, index="ct256", slice_index=20, k=3)
    assert res["recognised"] == {"patient_id": "DEMO001", "matched_on": ["patient_id"]}
    assert all(r["patient_id"] != "DEMO001" for r in res["results"])
    # leaving a patient out is counted in what the index can return
    n = int((arch.table()["patient_id"] != "DEMO001").sum())
    with pytest.raises(IndexConfigError, match=f"the {n} slices .* \\(patient DEMO001 excluded\\)"):
        search(arch, pid_only, index="ct256", slice_index=20, k=n + 1)


def test_cli_header_names_the_recognised_patient(indexed, capsys):
    root, arch = indexed
    ct = str(root / "demo" / "DEMO002" / "CT_0012.dcm")
    assert main(["search", "--archive", str(arch.path), ct, "--index", "ct256", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert "query recognised as archive patient DEMO002 (same series): left out" in out.splitlines()[0]
    assert "other patients only" not in out and "DEMO002" not in "".join(out.splitlines()[2:])
    assert main(["search", "--archive", str(arch.path), ct, "--index", "ct256", "--k", "3",
                 "--include-same-patient", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["recognised"]["patient_id"] == "DEMO002" and res["excluded_patient"] is None
    assert main(["search", "--archive", str(arch.path), "DEMO002:12", "--index", "ct256", "--k", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("  other patients only")


# ---------------------------------------------------------------------- patient search
def test_patient_search_of_a_series_folder_leaves_the_patient_out(indexed, capsys):
    root, arch = indexed
    folder = root / "demo" / "DEMO001"
    res = patient_search(arch, series=folder, index="ct256", k=3)
    assert res["recognised"] == {"patient_id": "DEMO001", "matched_on": ALL}
    assert res["excluded_patient"] == "DEMO001"
    assert {r["patient_id"] for r in res["results"]} == {"DEMO002", "DEMO003"}
    kept = patient_search(arch, series=folder, index="ct256", k=3, same_patient=True)
    assert kept["excluded_patient"] is None and kept["results"][0]["patient_id"] == "DEMO001"
    assert kept["results"][0]["patient_score"] > 0.9
    archive_q = patient_search(arch, patient="DEMO001", index="ct256", k=3)
    assert archive_q["recognised"] is None and archive_q["excluded_patient"] == "DEMO001"
    assert main(["search", "--archive", str(arch.path), "--patient", str(folder), "--index", "ct256"]) == 0
    out = capsys.readouterr().out
    assert "query recognised as archive patient DEMO001 (same series): left out" in out.splitlines()[0]
    assert main(["search", "--archive", str(arch.path), "--patient", str(folder), "--index", "ct256",
                 "--include-same-patient", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["patient_id"] == "DEMO001"


# ---------------------------------------------------------------------- dose prediction
def test_predict_dose_never_uses_the_recognised_patient_as_a_donor(indexed, tmp_path, capsys):
    root, arch = indexed
    folder = root / "demo" / "DEMO001"
    pred = predict_dose_planned(arch, series=folder, method="neighbours", k=3)
    assert sorted(n["patient_id"] for n in pred.patients) == ["DEMO002", "DEMO003"]
    assert pred.query["recognised"] == {"patient_id": "DEMO001", "matched_on": ALL}
    assert pred.query["excluded_patient"] == "DEMO001"
    # the old behaviour on request: its own plan, the same geometry, is the nearest donor
    leak = predict_dose_planned(arch, series=folder, method="neighbours", k=3, same_patient=True)
    assert leak.patients[0]["patient_id"] == "DEMO001" and len(leak.patients) == 3
    assert leak.patients[0]["geometry_distance"] < 1e-3 < leak.patients[1]["geometry_distance"]
    assert leak.query["excluded_patient"] is None
    for by in ("ct", "both"):
        nb = predict_dose_planned(arch, series=folder, method="neighbours", neighbours_by=by, k=3, index="ct256")
        assert "DEMO001" not in [n["patient_id"] for n in nb.patients] and len(nb.patients) == 2
    # the slice-pasting rule too
    px = predict_dose(arch, series=root / "demo" / "DEMO002", index="ct256", k=3)
    assert sorted(p["patient_id"] for p in px.patients) == ["DEMO001", "DEMO003"]
    assert px.query["excluded_patient"] == "DEMO002" and px.query["recognised"]["patient_id"] == "DEMO002"
    # the command line says so, and lists only the other donors
    assert main(["predict-dose", "--archive", str(arch.path), "--patient", str(folder), "--method", "neighbours",
                 "--k", "3", "--out", str(tmp_path / "p"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "query recognised as archive patient DEMO001 (same series): left out of the donors" in out
    assert "from DEMO001" not in out and "from DEMO002" in out and "from DEMO003" in out
    assert json.loads((tmp_path / "p.json").read_text())["query"]["excluded_patient"] == "DEMO001"
    assert main(["predict-dose", "--archive", str(arch.path), "--patient", str(folder), "--method", "neighbours",
                 "--k", "3", "--out", str(tmp_path / "q"), "--no-progress", "--include-same-patient"]) == 0
    out = capsys.readouterr().out
    assert "(same series): included" in out and "from DEMO001" in out
    assert main(["predict-dose", "--archive", str(arch.path), "--patient", "DEMO001", "--method", "neighbours",
                 "--k", "3", "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "its own plan: left out of the donors" in out and "from DEMO001" not in out


def test_geometry_ranking_of_a_folder_leaves_the_patient_out(indexed, capsys):
    root, arch = indexed
    assert main(["search", "--archive", str(arch.path), "--patient", str(root / "demo" / "DEMO003"),
                 "--rank", "geometry", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["excluded_patient"] == "DEMO003" and res["recognised"]["matched_on"] == ALL
    assert {r["patient_id"] for r in res["results"]} == {"DEMO001", "DEMO002"}


def test_an_archive_patient_without_target_levels_is_refused(indexed, tmp_path):
    root, _ = indexed
    shutil.copytree(root / "arch", tmp_path / "arch")
    arch = Archive(tmp_path / "arch")
    _write_copy(tmp_path / "bare", patient_id="BARE", uid_root="1.2.826.0.1.3680043.8.498.73")
    assert ingest(arch, [tmp_path / "bare"]).exit_code == 0
    for by in ("geometry", "ct"):       # every caller gets the check (the web's planned dose too)
        with pytest.raises(InputError) as e:
            predict_dose_planned(arch, patient="BARE", method="neighbours", neighbours_by=by, index="ct256")
        assert e.value.param == "targets"
        assert str(e.value) == ("patient 'BARE' has no target with a level in its name (e.g. PTV70), so no dose can "
                                "be predicted; its structures: none")
    with pytest.raises(InputError, match="patient 'BARE' has no target"):
        rank_patients_by_geometry(arch, patient="BARE")


# ---------------------------------------------------------------------- pseudonymised archives
def test_pseudonymised_archive_recognises_the_query_with_its_key(trained, tmp_path, capsys):
    from medhash.ingest.pseudonymise import Pseudonymiser, make_key
    root, _ = trained
    key = make_key(tmp_path / "medhash.key")
    arch = Archive(tmp_path / "pseudo", create=True)
    assert ingest(arch, [root / "demo"], pseudonymise=key).exit_code == 0
    pseudo = Pseudonymiser(key.read_bytes()).patient_id("DEMO001")
    assert pseudo in arch.patients() and "DEMO001" not in arch.patients()
    folder = root / "demo" / "DEMO001"
    ds = _header(folder)
    ident = {"patient_id": ds.PatientID, "study_uid": ds.StudyInstanceUID, "frame_uid": ds.FrameOfReferenceUID,
             "series_uid": ds.SeriesInstanceUID}
    assert recognise(arch, ident) is None                         # the original ids are not in the archive
    assert recognise(arch, ident, key) == {"patient_id": pseudo, "matched_on": ALL}
    # without the key the patient's own plan would be a donor; with it, it is left out
    blind = predict_dose_planned(arch, series=folder, method="neighbours", k=3)
    assert blind.query["recognised"] is None and pseudo in [n["patient_id"] for n in blind.patients]
    pred = predict_dose_planned(arch, series=folder, method="neighbours", k=3, pseudonymise=key)
    assert pred.query["recognised"] == {"patient_id": pseudo, "matched_on": ALL}
    assert pseudo not in [n["patient_id"] for n in pred.patients] and len(pred.patients) == 2
    assert main(["search", "--archive", str(arch.path), "--patient", str(folder), "--rank", "geometry",
                 "--pseudonymise", str(key)]) == 0
    out = capsys.readouterr().out
    assert f"query recognised as archive patient {pseudo} (same series): left out" in out
    assert main(["predict-dose", "--archive", str(arch.path), "--patient", str(folder), "--method", "neighbours",
                 "--out", str(tmp_path / "p"), "--no-progress", "--pseudonymise", str(key)]) == 0
    assert f"from {pseudo}" not in capsys.readouterr().out
