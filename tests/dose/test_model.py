"""The archive's dose model and planning-time prediction, on the three demo patients."""
import json
import shutil

import numpy as np
import pytest

from medhash import Archive
from medhash.cli import main
from medhash.dose import fit_dose_model, list_dose_models, load_dose_model, predict_dose_planned
from medhash.geometry.maps import body_mask
from medhash.errors import InputError, ModelMismatchError, NotFoundError

SMALL = {"k": 2, "trees": 30, "voxels": 500}


def test_fitted_model_is_stored_with_its_patients_and_checksums(trained):
    root, arch = trained
    model = fit_dose_model(arch, "small", progress=False, **SMALL)
    folder = root / "arch" / "dose-models" / "small"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["patients"] == arch.patients() == model.atlas.patient_ids
    assert set(manifest["sha256"]) == {"model.txt", "atlas.npz"}
    assert manifest["settings"]["k"] == 2 and manifest["settings"]["voxels_per_patient"] == 500
    assert list_dose_models(arch) == ["small"]
    again = load_dose_model(arch)
    assert again.name == "small" and again.booster.num_trees() == 30
    np.testing.assert_array_equal(again.atlas.descriptors, model.atlas.descriptors)
    with open(folder / "model.txt", "a") as f:
        f.write("\n")
    with pytest.raises(ModelMismatchError, match="sha256"):
        load_dose_model(arch, "small")
    (folder / "model.txt").unlink()
    with pytest.raises(ModelMismatchError, match="model.txt is missing"):
        load_dose_model(arch, "small")
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ModelMismatchError, match="cannot be read"):
        load_dose_model(arch, "small")
    shutil.rmtree(folder)                               # the module's other tests share this archive


def test_fitting_twice_with_one_seed_gives_the_same_model(trained):
    _, arch = trained
    a = fit_dose_model(arch, "a", save=False, progress=False, seed=3, **SMALL)
    b = fit_dose_model(arch, "b", save=False, progress=False, seed=3, **SMALL)
    assert a.booster.model_to_string().split("feature_importances")[0] == \
        b.booster.model_to_string().split("feature_importances")[0]


def test_prediction_never_uses_the_query_own_plan(trained, tmp_path):
    shutil.copytree(trained[0] / "arch", tmp_path / "arch")     # a private copy: its dose is changed below
    root, arch = tmp_path, Archive(tmp_path / "arch")
    pid = arch.patients()[0]
    before = predict_dose_planned(arch, patient=pid, method="neighbours", k=5)
    assert pid not in [n["patient_id"] for n in before.patients]
    assert len(before.patients) == len(arch.patients()) - 1
    rows = np.flatnonzero(arch.table()["patient_id"] == pid)
    dose = np.memmap(root / "arch" / "arrays" / "dose.f32", dtype=np.float32, mode="r+").reshape(-1, 128, 128)
    dose[rows] = 0.0                                    # the query's own plan erased
    dose.flush()
    after = predict_dose_planned(Archive(root / "arch"), patient=pid, method="neighbours", k=5)
    np.testing.assert_array_equal(before.dose, after.dose)
    assert before.dose.max() > 10.0


def test_model_method_predicts_a_plausible_dose_inside_the_body(trained):
    _, arch = trained
    fit_dose_model(arch, "small", progress=False, **SMALL)
    pid = arch.patients()[1]
    pred = predict_dose_planned(arch, patient=pid)
    assert pred.query["method"] == "model" and pred.query["levels_gy"] == [70.0]
    assert pred.dose.shape == (len(pred.z_mm), 128, 128)
    table = arch.table()
    rows = np.flatnonzero(table["patient_id"] == pid)
    body = body_mask(np.asarray(arch.ct[rows[np.argsort(table["z_mm"][rows])]]))
    assert pred.dose.min() >= 0.0 and 30.0 < pred.dose.max() < 90.0
    assert np.all(pred.dose[~body] == 0.0) and pred.dose[body].mean() > 1.0
    assert pred.query["structures"]["Parotid_L"] == ["LeftParotid"]


def test_a_dicom_folder_query_brings_its_structures(trained):
    root, arch = trained
    fit_dose_model(arch, "small", progress=False, **SMALL)
    folder = sorted((root / "demo").iterdir())[0]
    pred = predict_dose_planned(arch, series=folder, method="neighbours", k=2)
    assert pred.query["levels_gy"] == [70.0] and "SpinalCord" in pred.query["structures"]
    assert pred.dose.max() > 30.0


def test_a_query_without_targets_is_told_how_to_name_them(trained, tmp_path):
    root, arch = trained
    folder = tmp_path / "ct-only"
    shutil.copytree(sorted((root / "demo").iterdir())[0], folder)
    for f in folder.glob("RS_*.dcm"):
        f.unlink()
    with pytest.raises(InputError, match="PTV_high=70") as e:
        predict_dose_planned(arch, series=folder, method="neighbours")
    assert e.value.param == "targets"


def test_no_dose_model_is_a_clear_error(trained):
    root, arch = trained
    shutil.rmtree(root / "arch" / "dose-models", ignore_errors=True)
    with pytest.raises(NotFoundError, match="fit-dose-model"):
        predict_dose_planned(arch, patient=arch.patients()[0], method="model")


def test_cli_fits_then_predicts_with_the_model(trained, tmp_path, capsys):
    root, arch = trained
    assert main(["fit-dose-model", "--archive", str(root / "arch"), "--k", "2", "--trees", "30", "--voxels", "500",
                 "--no-progress"]) == 0
    assert "dose model default: 3 patients" in capsys.readouterr().out
    pid = arch.patients()[2]
    assert main(["predict-dose", "--archive", str(root / "arch"), "--patient", pid, "--out",
                 str(tmp_path / "p"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "predicted dose (model)" in out and "target levels: 70 Gy" in out
    assert "one of the dose model's training patients" in out
    saved = np.load(tmp_path / "p.npy")
    assert saved.ndim == 3 and saved.max() > 30.0


def write_plan(folder, gy: float) -> None:
    """An RT plan in ``folder`` that prescribes ``gy`` to the PTV70 of the folder's structure set."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rs = pydicom.dcmread(next(folder.glob("RS_*.dcm")))
    roi = next(int(r.ROINumber) for r in rs.StructureSetROISequence if r.ROIName == "PTV70")
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.481.5", "RTPLAN"
    ds.PatientID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = rs.PatientID, rs.StudyInstanceUID, generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ref = pydicom.Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = rs.SOPClassUID, rs.SOPInstanceUID
    ds.ReferencedStructureSetSequence = [ref]
    dr = pydicom.Dataset()
    dr.DoseReferenceNumber, dr.DoseReferenceStructureType, dr.DoseReferenceType = 1, "VOLUME", "TARGET"
    dr.ReferencedROINumber, dr.TargetPrescriptionDose = roi, gy
    ds.DoseReferenceSequence = [dr]
    ds.save_as(folder / "RP_plan.dcm", enforce_file_format=True)


def test_the_rt_plan_prescription_sets_the_target_level(trained, tmp_path):
    root, arch = trained
    folder = tmp_path / "with-plan"
    shutil.copytree(sorted((root / "demo").iterdir())[0], folder)
    write_plan(folder, 66.0)
    pred = predict_dose_planned(arch, series=folder, method="neighbours", k=2)
    assert pred.query["levels_gy"] == [66.0]                      # the plan wins over the name "PTV70"
    pred = predict_dose_planned(arch, series=folder, method="neighbours", k=2, targets={"PTV70": 60.0})
    assert pred.query["levels_gy"] == [60.0]                      # and --targets over the plan
