"""Tests of the DICOM RT reader (medhash.io.dicom and its rtstruct module) through ingest and the archive.

Test data are pydicom's bundled files and series written with the low-level writers of
:mod:`medhash.demo`. Where an exact comparison is needed the CT has 3.906 mm pixels (the model
grid's), so that the model grid copies native pixels; expected values are computed here from the
archive's own geometry (``Slice.origin_mm``, ``row_dir``, ``col_dir``, ``spacing_mm``), never with
medhash's resampling code.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from scipy import ndimage

from medhash import Archive
from medhash.ingest import ingest
from medhash.cli import main as cli_main
from medhash.demo import DEMO_PROVENANCE, ROI_NAMES, make_phantom, write_demo_cohort, write_phantom
from medhash.io.writers import write_ct_series, write_rtdose, write_rtstruct
from medhash.core.grid import GRID_SIZE
from medhash.io.dicom import read_ct_series, scan

sys.path.insert(0, str(Path(__file__).parents[1]))
import compressed  # noqa: E402  (tests/compressed.py: compressed copies of DICOM folders)
from archives import assert_same_archive  # noqa: E402

SP = 3.906           # the model grid's pixel: native CT with this spacing is copied exactly
ROWS = 64            # small hand-built CT slices
ORIGIN = (-120.3, -98.7)
COUNT_KEYS = ("patients", "series", "slices", "slices_with_dose", "structures", "skipped")


def uid(*parts) -> str:
    return str(generate_uid(entropy_srcs=["medhash-tests-dicom", *map(str, parts)]))


@dataclass
class Series:
    """A CT series written for a test, with what was written."""

    folder: Path
    paths: list[Path]        # position order
    hu: np.ndarray           # (n, rows, cols) HU in position order
    z: np.ndarray            # written slice positions along the normal
    patient_id: str
    series_uid: str
    study_uid: str
    for_uid: str
    orientation: tuple
    origin: tuple


def body_volume(n: int, seed: int, rows: int = ROWS, *, step: float = 1.0) -> np.ndarray:
    """(n, rows, rows) HU: air -1000 around an off-centre elliptic body of random HU (multiples of step)."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:rows, :rows]
    body = ((rr - 0.55 * rows) / (0.3 * rows)) ** 2 + ((cc - 0.45 * rows) / (0.35 * rows)) ** 2 <= 1
    hu = np.full((n, rows, rows), -1000.0)
    values = rng.integers(round(-300 / step), round(1500 / step), size=(n, rows, rows)) * step
    hu[:, body] = values[:, body]
    return hu


def make_series(folder: Path, name: str, *, n: int = 8, z=None, seed: int = 0, patient_id: str | None = None,
                for_uid: str | None = None, orientation=(1, 0, 0, 0, 1, 0), origin=ORIGIN, hu=None,
                **kw) -> Series:
    z = np.round(-10.0 + 2.5 * np.arange(n), 3) if z is None else np.asarray(z, dtype=np.float64)
    hu = body_volume(len(z), seed) if hu is None else hu
    pid = patient_id or f"PAT-{name}"
    study, series, fuid = uid(name, "study"), uid(name, "series"), for_uid or uid(name, "for")
    paths = write_ct_series(folder, hu, pixel_spacing=(SP, SP), slice_positions_mm=z, origin_xy_mm=origin,
                            patient_id=pid, study_uid=study, series_uid=series, frame_of_reference_uid=fuid,
                            orientation=orientation, provenance=DEMO_PROVENANCE, **kw)
    return Series(folder, paths, hu, z, pid, series, study, fuid, tuple(orientation), tuple(origin))


def pixel_centres(s) -> np.ndarray:
    """(128, 128, 3) patient mm of the model-grid pixel centres of an archive slice."""
    idx = np.arange(GRID_SIZE) * s.spacing_mm
    return (s.origin_mm[None, None, :] + idx[None, :, None] * s.row_dir[None, None, :]
            + idx[:, None, None] * s.col_dir[None, None, :])


def native_indices(s, ipp, row_dir, col_dir, spacing=(SP, SP)) -> tuple[np.ndarray, np.ndarray]:
    """Fractional native (row, col) of every model-grid pixel of archive slice ``s``."""
    rel = pixel_centres(s) - np.asarray(ipp, dtype=np.float64)
    return rel @ np.asarray(col_dir, float) / spacing[0], rel @ np.asarray(row_dir, float) / spacing[1]


def expected_copy(s, ipp, native: np.ndarray, row_dir, col_dir) -> np.ndarray:
    """The model-grid slice expected when native pixels of 3.906 mm are copied (-1024 outside the scan)."""
    r, c = native_indices(s, ipp, row_dir, col_dir)
    ri, ci = np.rint(r), np.rint(c)
    assert np.abs(r - ri).max() < 1e-3 and np.abs(c - ci).max() < 1e-3, "grid not on the native lattice"
    inside = (ri >= 0) & (ri < native.shape[0]) & (ci >= 0) & (ci < native.shape[1])
    out = np.full((GRID_SIZE, GRID_SIZE), -1024.0)
    out[inside] = native[ri[inside].astype(int), ci[inside].astype(int)]
    return out


def ipp_of(path: Path) -> np.ndarray:
    return np.array([float(v) for v in pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient])


def counts(arch: Archive) -> dict:
    info = arch.info()
    return {k: info[k] for k in COUNT_KEYS}


def problems_for(report, path: Path, level: str | None = None) -> list:
    return [p for p in report.problems if p.path == str(path) and (level is None or p.level == level)]


def ramp(points: np.ndarray, coef=(20.0, 0.05, -0.04, 0.3)) -> np.ndarray:
    a, b, c, d = coef
    return a + b * points[..., 0] + c * points[..., 1] + d * points[..., 2]


def dose_box(origin, spacing, shape, offsets):
    """Patient coordinates (frames, rows, cols, 3) of an axial dose grid's voxel centres."""
    f, r, c = np.meshgrid(np.asarray(offsets, float), np.arange(shape[0]) * spacing[0],
                          np.arange(shape[1]) * spacing[1], indexing="ij")
    return np.stack([origin[0] + c, origin[1] + r, origin[2] + f], axis=-1)


def dose_fractional(points, origin, spacing, shape, offsets):
    """Fractional (frame offset mm, row, col) of patient points on an axial dose grid."""
    rel = points - np.asarray(origin, float)
    return rel[..., 2], rel[..., 1] / spacing[0], rel[..., 0] / spacing[1]


def assert_dose_is_ramp(arch: Archive, pid: str, origin, spacing, shape, offsets, coef=(20.0, 0.05, -0.04, 0.3)):
    """Every archive slice of ``pid``: ramp at the pixel centres inside the dose grid, exactly 0 outside."""
    n_in = n_out = 0
    for s in arch.slices(pid):
        assert s.has_dose
        pts = pixel_centres(s)
        w, r, c = dose_fractional(pts, origin, spacing, shape, offsets)
        lim = [(w, offsets[-1]), (r, shape[0] - 1), (c, shape[1] - 1)]   # mm, rows, columns
        inside = np.all([(v >= 0) & (v <= hi) for v, hi in lim], axis=0)
        # the test geometry keeps every pixel centre clearly inside or outside (no tolerance question)
        near_box = np.all([(v > -0.05) & (v < hi + 0.05) for v, hi in lim], axis=0)
        near_edge = np.any([(np.abs(v) < 0.05) | (np.abs(v - hi) < 0.05) for v, hi in lim], axis=0)
        assert not (near_box & near_edge).any()
        np.testing.assert_allclose(s.dose[inside], ramp(pts[inside], coef), atol=1e-3, rtol=0)
        assert np.all(s.dose[~inside] == 0.0)
        n_in += int(inside.sum())
        n_out += int((~inside).sum())
    assert n_in > 1000 and n_out > 1000


# ------------------------------------------------------------------------------------------ 1
def test_pydicom_ct_small_and_rtdose(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ct_file = Path(shutil.copy(get_testdata_file("CT_small.dcm"), src / "CT_small.dcm"))
    rd_file = Path(shutil.copy(get_testdata_file("rtdose.dcm"), src / "rtdose.dcm"))
    arch = Archive(tmp_path / "arch", create=True)
    rep = ingest(arch, [src])
    assert rep.series_added == 1 and rep.slices_added == 1 and rep.patients == ["1CT1"]
    assert rep.exit_code == 1  # partial: the dose could not be used
    assert [p.path for p in rep.errors] == [str(rd_file)]
    assert "matches no CT series" in rep.errors[0].message
    info = arch.info()
    assert (info["patients"], info["series"], info["slices"], info["slices_with_dose"]) == (1, 1, 1, 0)
    s = arch.get("1CT1", 0)
    ds = pydicom.dcmread(ct_file)
    assert s.z_mm == pytest.approx(float(ds.ImagePositionPatient[2]))
    assert s.dose is None and s.structures == []
    # native HU: stored x slope + intercept, exactly
    found = scan([src])
    (series_uid, items), = found.ct.items()
    ct = read_ct_series(series_uid, items)
    assert ct.hu.shape == (1, 128, 128) and ct.patient_id == "1CT1"
    np.testing.assert_array_equal(ct.hu[0], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    # resampled from 0.66 mm pixels: same picture, same mean HU, -1024 beyond the 85 mm field of view
    hu = ct.hu[0]
    r, c = native_indices(s, np.array([float(v) for v in ds.ImagePositionPatient]), ct.geometry.row_dir,
                          ct.geometry.col_dir, ct.geometry.spacing)
    inner = (r >= 6) & (r <= 121) & (c >= 6) & (c <= 121)
    outer = (r < -6) | (r > 133) | (c < -6) | (c > 133)
    assert inner.sum() > 300 and outer.sum() > 10000
    assert s.ct[inner].mean() == pytest.approx(hu[6:122, 6:122].mean(), abs=15)
    near = hu[np.rint(r[inner]).astype(int), np.rint(c[inner]).astype(int)]
    assert np.corrcoef(s.ct[inner], near)[0, 1] > 0.9
    assert np.all(s.ct[outer] == -1024.0)
    # no patient name anywhere in the archive
    for f in (tmp_path / "arch").rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert b"CompressedSamples" not in data and b"Lastname" not in data, f


def test_relative_dose_units_are_refused_naming_the_element(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "CT_small.dcm")
    ct_for = pydicom.dcmread(src / "CT_small.dcm", stop_before_pixels=True).FrameOfReferenceUID
    rd = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    assert rd.DoseUnits == "RELATIVE"
    rd.FrameOfReferenceUID = ct_for
    rd.save_as(src / "rd.dcm")
    arch = Archive(tmp_path / "arch", create=True)
    rep = ingest(arch, [src])
    assert rep.exit_code == 1 and rep.series_added == 1
    err, = problems_for(rep, src / "rd.dcm", "error")
    assert "(3004,0002)" in err.message and "'RELATIVE'" in err.message
    assert arch.info()["slices_with_dose"] == 0


# ------------------------------------------------------------------------------------------ 2
def test_slices_ordered_by_position_not_file_name_or_instance_number(tmp_path):
    n = 9
    rng = np.random.default_rng(5)
    names = [f"IM{v:04d}.dcm" for v in rng.permutation(n)]
    numbers = [int(v) + 1 for v in rng.permutation(n)]
    assert sorted(names) != names and numbers != sorted(numbers)
    z = np.round(-31.25 + 2.5 * np.arange(n), 3)
    ser = make_series(tmp_path / "ct", "shuffled", z=z, seed=1, file_names=names, instance_numbers=numbers)
    arch = Archive(tmp_path / "arch", create=True)
    rep = ingest(arch, [ser.folder])
    assert rep.exit_code == 0 and rep.problems == [] and rep.slices_added == n
    slices = arch.slices(ser.patient_id)
    assert [s.slice_index for s in slices] == list(range(n))
    np.testing.assert_allclose([s.z_mm for s in slices], z, atol=1e-9)
    assert np.all(np.diff([s.z_mm for s in slices]) > 0)
    for k, s in enumerate(slices):
        ipp = ipp_of(ser.paths[k])
        assert ipp[2] == pytest.approx(z[k])
        exp = expected_copy(s, ipp, ser.hu[k], (1, 0, 0), (0, 1, 0))
        np.testing.assert_array_equal(s.ct, exp)
        assert (exp == -1024).any() and (exp > -500).sum() > 200  # both the padding and the body are seen


# ------------------------------------------------------------------------------------------ 3
@pytest.mark.parametrize("slope, intercept", [(0.5, -1000.0), (0.25, 0.0)])
def test_hu_round_trip_with_rescale(tmp_path, slope, intercept):
    n = 4
    hu = body_volume(n, seed=3, step=slope)
    assert np.any(hu % 1 != 0)  # fractional HU are present
    ser = make_series(tmp_path / "ct", f"rescale{slope}", n=n, hu=hu, rescale_slope=slope,
                      rescale_intercept=intercept)
    ds = pydicom.dcmread(ser.paths[0])
    assert float(ds.RescaleSlope) == slope and float(ds.RescaleIntercept) == intercept
    assert ds.PixelRepresentation == (1 if intercept == 0.0 else 0)
    found = scan([ser.folder])
    ct = read_ct_series(ser.series_uid, found.ct[ser.series_uid])
    assert ct.hu.dtype == np.float32
    np.testing.assert_array_equal(ct.hu, hu)  # exact native HU
    np.testing.assert_allclose(ct.z_mm, ser.z)
    arch = Archive(tmp_path / "arch", create=True)
    assert ingest(arch, [ser.folder]).exit_code == 0
    for k, s in enumerate(arch.slices(ser.patient_id)):
        exp = expected_copy(s, ipp_of(ser.paths[k]), np.rint(hu[k]), (1, 0, 0), (0, 1, 0))
        np.testing.assert_array_equal(s.ct, exp)  # the archive keeps whole HU (rounded)


# ------------------------------------------------------------------------------------------ 4
def test_file_order_reverse_of_position_order(tmp_path):
    n = 7
    z = np.round(40.0 - 3.0 * np.arange(n), 3)[::-1]                # increasing positions
    names = [f"slice{n - 1 - k:02d}.dcm" for k in range(n)]          # file index 0 = highest z
    ser = make_series(tmp_path / "ct", "reverse", z=z, seed=4, file_names=names,
                      instance_numbers=[n - k for k in range(n)])
    by_name = sorted(ser.folder.iterdir())
    assert np.all(np.diff([ipp_of(p)[2] for p in by_name]) < 0)       # z decreases with file index
    arch = Archive(tmp_path / "arch", create=True)
    assert ingest(arch, [ser.folder]).exit_code == 0
    slices = arch.slices(ser.patient_id)
    np.testing.assert_allclose([s.z_mm for s in slices], z)
    for k, s in enumerate(slices):
        np.testing.assert_array_equal(s.ct, expected_copy(s, ipp_of(ser.paths[k]), ser.hu[k], (1, 0, 0), (0, 1, 0)))


def test_tilted_orientation_keeps_native_axes_and_positions(tmp_path):
    t = np.deg2rad(20.0)
    orientation = (1.0, 0.0, 0.0, 0.0, float(np.cos(t)), float(np.sin(t)))
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    n = 6
    z = np.round(5.0 + 2.0 * np.arange(n), 3)
    names = [f"t{v}.dcm" for v in (3, 0, 5, 1, 4, 2)]
    ser = make_series(tmp_path / "ct", "tilted", z=z, seed=6, orientation=orientation, origin=(-120.3, -98.7, 12.0),
                      file_names=names)
    arch = Archive(tmp_path / "arch", create=True)
    assert ingest(arch, [ser.folder]).exit_code == 0
    slices = arch.slices(ser.patient_id)
    assert len(slices) == n
    for k, s in enumerate(slices):
        ipp = ipp_of(ser.paths[k])
        np.testing.assert_allclose(s.row_dir, row_dir, atol=1e-6)
        np.testing.assert_allclose(s.col_dir, col_dir, atol=1e-6)
        assert s.z_mm == pytest.approx(float(ipp @ normal), abs=1e-6)
        assert float((s.origin_mm - ipp) @ normal) == pytest.approx(0.0, abs=1e-6)  # grid in the slice plane
        np.testing.assert_array_equal(s.ct, expected_copy(s, ipp, ser.hu[k], row_dir, col_dir))
    assert np.all(np.diff([s.z_mm for s in slices]) == pytest.approx(2.0))


# ------------------------------------------------------------------------------------------ 5
DOSE_ORIGIN = (-60.37, -20.11, -6.7)
DOSE_SPACING = (4.7, 5.3)       # (row spacing = along y, column spacing = along x): different on purpose
DOSE_SHAPE = (19, 18)           # (rows, cols)
DOSE_OFFSETS = (0.0, 3.7, 7.4, 12.0, 14.8)  # not uniform, not on CT slices (CT z = -10, -7.5, ..., 17.5)


def write_ramp_dose(path: Path, ser: Series, *, coef=(20.0, 0.05, -0.04, 0.3), origin=DOSE_ORIGIN,
                    spacing=DOSE_SPACING, shape=DOSE_SHAPE, offsets=DOSE_OFFSETS, **kw) -> Path:
    dose = ramp(dose_box(origin, spacing, shape, offsets), coef)
    assert dose.min() > 0
    return write_rtdose(path, dose, origin_mm=origin, pixel_spacing=spacing, frame_offsets_mm=offsets,
                        frame_of_reference_uid=ser.for_uid, patient_id=ser.patient_id, study_uid=ser.study_uid,
                        provenance=DEMO_PROVENANCE, **kw)


@pytest.mark.parametrize("absolute", [False, True], ids=["relative-offsets", "absolute-offsets"])
def test_dose_resampled_from_coarser_offset_grid_is_the_analytic_ramp(tmp_path, absolute):
    ser = make_series(tmp_path / "src", "dose", n=12, seed=7)
    rd = write_ramp_dose(tmp_path / "src" / "RD.dcm", ser, absolute_offsets=absolute)
    gfov = [float(v) for v in pydicom.dcmread(rd, stop_before_pixels=True).GridFrameOffsetVector]
    assert (gfov[0] == 0.0) != absolute
    arch = Archive(tmp_path / "arch", create=True)
    rep = ingest(arch, [tmp_path / "src"])
    assert rep.exit_code == 0 and rep.problems == []
    assert arch.info()["slices_with_dose"] == 12
    assert_dose_is_ramp(arch, ser.patient_id, DOSE_ORIGIN, DOSE_SPACING, DOSE_SHAPE, DOSE_OFFSETS)
    # slices beyond the dose frames have no dose at all; those inside have some
    z_lo, z_hi = DOSE_ORIGIN[2], DOSE_ORIGIN[2] + DOSE_OFFSETS[-1]
    for s in arch.slices(ser.patient_id):
        assert (s.dose.max() > 0) == (z_lo <= s.z_mm <= z_hi)


@pytest.mark.parametrize("case", ["axial", "transposed", "flipped", "one-frame", "tilted"])
def test_dose_plane_sampling_fast_path_equals_the_trilinear_lookup(case):
    """DoseGrid.sample_planes takes a separable path (two weight matrices per plane) when the planes lie
    along the dose grid's axes; its values are those of the per-pixel trilinear lookup, planes and pixels
    outside the grid included (0 Gy), for same, transposed and flipped in-plane axes and a one-frame
    grid. A tilted plane takes the general path."""
    from medhash.core.grid import PlaneGeometry
    from medhash.io.dicom import DoseGrid
    rng = np.random.default_rng(3)
    nf = 1 if case == "one-frame" else 9
    gy = rng.uniform(0, 70, size=(nf, 23, 31)).astype(np.float32)
    x, y, z = np.eye(3)
    grid = DoseGrid(gy=gy, origin=np.array([-40.0, -30.0, 10.0]),
                    geometry=PlaneGeometry(row_dir=x, col_dir=y, spacing=(2.5, 3.0), shape=gy.shape[1:]),
                    offsets=np.array([0.0]) if nf == 1 else np.cumsum(np.r_[0.0, rng.uniform(2, 4, nf - 1)]))
    row_dir, col_dir = {"transposed": (y, x), "flipped": (-x, y)}.get(case, (x, y))
    if case == "tilted":
        row_dir = np.array([np.cos(0.1), np.sin(0.1), 0.0])
        col_dir = np.array([-np.sin(0.1), np.cos(0.1), 0.0])
    zs = grid.origin[2] + np.r_[-1.0, 0.0, 0.3, grid.offsets[-1] / 2, grid.offsets[-1], grid.offsets[-1] + 1]
    x0 = 20.0 if case == "flipped" else -70.0  # the planes run to -x from there
    origins = np.stack([np.array([x0 + 3 * k, -50.0 + 2 * k, z_]) for k, z_ in enumerate(zs)])
    separable = DoseGrid._sample_planes_separable
    calls = []

    def spy(self, *args):
        out = separable(self, *args)
        calls.append(out is not None)
        return out
    DoseGrid._sample_planes_separable = spy
    try:
        fast = grid.sample_planes(origins, row_dir, col_dir, 64, 1.7)
        DoseGrid._sample_planes_separable = lambda self, *args: None
        slow = grid.sample_planes(origins, row_dir, col_dir, 64, 1.7)
    finally:
        DoseGrid._sample_planes_separable = separable
    assert calls == [case != "tilted"]
    assert fast.shape == slow.shape == (len(zs), 64, 64)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-4)
    assert np.array_equal(fast > 0, slow > 0)
    assert (slow > 0).any() and (slow == 0).any()  # inside and outside the grid both met
    if nf > 1:
        assert not slow[0].any() and not slow[-1].any() and slow[1].any()  # frames: outside, edge


# ------------------------------------------------------------------------------------------ 6
def test_plan_dose_preferred_over_beam_and_the_ignored_file_named(tmp_path):
    src = tmp_path / "src"
    ser = make_series(src, "plan", n=12, seed=8)
    # the BEAM grid is larger (the size rule alone would pick it) and sorts first by name
    beam = write_ramp_dose(src / "RD_0_beam.dcm", ser, coef=(100.0, 0.0, 0.0, 0.0), origin=(-110.0, -90.0, -12.0),
                           spacing=(3.0, 3.0), shape=(80, 80), offsets=tuple(3.0 * np.arange(14)),
                           summation_type="BEAM")
    plan = write_ramp_dose(src / "RD_1_plan.dcm", ser, summation_type="PLAN")
    arch = Archive(tmp_path / "arch", create=True)
    rep = ingest(arch, [src])
    assert rep.exit_code == 0 and rep.errors == []
    warn, = [p for p in rep.warnings if "RTDOSE" in p.message]
    assert warn.path == str(plan) and str(beam) in warn.message and "PLAN" in warn.message
    assert_dose_is_ramp(arch, ser.patient_id, DOSE_ORIGIN, DOSE_SPACING, DOSE_SHAPE, DOSE_OFFSETS)
    assert max(float(s.dose.max()) for s in arch.slices(ser.patient_id)) < 50  # never the 100 Gy BEAM dose
    with sqlite3.connect(tmp_path / "arch" / "catalog.sqlite") as con:
        (info,), = con.execute("SELECT info FROM series").fetchall()
    assert json.loads(info)["dose"]["summation_type"] == "PLAN"


def test_dose_problems_reported_once_for_series_sharing_a_frame_of_reference(tmp_path):
    src = tmp_path / "src"
    shared = uid("shared-for")
    a = make_series(src / "a", "shareA", n=6, seed=21, patient_id="SHARE", for_uid=shared)
    b = make_series(src / "b", "shareB", n=6, seed=22, patient_id="SHARE", for_uid=shared, origin=(-110.0, -90.0))
    beam = write_ramp_dose(src / "RD_beam.dcm", a, coef=(100.0, 0.0, 0.0, 0.0), summation_type="BEAM")
    plan = write_ramp_dose(src / "RD_plan.dcm", a, summation_type="PLAN")
    arch = Archive(tmp_path / "arch", create=True)
    rep = ingest(arch, [src])
    assert rep.errors == [] and rep.series_added == 2
    dose_warnings = [p for p in rep.warnings if "RTDOSE" in p.message]
    assert len(dose_warnings) == 1 and dose_warnings[0].path == str(plan) and str(beam) in dose_warnings[0].message
    for pid in ("SHARE", "SHARE.2"):   # both series get the PLAN dose, sampled on their own grids
        assert_dose_is_ramp(arch, pid, DOSE_ORIGIN, DOSE_SPACING, DOSE_SHAPE, DOSE_OFFSETS)
    # an unusable RTDOSE: one error, both CT series still ingested (without dose)
    beam.unlink()
    ds = pydicom.dcmread(plan)
    ds.DoseUnits = "CGY"
    ds.save_as(plan)
    arch2 = Archive(tmp_path / "arch2", create=True)
    rep2 = ingest(arch2, [src])
    assert rep2.series_added == 2 and rep2.exit_code == 1
    err, = rep2.errors
    assert err.path == str(plan) and "'CGY'" in err.message
    assert arch2.info()["slices_with_dose"] == 0


# ------------------------------------------------------------------------------------------ 7
def test_phantom_rois_become_masks_matching_the_analytic_ptv(tmp_path):
    ph = make_phantom(2, rows=64)
    write_phantom(ph, tmp_path / "src")
    arch = Archive(tmp_path / "arch", create=True)
    rep = ingest(arch, [tmp_path / "src"])
    assert rep.exit_code == 0 and rep.errors == []
    assert set(arch.info()["structures"]) == set(ROI_NAMES)
    contour_z = {name: {round(float(c[0, 2]), 2) for c in cs} for name, cs in ph.contours.items()}
    (cx, cy, cz), (rx, ry, rz) = ph.ptv_centre_mm, ph.ptv_radii_mm
    ptv_pixels = 0
    for s in arch.slices(ph.patient_id):
        assert s.z_mm == pytest.approx(ph.slice_positions_mm[s.slice_index])
        for name in s.structures:
            assert round(s.z_mm, 2) in contour_z[name], (name, s.z_mm)
        if round(s.z_mm, 2) not in contour_z["PTV70"]:
            assert "PTV70" not in s.masks
            continue
        sec = np.sqrt(1 - ((s.z_mm - cz) / rz) ** 2)
        pts = pixel_centres(s)
        rho = np.hypot((pts[..., 0] - cx) / (rx * sec), (pts[..., 1] - cy) / (ry * sec))
        mask = s.masks.get("PTV70", np.zeros((GRID_SIZE, GRID_SIZE), bool))
        # a 48-gon inscribed in the ellipse, vertices rounded to 0.01 mm
        assert not (mask & (rho > 1.003)).any()
        assert mask[rho < np.cos(np.pi / 48) - 0.003].all()
        ptv_pixels += int(mask.sum())
    assert ptv_pixels > 50


def _circle(cx, cy, r, z, n=360):
    t = 2 * np.pi * np.arange(n) / n
    return np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t), np.full(n, z)])


def test_rtstruct_square_circle_and_ring(tmp_path):
    src = tmp_path / "src"
    ser = make_series(src, "rois", n=6, seed=9)                    # z = -10 ... 2.5
    x0, x1, y0, y1, zsq = -20.3, 41.2, -10.6, 30.9, -5.0
    square = np.array([[x0, y0, zsq], [x1, y0, zsq], [x1, y1, zsq], [x0, y1, zsq]])
    circle = (10.2, 60.4, 30.0, -2.5)
    ring = (0.7, 40.3, 40.0, 18.0, 0.0)
    rois = {
        "Square": [square, square + [0, 0, 100.0]],                # the second one lies on no CT slice
        "Circle": [_circle(*circle)],
        "Ring": [_circle(ring[0], ring[1], ring[3], ring[4]), _circle(ring[0], ring[1], ring[2], ring[4])],
    }
    write_rtstruct(src / "RS.dcm", rois, ct_files_or_uids=ser.paths, frame_of_reference_uid=ser.for_uid,
                   patient_id=ser.patient_id, study_uid=ser.study_uid, series_uid_of_ct=ser.series_uid,
                   provenance=DEMO_PROVENANCE)
    arch = Archive(tmp_path / "arch", create=True)
    rep = ingest(arch, [src])
    assert rep.exit_code == 0 and rep.errors == []
    off, = [p for p in rep.warnings if "lie on no CT slice" in p.message]
    assert off.path == str(src / "RS.dcm") and off.message.startswith("1 contour")
    assert arch.info()["structures"] == {"Square": 1, "Circle": 1, "Ring": 1}
    by_z = {round(s.z_mm, 3): s for s in arch.slices(ser.patient_id)}
    area_px = SP * SP

    s = by_z[zsq]
    assert s.structures == ["Square"]
    p = pixel_centres(s)
    exact = (p[..., 0] > x0) & (p[..., 0] < x1) & (p[..., 1] > y0) & (p[..., 1] < y1)
    edge = np.minimum.reduce([np.abs(p[..., 0] - x0), np.abs(p[..., 0] - x1), np.abs(p[..., 1] - y0),
                              np.abs(p[..., 1] - y1)])
    assert edge[exact].min() > 0.05                                   # no pixel centre on an edge
    np.testing.assert_array_equal(s.masks["Square"], exact)
    area, perim = (x1 - x0) * (y1 - y0), 2 * (x1 - x0 + y1 - y0)
    assert abs(exact.sum() - area / area_px) <= perim / SP / 2

    cx, cy, r, zc = circle
    s = by_z[zc]
    assert s.structures == ["Circle"]
    p = pixel_centres(s)
    d = np.hypot(p[..., 0] - cx, p[..., 1] - cy)
    m = s.masks["Circle"]
    assert abs(m.sum() - np.pi * r * r / area_px) <= 2 * np.pi * r / SP / 2
    assert m[d < r - 0.02].all() and not m[d > r].any()
    centroid = p[m].mean(axis=0)
    assert np.hypot(centroid[0] - cx, centroid[1] - cy) < SP / 2

    cx, cy, ro, ri, zr = ring
    s = by_z[zr]
    assert s.structures == ["Ring"]
    p = pixel_centres(s)
    d = np.hypot(p[..., 0] - cx, p[..., 1] - cy)
    m = s.masks["Ring"]
    assert not m[d < ri - 0.02].any(), "the inner contour must make a hole"
    assert m[(d > ri) & (d < ro - 0.02)].all() and not m[d > ro].any()
    ring_area = np.pi * (ro ** 2 - ri ** 2)
    assert abs(m.sum() - ring_area / area_px) <= 2 * np.pi * (ro + ri) / SP / 2


# ------------------------------------------------------------------------------------------ 8
@pytest.fixture
def base(tmp_path):
    """An archive holding one good series, and a snapshot of it."""
    ser = make_series(tmp_path / "base", "BASE", n=6, seed=10)
    write_ramp_dose(tmp_path / "base" / "RD.dcm", ser)
    arch = Archive(tmp_path / "arch", create=True)
    assert ingest(arch, [ser.folder]).exit_code == 0
    snap = {"counts": counts(arch), "ct": [s.ct.copy() for s in arch.slices(ser.patient_id)],
            "dose": [s.dose.copy() for s in arch.slices(ser.patient_id)]}
    assert snap["counts"]["slices"] == 6 and snap["counts"]["slices_with_dose"] == 6
    return arch, ser, snap


def assert_base_kept(arch: Archive, ser: Series, snap: dict, *, added_series: int, added_slices: int) -> None:
    reopened = Archive(arch.path)
    now = counts(reopened)
    assert now["series"] == snap["counts"]["series"] + added_series
    assert now["slices"] == snap["counts"]["slices"] + added_slices
    assert now["slices_with_dose"] == snap["counts"]["slices_with_dose"]
    slices = reopened.slices(ser.patient_id)
    assert len(slices) == len(snap["ct"])
    for s, ct, dose in zip(slices, snap["ct"], snap["dose"]):
        np.testing.assert_array_equal(s.ct, ct)
        np.testing.assert_array_equal(s.dose, dose)


def test_non_dicom_files_next_to_a_good_series(base, tmp_path):
    arch, bser, snap = base
    src = tmp_path / "mixed"
    good = make_series(src, "GOOD", n=5, seed=11)
    bad = {src / "notes.txt": b"exported by hand\n", src / "preview.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
           src / "empty.dcm": b""}
    for p, data in bad.items():
        p.write_bytes(data)
    rep = ingest(arch, [src])
    assert rep.exit_code == 1 and rep.series_added == 1 and rep.slices_added == 5
    for p in bad:
        err, = problems_for(rep, p, "error")
        assert "not a DICOM file" in err.message
    assert len(rep.errors) == 3
    assert_base_kept(arch, bser, snap, added_series=1, added_slices=5)
    for k, s in enumerate(arch.slices(good.patient_id)):
        np.testing.assert_array_equal(s.ct, expected_copy(s, ipp_of(good.paths[k]), good.hu[k], (1, 0, 0), (0, 1, 0)))


def test_dicomdir_is_skipped_silently(tmp_path):
    src = tmp_path / "src"
    good = make_series(src, "GOOD", n=4, seed=20)
    shutil.copy(get_testdata_file("DICOMDIR"), src / "DICOMDIR")
    arch = Archive(tmp_path / "arch", create=True)
    rep = ingest(arch, [src])
    assert rep.problems == [] and rep.exit_code == 0 and rep.series_added == 1
    assert len(arch.slices(good.patient_id)) == 4


def test_truncated_pixel_data_reports_the_slice_and_keeps_the_rest(base, tmp_path):
    arch, bser, snap = base
    src = tmp_path / "trunc"
    good = make_series(src, "GOOD", n=7, seed=12)
    victim = good.paths[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    rep = ingest(arch, [src])
    assert rep.exit_code == 1 and rep.series_added == 1 and rep.slices_added == 6
    err, = problems_for(rep, victim, "error")
    assert "truncated" in err.message
    missing = [p for p in rep.warnings if "missing" in p.message and "is incomplete" not in p.message]
    assert len(missing) == 1 and "z = -5.00 mm and z = 0.00 mm" in missing[0].message
    (inc,) = [p for p in rep.warnings if "is incomplete" in p.message]
    assert "6 of 7 instances" in inc.message and arch.incomplete_series()[-1]["present"] == 6
    kept = [k for k in range(7) if k != 3]
    slices = arch.slices(good.patient_id)
    np.testing.assert_allclose([s.z_mm for s in slices], good.z[kept])
    for k, s in zip(kept, slices):
        np.testing.assert_array_equal(s.ct, expected_copy(s, ipp_of(good.paths[k]), good.hu[k], (1, 0, 0), (0, 1, 0)))
    assert_base_kept(arch, bser, snap, added_series=1, added_slices=6)


def _header_end(path: Path) -> int:
    """Byte offset where the PixelData element starts."""
    data = path.read_bytes()
    pos = data.rfind(b"\xe0\x7f\x10\x00")
    assert pos > 0
    return pos


# where the file is cut (in the middle of this element's tag) -> what the message must name
HEADER_CUTS = {
    "early-file-meta": (b"\x02\x00\x02\x00", "(0008,0016)"),    # cut at (0002,0002): nothing is left
    "file-meta": (b"\x02\x00\x10\x00", "(0020,000E)"),          # cut at (0002,0010): no data set
    "before-series-uid": (b"\x20\x00\x0e\x00", "(0020,000E)"),  # Series Instance UID
    "before-position": (b"\x20\x00\x32\x00", "(0020,003"),      # Image Position / Orientation
    "late-header": (b"\x28\x00\x30\x00", "(0028,0030)"),        # Pixel Spacing
}


@pytest.mark.parametrize("where", list(HEADER_CUTS))
def test_file_truncated_inside_the_header_is_reported_by_name(base, tmp_path, where):
    arch, bser, snap = base
    src = tmp_path / "trunc"
    good = make_series(src, "GOOD", n=7, seed=13)
    victim = good.paths[6]
    data = victim.read_bytes()
    tag, element = HEADER_CUTS[where]
    cut = data.find(tag) + 2
    assert 132 < cut < _header_end(victim)
    victim.write_bytes(data[:cut])
    rep = ingest(arch, [src])
    assert rep.exit_code == 1 and rep.series_added == 1 and rep.slices_added == 6
    assert len(rep.problems) == 1, rep.problems            # nothing anonymous like "(sources): unknown x1"
    err, = problems_for(rep, victim, "error")
    assert element in err.message and ("missing" in err.message or "truncated" in err.message)
    np.testing.assert_allclose([s.z_mm for s in arch.slices(good.patient_id)], good.z[:6])
    assert_base_kept(arch, bser, snap, added_series=1, added_slices=6)


def test_missing_slice_and_uneven_spacing_warnings(base, tmp_path):
    arch, bser, snap = base
    gap = make_series(tmp_path / "src" / "gap", "GAP", z=[0, 2.5, 5, 10, 12.5, 15], seed=14)
    uneven = make_series(tmp_path / "src" / "uneven", "UNEVEN", z=[0, 2.5, 5, 7.5, 9.5, 12, 14.5], seed=15)
    rep = ingest(arch, [tmp_path / "src"])
    assert rep.exit_code == 0 and rep.errors == [] and rep.series_added == 2
    w_gap = [p for p in rep.warnings if gap.series_uid in p.message and "is incomplete" not in p.message]
    assert len(w_gap) == 1 and "missing" in w_gap[0].message
    (inc,) = [p for p in rep.warnings if gap.series_uid in p.message and "is incomplete" in p.message]
    assert "6 of 7 instances (1 slice position(s) missing in gaps along z" in inc.message
    assert "z = 5.00 mm and z = 10.00 mm" in w_gap[0].message and w_gap[0].path == str(gap.paths[3])
    w_un = [p for p in rep.warnings if uneven.series_uid in p.message]
    assert len(w_un) == 1 and "uneven" in w_un[0].message and "missing" not in w_un[0].message
    assert "7.50" in w_un[0].message and "9.50" in w_un[0].message
    np.testing.assert_allclose([s.z_mm for s in arch.slices(gap.patient_id)], gap.z)
    np.testing.assert_allclose([s.z_mm for s in arch.slices(uneven.patient_id)], uneven.z)
    assert_base_kept(arch, bser, snap, added_series=2, added_slices=13)


def test_rtdose_without_its_ct(base, tmp_path):
    arch, bser, snap = base
    src = tmp_path / "src"
    good = make_series(src, "GOOD", n=5, seed=16)
    orphan = make_series(tmp_path / "elsewhere", "ORPHAN", n=5, seed=17)
    rd = write_ramp_dose(src / "RD_orphan.dcm", orphan)
    rep = ingest(arch, [src])
    assert rep.exit_code == 1 and rep.series_added == 1
    err, = rep.errors
    assert err.path == str(rd) and "matches no CT series" in err.message and orphan.for_uid in err.message
    assert all(not s.has_dose for s in arch.slices(good.patient_id))
    assert_base_kept(arch, bser, snap, added_series=1, added_slices=5)


def test_empty_folder_cli_exit_code_4(base, tmp_path, capsys):
    arch, bser, snap = base
    empty = tmp_path / "empty"
    empty.mkdir()
    code = cli_main(["ingest", str(empty), "--archive", str(arch.path), "--no-progress"])
    out = capsys.readouterr()
    assert code == 4
    assert f"{empty}: folder is empty" in out.err and "nothing was ingested" in out.err
    assert_base_kept(arch, bser, snap, added_series=0, added_slices=0)


def test_slice_without_image_position(base, tmp_path):
    arch, bser, snap = base
    src = tmp_path / "src"
    good = make_series(src, "GOOD", n=6, seed=18)
    victim = good.paths[0]
    ds = pydicom.dcmread(victim)
    del ds.ImagePositionPatient
    ds.save_as(victim)
    rep = ingest(arch, [src])
    assert rep.exit_code == 1 and rep.series_added == 1 and rep.slices_added == 5
    err, = problems_for(rep, victim, "error")
    assert "(0020,0032)" in err.message and "missing" in err.message
    np.testing.assert_allclose([s.z_mm for s in arch.slices(good.patient_id)], good.z[1:])
    assert_base_kept(arch, bser, snap, added_series=1, added_slices=5)


# ------------------------------------------------------------------------------------------ 9
def test_reingest_adds_nothing_and_second_series_gets_dot_2(tmp_path):
    ph = make_phantom(1, rows=64)
    write_phantom(ph, tmp_path / "first")
    arch = Archive(tmp_path / "arch", create=True)
    r1 = ingest(arch, [tmp_path / "first"])
    assert r1.exit_code == 0 and r1.series_added == 1
    before = counts(arch)
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "arch" / "arrays").iterdir()}
    r2 = ingest(arch, [tmp_path / "first"])
    assert (r2.series_added, r2.series_existing, r2.slices_added, r2.exit_code) == (0, 1, 0, 0)
    assert counts(arch) == before
    assert {p.name: p.stat().st_size for p in (tmp_path / "arch" / "arrays").iterdir()} == sizes

    second = make_series(tmp_path / "second", "second-ct", n=5, seed=19, patient_id=ph.patient_id)
    r3 = ingest(arch, [tmp_path / "second"])
    assert r3.exit_code == 0 and r3.patients == [f"{ph.patient_id}.2"]
    warn, = [p for p in r3.warnings if f"{ph.patient_id}.2" in p.message]
    assert warn.path == second.series_uid and "already has a CT series" in warn.message
    assert arch.patients() == [ph.patient_id, f"{ph.patient_id}.2"]
    assert len(arch.slices(f"{ph.patient_id}.2")) == 5
    assert len(arch.slices(ph.patient_id)) == before["slices"]
    after = counts(arch)
    r4 = ingest(arch, [tmp_path / "first", tmp_path / "second"])
    assert (r4.series_added, r4.series_existing) == (0, 2) and counts(arch) == after


# ------------------------------------------------------------------------------------------ 10
def test_demo_cohort_ingests_with_dose_structures_and_air(tmp_path):
    folders = write_demo_cohort(tmp_path / "demo", n_patients=2, rows=96)
    arch = Archive(tmp_path / "arch", create=True)
    rep = ingest(arch, [tmp_path / "demo"])
    assert rep.errors == [] and rep.exit_code == 0 and rep.series_added == 2
    info = arch.info()
    assert info["slices_with_dose"] == info["slices"] > 0
    assert set(info["structures"]) == set(ROI_NAMES)
    n_air = n_pad = 0
    for i, folder in enumerate(folders):
        ph = make_phantom(i, rows=96)
        slices = arch.slices(ph.patient_id)
        assert len(slices) == len(ph.slice_positions_mm)
        ptv_dose = np.concatenate([s.dose[s.masks["PTV70"]] for s in slices if "PTV70" in s.masks])
        assert ptv_dose.mean() > 60 and ptv_dose.max() == pytest.approx(70.0, abs=0.05)
        assert max(float(s.dose.max()) for s in slices) == pytest.approx(70.0, abs=0.05)
        far_from_body = ~ndimage.binary_dilation(ph.masks["BODY"], iterations=3)
        rows = ph.hu.shape[1]
        for s in slices:
            k = s.slice_index
            ipp = (ph.origin_xy_mm[0], ph.origin_xy_mm[1], ph.slice_positions_mm[k])
            r, c = native_indices(s, ipp, (1, 0, 0), (0, 1, 0), ph.pixel_spacing)
            in_fov = (r >= 1) & (r <= rows - 2) & (c >= 1) & (c <= rows - 2)
            ri, ci = np.clip(np.rint(r), 0, rows - 1).astype(int), np.clip(np.rint(c), 0, rows - 1).astype(int)
            air = in_fov & far_from_body[k][ri, ci]
            pad = (r < -1.5) | (r > rows + 0.5) | (c < -1.5) | (c > rows + 0.5)
            assert np.all(s.ct[air] == -1000.0)   # the phantom's air inside the CT field of view
            assert np.all(s.ct[pad] == -1024.0)   # model-grid padding outside it
            assert np.all(s.dose[pad] == 0.0)
            n_air += int(air.sum())
            n_pad += int(pad.sum())
            # a corner of the CT field of view, inside the model grid, is phantom air
            corner = (r >= 1) & (r <= 3) & (c >= 1) & (c <= 3)
            if corner.any():
                assert np.all(s.ct[corner] == -1000.0)
    assert n_air > 10000 and n_pad > 1000


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
@pytest.mark.parametrize("alloc,stored,signed,frames", [(16, 16, 1, 1), (16, 12, 1, 1), (16, 12, 0, 1),
                                                        (16, 16, 0, 1), (8, 8, 0, 1), (32, 32, 0, 3),
                                                        (32, 20, 1, 2), (16, 10, 0, 4)])
def test_native_pixels_decode_as_pydicom(syntax, alloc, stored, signed, frames):
    """The fast decoder gives pydicom's pixel_array exactly, garbage in the unused high bits included."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from medhash.io.dicom import native_pixels
    rng = np.random.default_rng([alloc, stored, signed, frames])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 5, 3, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = alloc, stored, stored - 1, signed
    if frames > 1:
        ds.NumberOfFrames = frames
    raw = rng.integers(0, 2 ** alloc, size=frames * 15, dtype=np.uint64).astype(f"<u{alloc // 8}")
    ds.PixelData = raw.tobytes() + (b"\0" if len(raw.tobytes()) % 2 else b"")
    ours = native_pixels(ds)
    assert ours is not None
    theirs = ds.pixel_array
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


def test_native_pixels_leaves_other_encodings_to_pydicom():
    from pydicom.dataset import Dataset, FileMetaDataset
    from medhash.io.dicom import native_pixels
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 2, 2, 1, 16, 16, 0
    ds.PixelData = bytes(8)
    for syntax in ("1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1.99"):
        ds.file_meta.TransferSyntaxUID = syntax  # big endian, JPEG, deflated
        assert native_pixels(ds) is None
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    assert native_pixels(ds) is not None
    ds.SamplesPerPixel = 3  # colour
    assert native_pixels(ds) is None
    ds.SamplesPerPixel = 1
    ds.PixelData = bytes(6)  # truncated: pydicom's error message says so
    assert native_pixels(ds) is None


# --------------------------------------------------------------------------------------------
# compressed transfer syntaxes (tests/compressed.py makes the copies)


@pytest.fixture(scope="module")
def demo_one(tmp_path_factory) -> Path:
    """One demo patient (64 x 64 CT, RTDOSE, RTSTRUCT) and the archive `medhash ingest` makes of it."""
    root = tmp_path_factory.mktemp("demo_one")
    write_demo_cohort(root / "dicom", n_patients=1, rows=64)
    arch = Archive(root / "archive", create=True)
    assert ingest(arch, [root / "dicom"]).errors == []
    return root


def test_every_accepted_compressed_syntax_has_a_decoder():
    """What `medhash listen` and `medhash pull` accept compressed, pydicom decodes here (the pylibjpeg
    packages of pyproject.toml are installed)."""
    from medhash.io.dicom import COMPRESSED_SYNTAXES, missing_decoder
    assert {uid: missing_decoder(uid) for uid in COMPRESSED_SYNTAXES} == {uid: None for uid in COMPRESSED_SYNTAXES}


@pytest.mark.parametrize("ct,dose", [("rle", "rle"), ("j2k", "rle"), ("jpeg-lossless", "rle"), ("jpeg-ls", "rle")])
def test_lossless_compressed_folder_ingests_as_the_uncompressed_one(demo_one, tmp_path, ct, dose):
    """CT (and the 32-bit RTDOSE, RLE) compressed losslessly: the archive is byte for byte the one of the
    uncompressed folder."""
    if reason := compressed.missing(ct):
        pytest.skip(reason)
    folder = compressed.compress_folder(demo_one / "dicom", tmp_path / "dicom", ct=ct, dose=dose)
    found = compressed.syntaxes(folder)
    assert found[("CT", compressed.SYNTAX[ct])] == 50  # every slice compressed: the test is about them
    if compressed.DCMTK["dcmcrle"] is not None:
        assert found[("RTDOSE", compressed.SYNTAX["rle"])] == 1  # and the dose (32 bits: dcmtk's RLE)
    arch = Archive(tmp_path / "archive", create=True)
    report = ingest(arch, [folder])
    assert report.errors == [] and report.series_added == 1
    assert not [w for w in report.warnings if "lossy" in w.message]  # lossless: no warning
    assert_same_archive(Archive(demo_one / "archive"), arch, min_slices=11, dose_required=True)


@pytest.mark.parametrize("how,mean_hu,max_hu", [("jpeg-baseline", 25.0, 300.0), ("jpeg-extended", 1.0, 20.0)])
def test_lossy_jpeg_slice_ingests_close_to_the_original(demo_one, tmp_path, how, mean_hu, max_hu):
    """A lossy JPEG slice (dcmcjpeg: baseline 8 bit, rescaled by dcmtk, and extended 12 bit) decodes to HU
    close to the original's. Measured on this 64 x 64 slice: baseline mean |error| 18 HU, max 256 HU (8
    bits for 2000 HU: steps of 16 HU, ringing at the body outline); extended mean 0.4 HU, max 14 HU."""
    from medhash.io.dicom import pixel_hu, read_query
    if reason := compressed.missing(how):
        pytest.skip(reason)
    original = demo_one / "dicom" / "DEMO001" / "CT_0025.dcm"
    lossy = tmp_path / "lossy.dcm"
    assert compressed.compress_file(original, lossy, how)
    ds = pydicom.dcmread(lossy)
    assert ds.file_meta.TransferSyntaxUID == compressed.SYNTAX[how] and ds.LossyImageCompression == "01"
    err = np.abs(pixel_hu(ds, lossy) - pixel_hu(pydicom.dcmread(original), original))
    assert err.mean() <= mean_hu and err.max() <= max_hu, (err.mean(), err.max())
    (a, _), (b, _) = read_query(original), read_query(lossy)  # on the model grid, as ingest puts it
    grid = np.abs(a.ct - b.ct)
    assert grid.mean() <= mean_hu and grid.max() <= max_hu, (grid.mean(), grid.max())
    # a series with this slice is ingested, with a warning that says how many slices are lossy
    series = tmp_path / "series"
    shutil.copytree(demo_one / "dicom" / "DEMO001", series)
    shutil.copy(lossy, series / original.name)
    report = ingest(Archive(tmp_path / "archive", create=True), [series])
    assert report.series_added == 1 and report.errors == []
    assert [w.message for w in report.warnings if "lossy compression" in w.message] == [
        f"1 of the 50 slices of series {ds.SeriesInstanceUID} went through lossy compression "
        "(LossyImageCompression 01 or a lossy JPEG transfer syntax): their HU are not the scanner's (8-bit JPEG: "
        "errors of tens of HU); ingested all the same"]


def _encapsulated_slice(demo_one: Path, tmp_path: Path, syntax: str, frame: bytes) -> Path:
    """A demo CT slice whose pixel data is ``frame``, encapsulated, in transfer syntax ``syntax``."""
    from pydicom.encaps import encapsulate
    ds = pydicom.dcmread(demo_one / "dicom" / "DEMO001" / "CT_0025.dcm")
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    path = tmp_path / f"{syntax}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_undecodable_syntax_is_named_with_the_package_that_decodes_it(demo_one, tmp_path, monkeypatch):
    """Without a decoder installed for it (here JPEG-LS, with pylibjpeg-libjpeg made unavailable), the
    message names the transfer syntax and the packages; a syntax pydicom has no decoder for at all
    (MPEG-2) says so; corrupt JPEG-LS data with the decoder present is reported as corrupt."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless, MPEG2MPML
    from medhash.errors import InputError
    from medhash.io.dicom import native_pixels, read_query
    jls = _encapsulated_slice(demo_one, tmp_path, JPEGLSLossless, b"\xff\xd8\xff\xf7 not JPEG-LS data \xff\xd9")
    assert native_pixels(pydicom.dcmread(jls)) is None  # compressed: left to pydicom
    with pytest.raises(InputError, match="may be truncated or corrupt") as exc:
        read_query(jls)
    assert "JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80)" in str(exc.value)

    decoder = get_decoder(JPEGLSLossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {**decoder._unavailable,
                                                  "pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1")})
    with pytest.raises(InputError) as exc:
        read_query(jls)
    msg = str(exc.value)
    assert msg.startswith(f"{jls}: pixel data in transfer syntax JPEG-LS Lossless Image Compression "
                          "(1.2.840.10008.1.2.4.80) cannot be decoded: no decoder for it is installed")
    assert "pylibjpeg>=2.0 with pylibjpeg-libjpeg>=2.1" in msg and "pyjpegls" in msg and "python-gdcm" in msg
    assert "corrupt" not in msg

    mpeg = _encapsulated_slice(demo_one, tmp_path, MPEG2MPML, b"\0\0\1\xb3 video")
    arch = Archive(tmp_path / "archive", create=True)
    report = ingest(arch, [mpeg])
    err, = report.errors
    assert f"{mpeg}: pixel data in transfer syntax MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100) " \
        "cannot be decoded" in err.message
    assert "has no decoder for this transfer syntax" in err.message and "uncompressed" in err.message
