"""Cumulative DVHs, the similar patients' band and the DVH files, checked against closed forms."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medhash

from medhash.dose.dvh import (CSV_COLUMNS, cumulative_dvh, dose_axis, dvh_band, dvh_png, structure_dvhs,
                              structure_order, write_dvh)

SHAPE = (2, 128, 128)


def box(rows: slice, cols: slice = slice(0, 50)) -> np.ndarray:
    """A (2, 128, 128) mask: the given rows and columns of both slices."""
    m = np.zeros(SHAPE, dtype=bool)
    m[:, rows, cols] = True
    return m


def ramp() -> tuple[np.ndarray, np.ndarray]:
    """A mask of 100 voxels whose doses are 0.5, 1.5, ..., 99.5 Gy, and 1000 Gy everywhere else."""
    dose = np.full(SHAPE, 1000.0, dtype=np.float32)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[1, 3, :100] = True
    dose[1, 3, :100] = np.arange(100) + 0.5
    return dose, mask


def test_dose_axis_covers_the_maximum_in_steps():
    np.testing.assert_allclose(dose_axis(50.0), np.arange(101) * 0.5)        # 50 / 0.5: exactly 100 steps
    assert dose_axis(50.1)[-1] == 50.5 and len(dose_axis(50.1)) == 102
    np.testing.assert_allclose(dose_axis(7.0, 2.5), [0.0, 2.5, 5.0, 7.5])
    np.testing.assert_allclose(dose_axis(0.0), [0.0, 0.5])                    # at least two bins
    assert dose_axis(70.0, 0.1)[-1] == pytest.approx(70.0) and len(dose_axis(70.0, 0.1)) == 701
    for bad in ((-1.0, 0.5), (50.0, 0.0), (float("nan"), 0.5), (50.0, float("inf"))):
        with pytest.raises(ValueError):
            dose_axis(*bad)


def test_uniform_dose_is_100_percent_up_to_its_value_then_0():
    mask = box(slice(10, 20))
    dose = np.full(SHAPE, 50.0, dtype=np.float32)
    dose[~mask] = 80.0                                                          # outside the mask: ignored
    axis = dose_axis(60.0)
    curve = cumulative_dvh(dose, mask, axis)
    assert curve.dtype == np.float64 and curve.shape == axis.shape
    np.testing.assert_array_equal(curve, np.where(axis <= 50.0, 100.0, 0.0))


def test_linear_ramp_gives_a_staircase_of_one_percent_per_gray():
    dose, mask = ramp()
    axis = dose_axis(101.0, 0.5)
    # voxels with k + 0.5 >= D: k >= ceil(D - 0.5), i.e. 100 - floor(D) of 100 voxels, down to 0 at 100 Gy
    np.testing.assert_allclose(cumulative_dvh(dose, mask, axis), np.clip(100.0 - np.floor(axis), 0, 100))
    assert cumulative_dvh(dose, mask, np.array([0.0, 0.5, 25.0, 99.5, 99.6]))[[0, 2, 3, 4]].tolist() == \
        [100.0, 75.0, 1.0, 0.0]


def test_empty_mask_is_nan_and_bad_input_is_refused():
    axis = dose_axis(10.0)
    assert np.isnan(cumulative_dvh(np.zeros(SHAPE), np.zeros(SHAPE, dtype=bool), axis)).all()
    with pytest.raises(ValueError, match="shape"):
        cumulative_dvh(np.zeros(SHAPE), np.ones((1, 128, 128), dtype=bool), axis)
    dose = np.zeros(SHAPE)
    dose[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        cumulative_dvh(dose, box(slice(0, 1)), axis)
    np.testing.assert_array_equal(cumulative_dvh(dose, box(slice(5, 6)), axis)[:2], [100.0, 0.0])  # NaN outside


def test_structure_dvhs_skips_empty_masks_and_keeps_the_order():
    dose = np.zeros(SHAPE, dtype=np.float32)
    dose[:, :10] = 20.0                      # rows 0..9: 20 Gy, the rest 0 Gy
    axis = np.array([0.0, 10.0, 20.0, 30.0])
    out = structure_dvhs(dose, {"PTV70": box(slice(0, 10)), "Brainstem": box(slice(5, 15)),
                                "Larynx": np.zeros(SHAPE, dtype=bool)}, axis)
    assert list(out) == ["PTV70", "Brainstem"]
    np.testing.assert_array_equal(out["PTV70"], [100, 100, 100, 0])
    np.testing.assert_array_equal(out["Brainstem"], [100, 50, 50, 0])         # half of its rows at 20 Gy


def test_band_is_min_median_max_of_the_neighbours_dvhs_by_hand():
    structs = {"PTV70": box(slice(0, 10)), "Cord": box(slice(20, 30)), "Empty": np.zeros(SHAPE, dtype=bool)}
    axis = np.arange(0.0, 60.0, 10.0)                                           # 0, 10, ..., 50 Gy
    doses = [np.full(SHAPE, gy, dtype=np.float32) for gy in (40.0, 10.0, 20.0)]
    doses[0][:, 20:25] = 0.0                                                    # half the cord at 0 Gy in the first
    band = dvh_band(doses, structs, axis)
    assert list(band) == ["PTV70", "Cord"] and band["PTV70"].shape == (3, 6)
    # uniform 10 / 20 / 40 Gy: 100 % up to 10 / 20 / 40 Gy
    np.testing.assert_array_equal(band["PTV70"], [[100, 100, 0, 0, 0, 0],
                                                  [100, 100, 100, 0, 0, 0],
                                                  [100, 100, 100, 100, 100, 0]])
    # cord DVHs: [100, 50, 50, 50, 50, 0], [100, 100, 0, 0, 0, 0], [100, 100, 100, 0, 0, 0]
    np.testing.assert_array_equal(band["Cord"], [[100, 50, 0, 0, 0, 0],
                                                 [100, 100, 50, 0, 0, 0],
                                                 [100, 100, 100, 50, 50, 0]])
    even = dvh_band(doses[1:], {"PTV70": structs["PTV70"]}, axis)["PTV70"]      # k = 2: median is the mean
    np.testing.assert_array_equal(even[1], [100, 100, 50, 0, 0, 0])
    with pytest.raises(ValueError, match="at least one"):
        dvh_band([], structs, axis)


def test_structure_order_puts_targets_first_by_level():
    names = ["Parotid_L", "PTV56", "Brainstem", "PTV_7000", "PTV63", "BODY"]
    assert structure_order(names) == ["PTV_7000", "PTV63", "PTV56", "BODY", "Brainstem", "Parotid_L"]


def _curves(names, axis, shift=0.0):
    """name -> a falling curve (%), a different one per structure."""
    return {n: np.clip(100.0 - (axis - 5.0 * i - shift) * 10.0, 0, 100) for i, n in enumerate(names)}


def test_write_dvh_csv_and_json(tmp_path):
    axis = dose_axis(10.0, 5.0)                                                 # 0, 5, 10 Gy
    predicted = {"Brainstem": np.array([100.0, 40.0, 0.0]), "PTV70": np.array([100.0, 100.0, 12.5])}
    band = {"PTV70": np.array([[100.0, 90.0, 0.0], [100.0, 95.0, 10.0], [100.0, 100.0, 20.0]])}
    truth = {"PTV70": np.array([100.0, 99.0, np.nan])}
    metrics = {"predicted": {"D95 PTV70": 63.2, "mean Brainstem": 12.0}, "truth": {"D95 PTV70": float("nan")}}
    files = write_dvh(tmp_path / "out" / "p001", axis, predicted, band, truth, metrics, title="p001")
    assert {k: p.name for k, p in files.items()} == {"csv": "p001-dvh.csv", "json": "p001-dvh.json",
                                                    "png": "p001-dvh.png"}
    rows = list(csv.reader(files["csv"].open()))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 1 + 2 * 3
    assert rows[1] == ["PTV70", "0", "100.0000", "100.0000", "100.0000", "100.0000", "100.0000"]
    assert rows[3] == ["PTV70", "10", "12.5000", "0.0000", "10.0000", "20.0000", ""]        # NaN truth: empty
    assert rows[5] == ["Brainstem", "5", "40.0000", "", "", "", ""]                         # no band, no truth
    data = json.loads(files["json"].read_text())
    assert data["dose_gy"] == [0.0, 5.0, 10.0] and data["structures"] == ["PTV70", "Brainstem"]
    assert data["curves"]["PTV70"]["band_median_pct"] == [100.0, 95.0, 10.0]
    assert data["curves"]["PTV70"]["truth_pct"] == [100.0, 99.0, None]
    assert set(data["curves"]["Brainstem"]) == {"predicted_pct"}
    assert data["metrics"] == {"predicted": {"D95 PTV70": 63.2, "mean Brainstem": 12.0},
                               "truth": {"D95 PTV70": None}}
    with pytest.raises(ValueError, match="band PTV70"):
        write_dvh(tmp_path / "bad", axis, predicted, {"PTV70": band["PTV70"][:2]})


def _colours(png) -> tuple[tuple[int, int], np.ndarray]:
    img = Image.open(png)
    return img.size, np.asarray(img.convert("RGB")).reshape(-1, 3)


def _has(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> bool:
    return bool((np.abs(pixels.astype(int) - rgb).max(axis=1) <= tol).any())


@pytest.mark.parametrize("n, size", [(1, (500, 330)), (10, (1200, 810)), (20, (1200, 1290))])
def test_write_dvh_png_panels(tmp_path, n, size):
    names = [f"PTV{70 - i}" for i in range(min(n, 3))] + [f"Organ_{i:02d}" for i in range(n - min(n, 3))]
    axis = dose_axis(80.0)
    predicted = _curves(names, axis)
    band = {k: np.stack([_curves(names, axis, -4)[k], v, _curves(names, axis, 4)[k]]) for k, v in predicted.items()}
    files = write_dvh(tmp_path / "q", axis, predicted, band, _curves(names, axis, 1.0), title=f"{n} structures")
    got, pixels = _colours(files["png"])
    assert got == size                                          # 4 columns at most, 100 dpi
    assert len(np.unique(pixels, axis=0)) > 50                  # not blank: lines, band, text
    assert _has(pixels, (0xd7, 0x19, 0x1c))                     # predicted (red)
    assert _has(pixels, (0x1f, 0x4e, 0x79))                     # band median (dark blue)
    assert _has(pixels, (0, 0, 0), tol=20)                      # truth, text (black)
    assert _has(pixels, (202, 222, 237), tol=8)                 # band: #2c7bb6 at 25 % over white


def test_write_dvh_png_without_band_or_truth(tmp_path):
    axis = dose_axis(40.0)
    files = write_dvh(tmp_path / "q", axis, _curves(["PTV70", "Larynx"], axis))
    size, pixels = _colours(files["png"])
    assert size == (600, 330)
    assert _has(pixels, (0xd7, 0x19, 0x1c))
    assert not _has(pixels, (202, 222, 237), tol=4)             # no band drawn


def test_write_dvh_with_no_structure_still_writes_the_files(tmp_path):
    files = write_dvh(tmp_path / "q", dose_axis(10.0), {})
    assert list(csv.reader(files["csv"].open())) == [list(CSV_COLUMNS)]
    assert json.loads(files["json"].read_text())["structures"] == []
    size, pixels = _colours(files["png"])
    assert size == (500, 330) and _has(pixels, (0, 0, 0), tol=20)     # the "no structure" note
    assert not _has(pixels, (0xd7, 0x19, 0x1c), tol=40)               # no curve, no legend


def test_importing_dvh_does_not_load_matplotlib():
    code = "import sys, medhash.dose.dvh; print('matplotlib' in sys.modules)"
    src = str(Path(medhash.__file__).resolve().parents[1])                # this checkout's package, not another
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False"


def test_dvh_png_bytes_are_the_written_figure(tmp_path):
    """dvh_png (the web app's figure) draws with write_dvh's code: the same pixels; the truth's legend label
    is the caller's; bad curves are refused the same way."""
    import io
    axis = dose_axis(40.0, 1.0)
    names = ["PTV70", "Brainstem", "Parotid_L"]
    predicted, truth = _curves(names, axis), _curves(names, axis, shift=3.0)
    band = {n: np.stack([c - 5, c, c + 5]).clip(0, 100) for n, c in _curves(names, axis, shift=1.0).items()}
    files = write_dvh(tmp_path / "p", axis, predicted, band, truth, title="p")
    data = dvh_png(axis, predicted, band, truth, title="p")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    got, want = (np.asarray(Image.open(x).convert("RGB")) for x in (io.BytesIO(data), files["png"]))
    np.testing.assert_array_equal(got, want)
    relabelled = np.asarray(Image.open(io.BytesIO(dvh_png(axis, predicted, band, truth, title="p",
                                                          truth_label="real plan"))).convert("RGB"))
    assert relabelled.shape == want.shape and (relabelled != want).any()     # only the legend's word differs
    with pytest.raises(ValueError, match="expected"):
        dvh_png(axis, {"PTV70": np.zeros(3)})
