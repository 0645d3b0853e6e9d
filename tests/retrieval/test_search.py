"""Search end to end on a small demo archive: train, index, search, export, bad inputs."""
import json
import shutil

import numpy as np
import pytest

from medhash import GRID_SPACING_MM, Archive, search
from medhash.ingest import ingest
from medhash.cli import main
from medhash.demo import DEMO_PROVENANCE, make_phantom
from medhash.io.writers import write_ct_series
from medhash.errors import ModelMismatchError, NotFoundError
from medhash.features import archive_features, train_model
from medhash.errors import IndexConfigError
from medhash.retrieval import Index, build_index, list_indexes

PLANTED = "PLANTED"


def _plant_copy(dest, index=0, rows=96):
    """A near-duplicate of demo patient `index`: the same CT with +-2 HU noise, new ids."""
    ph = make_phantom(index, 0, rows=rows)
    rng = np.random.default_rng(5)
    hu = ph.hu.astype(np.int32) + rng.integers(-2, 3, size=ph.hu.shape)
    write_ct_series(dest, hu.astype(np.int16), pixel_spacing=ph.pixel_spacing,
                    slice_positions_mm=ph.slice_positions_mm, origin_xy_mm=ph.origin_xy_mm, patient_id=PLANTED,
                    study_uid="1.2.826.0.1.3680043.8.498.1", series_uid="1.2.826.0.1.3680043.8.498.2",
                    frame_of_reference_uid="1.2.826.0.1.3680043.8.498.3", provenance=DEMO_PROVENANCE)
    return ph


@pytest.fixture
def archive_copy(trained, tmp_path):
    root, arch = trained
    shutil.copytree(arch.path, tmp_path / "arch")
    return root, Archive(tmp_path / "arch")


def test_planted_near_duplicate_is_found_first(archive_copy):
    root, arch = archive_copy
    _plant_copy(root / "planted", 0)
    ingest(arch, [root / "planted"])
    build_index(arch, "ct512", "ct", 512, seed=0)
    for s in arch.slices("DEMO001")[5:40:7]:
        # Hamming: the planted copy of this very slice is among the first 3 (its neighbours along z
        # in the copy are near-duplicates too); re-ranked by the exact feature distance: first
        res = search(arch, f"DEMO001:{s.slice_index}", index="ct512", k=3)
        assert (PLANTED, s.slice_index) in [(r["patient_id"], r["slice_index"]) for r in res["results"]]
        assert all(r["patient_id"] == PLANTED for r in res["results"])
        rr = search(arch, f"DEMO001:{s.slice_index}", index="ct512", k=3, rerank=30)
        assert (rr["results"][0]["patient_id"], rr["results"][0]["slice_index"]) == (PLANTED, s.slice_index)
        assert rr["results"][0]["euclidean"] <= rr["results"][1]["euclidean"]
    same = search(arch, "DEMO001:20", index="ct512", k=1, same_patient=True)
    assert same["results"][0]["patient_id"] == "DEMO001" and same["results"][0]["hamming"] == 0


def test_incremental_index_equals_full_rebuild(archive_copy, tmp_path):
    root, arch = archive_copy
    build_index(arch, "inc", "ct", 128, gamma=0.5, seed=3)
    n0 = len(Index(arch, "inc"))
    _plant_copy(root / "planted2", 1)
    ingest(arch, [root / "planted2"])
    man = build_index(arch, "inc", "ct", 128, gamma=0.5, seed=3)
    assert man["added"] == len(arch) - n0 > 0
    full = build_index(arch, "full", "ct", 128, gamma=0.5, seed=3)
    a, b = Index(arch, "inc"), Index(arch, "full")
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert full["items"] == len(arch)
    again = build_index(arch, "inc", "ct", 128, gamma=0.5, seed=3)
    assert again["added"] == 0
    assert list_indexes(arch) == ["full", "inc"]


def test_joint_and_dose_indexes_and_json_schema(archive_copy, capsys):
    _, arch = archive_copy
    assert main(["index", "--archive", str(arch.path), "--name", "joint", "--channel", "ct+dose", "--bits", "256",
                 "--no-progress"]) == 0
    man = json.loads((arch.path / "indexes" / "joint" / "manifest.json").read_text())
    assert set(man["models"]) == {"ct", "dose"} and man["feature_dim"] == 64
    assert man["models"]["ct"]["sha256"] and man["versions"]["faiss"] and man["gamma_"] > 0
    capsys.readouterr()
    assert main(["search", "--archive", str(arch.path), "DEMO002:20", "--index", "joint", "--k", "4", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["query"]["patient_id"] == "DEMO002" and len(res["results"]) == 4
    assert [r["rank"] for r in res["results"]] == [1, 2, 3, 4]
    for r in res["results"]:
        # percentile among random pairs and the kernel-LSH expectation (calibration, issue 16 point 2)
        assert set(r) == {"rank", "patient_id", "slice_index", "z_mm", "hamming", "percentile", "expected_hamming"}
    assert res["calibration"]["verdict"] in ("similar", "no similar slice")
    hams = [r["hamming"] for r in res["results"]]
    assert hams == sorted(hams)


def test_dicom_series_query_equals_archive_query(archive_copy):
    root, arch = archive_copy
    build_index(arch, "ct256", "ct", 256)
    by_file = search(arch, root / "demo" / "DEMO002", index="ct256", slice_index=20, k=5, same_patient=True)
    by_name = search(arch, "DEMO002:20", index="ct256", k=5, same_patient=True)
    assert by_file["query"]["type"] == "dicom"
    assert [(r["patient_id"], r["slice_index"], r["hamming"]) for r in by_file["results"]] == \
        [(r["patient_id"], r["slice_index"], r["hamming"]) for r in by_name["results"]]


def test_image_queries_png_and_npy(archive_copy, tmp_path):
    _, arch = archive_copy
    build_index(arch, "ct256", "ct", 256)
    s = arch.get("DEMO003", 15)
    np.save(tmp_path / "q.npy", s.ct)
    res = search(arch, tmp_path / "q.npy", index="ct256", k=1)
    assert res["query"]["type"] == "image" and res["same_patient"] is True
    assert (res["results"][0]["patient_id"], res["results"][0]["slice_index"]) == ("DEMO003", 15)
    # a 256 x 256 NPY is resampled to the grid; a PNG is read as grey -1000..1000 HU
    np.save(tmp_path / "big.npy", np.kron(s.ct, np.ones((2, 2), np.float32)))
    assert len(search(arch, tmp_path / "big.npy", index="ct256", k=2)["results"]) == 2
    from PIL import Image
    grey = np.clip((s.ct + 1000) / 2000 * 255, 0, 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "q.png")
    assert len(search(arch, tmp_path / "q.png", index="ct256", k=2)["results"]) == 2


def test_png_grid_is_written(archive_copy, tmp_path, capsys):
    _, arch = archive_copy
    build_index(arch, "joint", "ct+dose", 128)
    out = tmp_path / "grid.png"
    assert main(["search", "--archive", str(arch.path), "DEMO001:20", "--index", "joint", "--k", "5", "--png",
                 str(out)]) == 0
    from PIL import Image
    with Image.open(out) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[0] > 200 and arr.shape[1] > 600
    assert arr.std() > 20  # not an empty picture
    text = capsys.readouterr().out
    assert "rank" in text and "picture:" in text


def test_png_isodose_levels(archive_copy, tmp_path, capsys):
    """--isodose: the picture's levels in percent or Gy; bad text and a missing --png name the option."""
    _, arch = archive_copy
    build_index(arch, "joint", "ct+dose", 128)
    base = ["search", "--archive", str(arch.path), "DEMO001:20", "--index", "joint", "--k", "3"]
    out = tmp_path / "grid.png"
    assert main(base + ["--png", str(out), "--isodose", "30,20,10"]) == 0 and out.stat().st_size > 10_000
    capsys.readouterr()
    assert main(base + ["--png", str(out), "--isodose", "95%,80"]) == 1
    assert "error: isodose levels '95%,80' mix percent and Gy" in capsys.readouterr().err
    assert main(base + ["--isodose", "50%"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: isodose levels are drawn only in a picture") and "(option --isodose)" in err


def test_export(archive_copy, tmp_path):
    _, arch = archive_copy
    build_index(arch, "ct100", "ct", 100)
    assert main(["export", "--archive", str(arch.path), "--index", "ct100", "--out", str(tmp_path / "exp")]) == 0
    feats = np.load(tmp_path / "exp" / "features.npy")
    codes = np.load(tmp_path / "exp" / "codes.npy")
    lines = (tmp_path / "exp" / "slices.csv").read_text().splitlines()
    assert lines[0] == "patient_id,slice_index,z_mm"
    assert feats.dtype == np.float32 and codes.dtype == np.uint8 and codes.shape == (len(arch), 13)
    assert len(lines) - 1 == len(feats) == len(codes)
    pid, sidx, _ = lines[1].split(",")
    np.testing.assert_allclose(feats[0], archive_features(arch, "ct-shallow", progress=False)[0] /
                               Index(arch, "ct100").manifest["scales"]["ct"], rtol=1e-5)
    assert (pid, int(sidx)) == (arch[0].patient_id, arch[0].slice_index)


def test_bad_inputs(archive_copy, tmp_path, capsys):
    root, arch = archive_copy
    a = str(arch.path)
    build_index(arch, "ct256", "ct", 256)
    # bits and gamma
    assert main(["index", "--archive", a, "--name", "x", "--bits", "0", "--no-progress"]) == 1
    assert "n_bits" in capsys.readouterr().err
    assert main(["index", "--archive", a, "--name", "x", "--bits", "16385", "--no-progress"]) == 1
    assert main(["index", "--archive", a, "--name", "x", "--gamma", "-1", "--no-progress"]) == 1
    assert "--gamma must be 'auto' or a positive number" in capsys.readouterr().err
    # k larger than the archive, unknown index, unknown slice
    assert main(["search", "--archive", a, "DEMO001:20", "--index", "ct256", "--k", "100000"]) == 1
    assert "larger than the" in capsys.readouterr().err
    assert main(["search", "--archive", a, "DEMO001:20", "--index", "nope"]) == 1
    assert "no index named 'nope'" in capsys.readouterr().err
    with pytest.raises(NotFoundError, match="indexes in this archive: ct256"):
        Index(arch, "nope")
    assert main(["search", "--archive", a, "DEMO001:9999", "--index", "ct256"]) == 1
    assert "slice_index" in capsys.readouterr().err
    # a query of another modality
    rd = next((root / "demo" / "DEMO001").glob("RD_*.dcm"))
    assert main(["search", "--archive", a, str(rd), "--index", "ct256"]) == 1
    assert "a query must be a CT image; this file is RTDOSE" in capsys.readouterr().err
    # a joint index needs a dose with a file query
    build_index(arch, "joint", "ct+dose", 64)
    ct_file = sorted((root / "demo" / "DEMO001").glob("CT_*.dcm"))[10]
    assert main(["search", "--archive", a, str(ct_file), "--index", "joint"]) == 1
    assert "needs a dose too" in capsys.readouterr().err
    assert main(["search", "--archive", a, str(ct_file), "--index", "joint", "--dose", str(rd), "--json"]) == 0
    capsys.readouterr()
    # the model trained again: the index refuses to answer
    train_model(arch, "ct", "shallow", epochs=1, latent_dim=32, seed=1, progress=False)
    with pytest.raises(ModelMismatchError, match="trained again"):
        Index(arch, "ct256")
    assert main(["search", "--archive", a, "DEMO001:20", "--index", "ct256"]) == 1
    assert "rebuild the index" in capsys.readouterr().err
    assert main(["index", "--archive", a, "--name", "ct256", "--bits", "256", "--no-progress"]) == 1
    assert main(["index", "--archive", a, "--name", "ct256", "--bits", "256", "--rebuild", "--no-progress"]) == 0


def test_empty_archive_and_no_model(tmp_path):
    arch = Archive(tmp_path / "empty", create=True)
    with pytest.raises(IndexConfigError, match="is empty"):
        build_index(arch, "x", "ct", 64)
    with pytest.raises(NotFoundError, match="has no index"):
        search(arch, "a:1")


# ---------------------------------------------------------------------- patient-level search
def test_patient_search_ranks_a_planted_copy_first(archive_copy, capsys):
    from medhash.retrieval import patient_search
    root, arch = archive_copy
    _plant_copy(root / "planted-pt", 0)
    ingest(arch, [root / "planted-pt"])
    build_index(arch, "ct256", "ct", 256, seed=0)
    res = patient_search(arch, patient="DEMO001", index="ct256", k=3)
    first = res["results"][0]
    assert first["patient_id"] == PLANTED and first["rank"] == 1
    assert first["z_offset_mm"] == 0.0 and first["patient_score"] > 0.9
    assert first["patient_score"] > res["results"][1]["patient_score"]
    assert all(r["patient_id"] != "DEMO001" for r in res["results"])
    # the pairs match query slices with the copy's slice at the same z (neighbouring phantom slices can
    # be as near), always within the z tolerance of the offset
    same = [p["z_mm"] == p["query_z_mm"] for p in first["pairs"]]
    assert np.mean(same) > 0.8 and len(same) == first["matched_slices"]
    assert all(abs(p["z_mm"] - p["query_z_mm"]) <= 10.0 for p in first["pairs"])
    # and the other way round; and a DICOM series folder as the query (the archive's own copy is found first)
    back = patient_search(arch, patient=PLANTED, index="ct256", k=1)
    assert back["results"][0]["patient_id"] == "DEMO001"
    folder = patient_search(arch, series=root / "planted-pt", index="ct256", k=2)
    assert folder["query"]["type"] == "dicom" and folder["results"][0]["patient_id"] in (PLANTED, "DEMO001")
    assert folder["results"][0]["patient_score"] > 0.9
    # the command line, JSON and table
    assert main(["search", "--archive", str(arch.path), "--patient", "DEMO001", "--index", "ct256", "--k", "2",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["patient_id"] == PLANTED and "patient_score" in out["results"][0]
    assert main(["search", "--archive", str(arch.path), "--patient", "DEMO001", "--index", "ct256"]) == 0
    assert PLANTED in capsys.readouterr().out
    assert main(["search", "--archive", str(arch.path), "DEMO001:3", "--patient", "DEMO001"]) == 1
    assert main(["search", "--archive", str(arch.path), "--patient", "NOBODY", "--index", "ct256"]) == 1


# ---------------------------------------------------------------------- dose from similar patients
def test_predict_dose_from_a_planted_twin_and_rtdose_readback(archive_copy, tmp_path, capsys):
    from medhash.dose import predict_dose, write_prediction
    from medhash.dose.prediction import shift2d
    from medhash.io.dicom import read_dose
    root, arch = archive_copy
    _plant_copy(root / "twin", 0)                       # DEMO001's anatomy, no dose
    ingest(arch, [root / "twin"])
    build_index(arch, "ct256", "ct", 256, seed=0)
    pred = predict_dose(arch, patient=PLANTED, index="ct256", k=1, match="z")
    assert [p["patient_id"] for p in pred.patients] == ["DEMO001"]
    # the twin's dose is DEMO001's dose on the same slices (inside the body; same outline: no shift)
    src = {round(s.z_mm, 3): s for s in arch.slices("DEMO001")}
    for i, z in enumerate(pred.z_mm):
        s = src[round(float(z), 3)]
        body = np.asarray(arch.slices(PLANTED)[i].ct) > -500
        np.testing.assert_allclose(pred.dose[i][body], s.dose[body], atol=1e-5)
    assert (pred.coverage == 1).all()
    # matching by features picks, within the aligned window, slices at most the tolerance away
    near = predict_dose(arch, patient=PLANTED, index="ct256", k=1)
    assert (near.coverage == 1).all() and near.dose.max() > 0
    # a DICOM series folder: the prediction is written as an RTDOSE that reads back onto the same grid
    series = root / "demo" / "DEMO002"
    pred2 = predict_dose(arch, series=series, index="ct256", k=2)
    files = write_prediction(pred2, tmp_path / "out" / "DEMO002")
    assert set(files) == {"npy", "json", "rtdose"}
    assert np.array_equal(np.load(files["npy"]), pred2.dose)
    grid = read_dose(files["rtdose"])
    vol = pred2.volume
    order = np.argsort(vol.z_mm, kind="stable")
    back = grid.sample_planes(vol.origins_mm[order], vol.row_dir, vol.col_dir, 128, GRID_SPACING_MM)
    np.testing.assert_allclose(back, pred2.dose, atol=1e-6 * max(1.0, float(pred2.dose.max())))
    import pydicom
    ds = pydicom.dcmread(files["rtdose"])
    assert ds.Modality == "RTDOSE" and ds.DoseUnits == "GY" and int(ds.NumberOfFrames) == len(pred2.z_mm)
    assert ds.FrameOfReferenceUID == vol.info["frame_of_reference_uid"]
    # medhash's own output, not the demo's: its Manufacturer, today's date, fresh UIDs, no name
    from medhash.dose.prediction import PREDICTED_DOSE_DESCRIPTION
    assert ds.Manufacturer == "medhash" and ds.SeriesDescription == PREDICTED_DOSE_DESCRIPTION
    assert "not for clinical use" in ds.SeriesDescription and ds.PatientName == ""
    assert ds.StudyInstanceUID == vol.info["study_uid"] and ds.PatientID == vol.patient_id
    assert "20240102" not in (ds.SeriesDate, ds.ContentDate, ds.InstanceCreationDate)
    # it joins the query's study: the study's own date and time, not today's
    ct = pydicom.dcmread(sorted(series.glob("CT_*.dcm"))[0], stop_before_pixels=True)
    assert (ds.StudyDate, ds.StudyTime) == (ct.StudyDate, ct.StudyTime) == ("20240102", "120000")
    again = pydicom.dcmread(write_prediction(pred2, tmp_path / "again" / "DEMO002")["rtdose"])
    assert again.SOPInstanceUID != ds.SOPInstanceUID and again.SeriesInstanceUID != ds.SeriesInstanceUID
    assert again.file_meta.MediaStorageSOPInstanceUID == again.SOPInstanceUID
    back_again = read_dose(tmp_path / "again" / "DEMO002.dcm").sample_planes(
        vol.origins_mm[order], vol.row_dir, vol.col_dir, 128, GRID_SPACING_MM)
    np.testing.assert_array_equal(back_again, back)
    # body-outline alignment moves whole pixels with zeros shifted in
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert shift2d(a, 1, -1).tolist() == [[0, 0, 0, 0], [1, 2, 3, 0], [5, 6, 7, 0], [9, 10, 11, 0]]
    # the command line
    assert main(["predict-dose", "--archive", str(arch.path), "--patient", PLANTED, "--method", "pixels", "--index",
                 "ct256", "--k", "1", "--out", str(tmp_path / "cli" / "twin")]) == 0
    out = capsys.readouterr().out
    assert "from DEMO001" in out and (tmp_path / "cli" / "twin.npy").is_file()
