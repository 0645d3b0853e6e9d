import subprocess
import sys

import numpy as np
import pytest

from medhash import Archive, InputError
from medhash.ingest import ingest
from medhash.core.grid import GRID_SPACING_MM
from medhash.io.openkbp import find_patients, read_patient, read_sparse
from medhash.core.records import POSSIBLE_DOSE_MASK

from conftest import SHARED_OPENKBP, make_openkbp_patient


def test_sparse_csv_values_and_masks(tmp_path):
    p = make_openkbp_patient(tmp_path)
    ct = read_sparse(p["folder"] / "ct.csv")
    np.testing.assert_array_equal(ct, p["ct"])
    ptv = read_sparse(p["folder"] / "PTV70.csv", mask=True)  # empty data column
    assert ptv.dtype == bool and (ptv == p["ptv"]).all()


def test_read_patient_known_hu_dose_and_structures(tmp_path):
    p = make_openkbp_patient(tmp_path)
    vol = read_patient(p["folder"])
    assert vol.patient_id == "pt_7" and vol.series_uid == "openkbp:pt_7" and vol.source == "openkbp"
    assert len(vol) == 128
    np.testing.assert_allclose(vol.z_mm[:3], [0.0, 2.5, 5.0])
    # spacing equals the grid's: pixels are copied exactly, HU = value - 1024
    k = 55
    values = set(np.unique(vol.ct[k]).tolist())
    assert values == {-1024.0, 40.0, 1000.0}
    assert vol.ct[60].max() == 3071.0  # 5000 clipped to 4095 -> 3071 HU
    assert vol.ct[10].max() == -1024.0  # no body on slice 10
    # the PTV keeps its voxel count (nearest neighbour, exact copy)
    assert vol.masks["PTV70"].sum() == p["ptv"].sum()
    assert POSSIBLE_DOSE_MASK in vol.masks
    # dose: the same voxels, same Gy
    assert vol.dose is not None
    assert vol.dose.sum() == pytest.approx(p["dose"].sum(), rel=1e-6)
    body = vol.body_only()
    assert len(body) == 40 and body.skipped_no_body == 88
    assert body.slice_index[0] == 40  # slice_index is the z index in the volume


def test_other_pixel_spacing_is_resampled_to_the_grid(tmp_path):
    p = make_openkbp_patient(tmp_path, spacing=(3.0, 3.0, 2.5))
    vol = read_patient(p["folder"])
    # the 40 x 30 voxel body of 3 mm becomes about 120/3.906 x 90/3.906 grid pixels
    body = vol.ct[55] > -500
    rows, cols = np.nonzero(body)
    assert np.ptp(rows) + 1 == pytest.approx(120 / GRID_SPACING_MM, abs=1.5)
    assert np.ptp(cols) + 1 == pytest.approx(90 / GRID_SPACING_MM, abs=1.5)


def test_patient_without_dose_is_ingested_with_a_warning(tmp_path):
    make_openkbp_patient(tmp_path, "pt_3", dose=False)
    arch = Archive(tmp_path / "arch", create=True)
    report = ingest(arch, [tmp_path])
    assert report.series_added == 1 and report.exit_code == 0
    assert any("no dose.csv" in w.message and "pt_3" in w.path for w in report.warnings)
    assert arch.info()["slices_with_dose"] == 0 and arch.info()["slices"] == 40


def test_malformed_csv_names_the_file(tmp_path):
    p = make_openkbp_patient(tmp_path, "pt_9")
    (p["folder"] / "ct.csv").write_text("index;value\n1;2\n")
    with pytest.raises(InputError, match=r"ct\.csv: header"):
        read_patient(p["folder"])
    make_openkbp_patient(tmp_path, "pt_10")
    arch = Archive(tmp_path / "arch", create=True)
    report = ingest(arch, [tmp_path])
    assert report.series_added == 1 and report.exit_code == 1  # pt_10 in, pt_9 reported
    assert "pt_9" in report.errors[0].path


def test_find_patients_orders_by_number(tmp_path):
    for n in (10, 2, 1):
        make_openkbp_patient(tmp_path, f"pt_{n}", body_slices=range(60, 62))
    assert [p.name for p in find_patients([tmp_path])] == ["pt_1", "pt_2", "pt_10"]


@pytest.mark.openkbp
def test_real_openkbp_patients(tmp_path):
    if not SHARED_OPENKBP.is_file():
        pytest.skip("shared OpenKBP data not present (../shared/data/openkbp-60.tar.xz)")
    subprocess.run(["tar", "-xJf", str(SHARED_OPENKBP), "-C", str(tmp_path), "train-pats/pt_1", "train-pats/pt_2"],
                   check=True)
    arch = Archive(tmp_path / "arch", create=True)
    report = ingest(arch, [tmp_path / "train-pats"])
    assert report.series_added == 2 and not report.errors
    info = arch.info()
    assert info["patients"] == 2 and info["slices"] == info["slices_with_dose"] > 100
    assert {"PTV70", "SpinalCord", "Brainstem"} <= set(info["structures"])
    mid = arch.slices("pt_1")[len(arch.slices("pt_1")) // 2]
    assert mid.ct.min() == -1024.0                       # air
    tissue = mid.ct[(mid.ct > -200) & (mid.ct < 200)]
    assert abs(np.median(tissue)) < 100                  # soft tissue near 0-60 HU
    assert mid.dose.max() > 50                           # a 70 Gy plan
