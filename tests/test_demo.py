"""Tests of medhash.demo: the synthetic phantoms and the low-level DICOM writers.

Everything written is read back with pydicom directly (never with medhash's own readers), so these
tests check the files themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from matplotlib.path import Path as MplPath
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RTDoseStorage, RTStructureSetStorage

from medhash.demo import (
    DEMO_PROVENANCE,
    ROI_NAMES,
    Phantom,
    make_phantom,
    write_demo_cohort,
    write_phantom,
)
from medhash.io.writers import write_ct_series, write_rtdose, write_rtstruct

SMALL = 96  # rows of the phantoms used where the size does not matter (speed)


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _floats(values) -> np.ndarray:
    return np.array([float(v) for v in values])


@pytest.fixture(scope="module")
def small_phantom() -> Phantom:
    return make_phantom(0, seed=0, rows=SMALL)


@pytest.fixture(scope="module")
def written(small_phantom, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("phantom")
    return write_phantom(small_phantom, folder)


@pytest.fixture(scope="module")
def full_size_phantoms() -> list[Phantom]:
    return [make_phantom(i, seed=0) for i in range(6)]


# ------------------------------------------------------------------------------------------ CT
def test_ct_files_round_trip_hu_exactly(small_phantom, written):
    ph = small_phantom
    paths = written["ct"]
    assert len(paths) == ph.hu.shape[0]
    uids = set()
    for k, path in enumerate(paths):
        assert path.name == f"CT_{k:04d}.dcm"
        ds = pydicom.dcmread(path)  # no force: a proper Part 10 file
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID == CTImageStorage
        assert ds.Modality == "CT"
        assert ds.PatientName == ""
        assert ds.PatientID == ph.patient_id
        assert ds.StudyInstanceUID == ph.study_uid
        assert ds.SeriesInstanceUID == ph.ct_series_uid
        assert ds.FrameOfReferenceUID == ph.frame_of_reference_uid
        assert ds.InstanceNumber == k + 1
        assert (ds.Rows, ds.Columns) == ph.hu.shape[1:]
        assert (ds.BitsAllocated, ds.SamplesPerPixel, ds.PhotometricInterpretation) == (
            16, 1, "MONOCHROME2")
        np.testing.assert_array_equal(_hu(ds), ph.hu[k])
        np.testing.assert_allclose(_floats(ds.PixelSpacing), ph.pixel_spacing, atol=1e-9)
        np.testing.assert_allclose(
            _floats(ds.ImagePositionPatient),
            [ph.origin_xy_mm[0], ph.origin_xy_mm[1], ph.slice_positions_mm[k]], atol=1e-9)
        np.testing.assert_allclose(_floats(ds.ImageOrientationPatient), [1, 0, 0, 0, 1, 0])
        assert float(ds.SliceLocation) == pytest.approx(ph.slice_positions_mm[k])
        assert float(ds.SliceThickness) == pytest.approx(ph.slice_thickness_mm)
        uids.add(ds.SOPInstanceUID)
    assert len(uids) == len(paths)


def test_air_outside_body_is_exactly_minus_1000(small_phantom, written):
    ph = small_phantom
    outside = ~ph.masks["BODY"]
    assert outside.any() and ph.masks["BODY"].any()
    assert np.all(ph.hu[outside] == -1000)
    k = ph.hu.shape[0] // 2
    hu = _hu(pydicom.dcmread(written["ct"][k]))
    assert np.all(hu[outside[k]] == -1000)
    # inside: soft tissue, fat and bone are all there, with integer noise
    inside = ph.hu[ph.masks["BODY"]]
    assert ph.hu.dtype == np.int16
    assert inside.max() > 700 and (np.abs(inside - 40) < 15).mean() > 0.3
    assert (np.abs(inside + 100) < 15).any()


def test_ct_series_shuffled_names_signed_pixels_and_instance_numbers(tmp_path):
    rng = np.random.default_rng(1)
    hu = rng.integers(-1024, 2000, size=(4, 8, 6)).astype(np.int16)
    z = np.array([-30.0, -27.5, -25.0, -22.5])
    names = ["b.dcm", "d.dcm", "a.dcm", "c.dcm"]
    paths = write_ct_series(
        tmp_path, hu, pixel_spacing=(0.8, 0.9), slice_positions_mm=z, origin_xy_mm=(-10.0, 20.0),
        patient_id="X1", study_uid="1.2.3.4", series_uid="1.2.3.4.5",
        frame_of_reference_uid="1.2.3.9",
        file_names=names, instance_numbers=[4, 3, 2, 1], rescale_intercept=0.0, provenance=DEMO_PROVENANCE)
    assert [p.name for p in paths] == names
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        assert ds.PixelRepresentation == 1  # negative stored values need signed pixels
        np.testing.assert_array_equal(_hu(ds), hu[k])
        assert ds.InstanceNumber == 4 - k
        np.testing.assert_allclose(_floats(ds.PixelSpacing), [0.8, 0.9])
        np.testing.assert_allclose(_floats(ds.ImagePositionPatient), [-10.0, 20.0, z[k]])
        assert ds.Rows == 8 and ds.Columns == 6


def test_ct_series_rescale_slope_and_unsigned(tmp_path):
    hu = np.array([[[-1000.0, 0.0], [1000.0, 3000.0]]])
    (path,) = write_ct_series(
        tmp_path, hu, pixel_spacing=(1.0, 1.0), slice_positions_mm=[5.0], patient_id="X",
        study_uid="1.2.3", series_uid="1.2.3.1", frame_of_reference_uid="1.2.3.2",
        rescale_slope=2.0, rescale_intercept=-1024.0, provenance=DEMO_PROVENANCE)
    ds = pydicom.dcmread(path)
    assert ds.PixelRepresentation == 0
    np.testing.assert_array_equal(ds.pixel_array, [[12, 512], [1012, 2012]])
    np.testing.assert_array_equal(_hu(ds), hu[0])


def test_ct_series_any_orthonormal_orientation(tmp_path):
    orientation = (1, 0, 0, 0, 0, -1)  # coronal: normal = row x col = (0, 1, 0)
    hu = np.zeros((3, 4, 4))
    paths = write_ct_series(
        tmp_path, hu, pixel_spacing=(2.0, 2.0), slice_positions_mm=[10.0, 12.0, 14.0],
        origin_xy_mm=(-5.0, 0.0, 7.0), orientation=orientation, patient_id="X",
        study_uid="1.2.3", series_uid="1.2.3.1", frame_of_reference_uid="1.2.3.2", provenance=DEMO_PROVENANCE)
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        np.testing.assert_allclose(_floats(ds.ImagePositionPatient), [-5.0, 10.0 + 2 * k, 7.0])
        np.testing.assert_allclose(_floats(ds.ImageOrientationPatient), orientation)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"orientation": (1, 0, 0, 1, 0, 0)},  # not orthogonal
        {"slice_positions_mm": [0.0]},  # wrong length
        {"file_names": ["a.dcm", "a.dcm"]},  # not distinct
        {"rescale_intercept": 100000.0},  # does not fit
    ],
)
def test_ct_series_rejects_bad_input(tmp_path, kwargs):
    args = dict(pixel_spacing=(1.0, 1.0), slice_positions_mm=[0.0, 1.0], patient_id="X",
                study_uid="1.2.3", series_uid="1.2.3.1", frame_of_reference_uid="1.2.3.2")
    args.update(kwargs)
    with pytest.raises(ValueError):
        write_ct_series(tmp_path, np.zeros((2, 3, 3)), provenance=DEMO_PROVENANCE, **args)


# ---------------------------------------------------------------------------------------- dose
def test_rtdose_round_trip_relative_offsets(small_phantom, written):
    ph = small_phantom
    ds = pydicom.dcmread(written["rtdose"])
    assert ds.SOPClassUID == RTDoseStorage and ds.Modality == "RTDOSE"
    assert ds.PatientName == "" and ds.PatientID == ph.patient_id
    assert ds.FrameOfReferenceUID == ph.frame_of_reference_uid
    assert ds.StudyInstanceUID == ph.study_uid
    assert (ds.DoseUnits, ds.DoseType, ds.DoseSummationType) == ("GY", "PHYSICAL", "PLAN")
    assert ds.BitsAllocated == 32 and ds.PixelRepresentation == 0
    assert ds.FrameIncrementPointer == Tag(0x3004, 0x000C)
    assert int(ds.NumberOfFrames) == ph.dose_gy.shape[0]
    gfov = _floats(ds.GridFrameOffsetVector)
    assert gfov[0] == 0.0
    np.testing.assert_allclose(gfov, ph.dose_frame_offsets_mm, atol=1e-9)
    np.testing.assert_allclose(_floats(ds.ImagePositionPatient), ph.dose_origin_mm, atol=1e-9)
    np.testing.assert_allclose(_floats(ds.PixelSpacing), ph.dose_pixel_spacing, atol=1e-9)
    stored = ds.pixel_array
    assert stored.shape == ph.dose_gy.shape
    assert 2**30 < stored.max() <= 2**31 + 1  # the maximum maps near 2**31
    dose = stored.astype(np.float64) * float(ds.DoseGridScaling)
    np.testing.assert_allclose(dose, ph.dose_gy, rtol=0, atol=1e-6 * ph.dose_gy.max())


def test_rtdose_absolute_offsets_and_given_scaling(tmp_path):
    dose = np.linspace(0.0, 50.0, 3 * 4 * 5).reshape(3, 4, 5)
    origin = (-12.5, 30.25, -64.0)
    path = write_rtdose(
        tmp_path / "rd.dcm", dose, origin_mm=origin, pixel_spacing=(4.0, 3.5),
        frame_offsets_mm=[0.0, 3.0, 6.0], frame_of_reference_uid="1.2.3.2", patient_id="X",
        study_uid="1.2.3", summation_type="FRACTION", absolute_offsets=True,
        dose_grid_scaling=1e-4, provenance=DEMO_PROVENANCE)
    ds = pydicom.dcmread(path)
    np.testing.assert_allclose(_floats(ds.GridFrameOffsetVector), [-64.0, -61.0, -58.0])
    assert float(ds.DoseGridScaling) == 1e-4
    assert ds.DoseSummationType == "FRACTION"
    np.testing.assert_allclose(ds.pixel_array * 1e-4, dose, atol=0.5e-4 + 1e-12)
    np.testing.assert_allclose(_floats(ds.PixelSpacing), [4.0, 3.5])
    assert (ds.Rows, ds.Columns) == (4, 5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frame_offsets_mm": [1.0, 4.0]},  # relative offsets start at 0
        {"dose_grid_scaling": 1e-12},  # overflows uint32
        {"frame_offsets_mm": [0.0]},  # wrong length
    ],
)
def test_rtdose_rejects_bad_input(tmp_path, kwargs):
    args = dict(origin_mm=(0.0, 0.0, 0.0), pixel_spacing=(1.0, 1.0),
                frame_offsets_mm=[0.0, 3.0], frame_of_reference_uid="1.2.3.2", patient_id="X",
                study_uid="1.2.3")
    args.update(kwargs)
    with pytest.raises(ValueError):
        write_rtdose(tmp_path / "rd.dcm", np.ones((2, 2, 2)), provenance=DEMO_PROVENANCE, **args)


# ------------------------------------------------------------------------------------ RTSTRUCT
def test_rtstruct_rois_contours_and_references(small_phantom, written):
    ph = small_phantom
    ds = pydicom.dcmread(written["rtstruct"])
    assert ds.SOPClassUID == RTStructureSetStorage and ds.Modality == "RTSTRUCT"
    assert ds.PatientName == "" and ds.PatientID == ph.patient_id
    names = [roi.ROIName for roi in ds.StructureSetROISequence]
    assert names == list(ROI_NAMES)
    assert all(roi.ReferencedFrameOfReferenceUID == ph.frame_of_reference_uid
               for roi in ds.StructureSetROISequence)
    types = {o.ReferencedROINumber: o.RTROIInterpretedType for o in ds.RTROIObservationsSequence}
    number = {roi.ROIName: roi.ROINumber for roi in ds.StructureSetROISequence}
    assert types[number["PTV70"]] == "PTV"
    assert types[number["BODY"]] == "EXTERNAL"
    assert types[number["SpinalCord"]] == "ORGAN"

    ct_uid_by_z = {}
    for p in written["ct"]:
        ct = pydicom.dcmread(p, stop_before_pixels=True)
        ct_uid_by_z[round(float(ct.ImagePositionPatient[2]), 3)] = ct.SOPInstanceUID
    ref_series = (ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
                  .RTReferencedSeriesSequence[0])
    assert ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == ph.frame_of_reference_uid
    assert ref_series.SeriesInstanceUID == ph.ct_series_uid
    assert {i.ReferencedSOPInstanceUID for i in ref_series.ContourImageSequence} == set(
        ct_uid_by_z.values())

    by_number = {rc.ReferencedROINumber: rc for rc in ds.ROIContourSequence}
    for name in ROI_NAMES:
        seq = by_number[number[name]].ContourSequence
        assert len(seq) == len(ph.contours[name]) > 0, name
        for item, expected in zip(seq, ph.contours[name]):
            assert item.ContourGeometricType == "CLOSED_PLANAR"
            pts = _floats(item.ContourData).reshape(-1, 3)
            assert item.NumberOfContourPoints == len(pts)
            np.testing.assert_allclose(pts, expected, atol=1e-9)
            z = pts[0, 2]
            assert np.all(pts[:, 2] == z)  # planar, on a CT slice
            assert item.ContourImageSequence[0].ReferencedSOPInstanceUID == ct_uid_by_z[round(z, 3)]


def test_rtstruct_with_plain_uids_has_no_per_contour_reference(tmp_path):
    square = np.array([[0.0, 0.0, 5.0], [10.0, 0.0, 5.0], [10.0, 10.0, 5.0], [0.0, 10.0, 5.0]])
    path = write_rtstruct(
        tmp_path / "rs.dcm", {"PTV56": [square], "Empty": []},
        ct_files_or_uids=["1.2.3.7", "1.2.3.8"],
        frame_of_reference_uid="1.2.3.2", patient_id="X", study_uid="1.2.3",
        series_uid_of_ct="1.2.3.1", provenance=DEMO_PROVENANCE)
    ds = pydicom.dcmread(path)
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["PTV56", "Empty"]
    item = ds.ROIContourSequence[0].ContourSequence[0]
    assert "ContourImageSequence" not in item
    np.testing.assert_allclose(_floats(item.ContourData), square.ravel())
    assert len(ds.ROIContourSequence[1].ContourSequence) == 0
    assert ds.RTROIObservationsSequence[0].RTROIInterpretedType == "PTV"


# ------------------------------------------------------------------------------------- phantom
def test_phantom_geometry_varies_and_is_as_documented(full_size_phantoms):
    spacings, thicknesses, sides, offsets = set(), set(), set(), []
    for ph in full_size_phantoms:
        n, rows, cols = ph.hu.shape
        assert rows == cols == 256
        assert 40 <= n <= 60
        assert 1.9 <= ph.pixel_spacing[0] == ph.pixel_spacing[1] <= 2.0
        assert ph.slice_thickness_mm in (2.5, 3.0)
        np.testing.assert_allclose(np.diff(ph.slice_positions_mm), ph.slice_thickness_mm)
        assert -90.0 <= ph.slice_positions_mm[0] <= -60.0
        centre = np.array(ph.origin_xy_mm) + (np.array([cols, rows]) - 1) / 2 * ph.pixel_spacing[0]
        off = np.array(ph.body_centre_xy_mm) - centre
        assert np.all(np.abs(off) <= 30.0 + 1e-6)
        offsets.append(np.abs(off).max())
        spacings.add(ph.pixel_spacing[0])
        thicknesses.add(ph.slice_thickness_mm)
        sides.add(ph.ptv_side)
        assert set(ph.contours) == set(ROI_NAMES)
        assert len(ph.contours["BODY"]) == n
        for name in ROI_NAMES:
            assert ph.masks[name].shape == ph.hu.shape
            assert len(ph.contours[name]) == int(ph.masks[name].any(axis=(1, 2)).sum()), name
    assert len(spacings) == 6 and len(thicknesses) == 2 and sides == {"L", "R"}
    assert max(offsets) > 10.0


def test_dose_grid_is_coarser_offset_and_covers_the_body(full_size_phantoms):
    for ph in full_size_phantoms:
        n, rows, cols = ph.hu.shape
        nf, drows, dcols = ph.dose_gy.shape
        ds_row, ds_col = ph.dose_pixel_spacing
        assert 3.0 <= ds_row <= 4.0 and ds_col == ds_row
        assert ph.dose_frame_offsets_mm[0] == 0.0
        np.testing.assert_allclose(np.diff(ph.dose_frame_offsets_mm), 3.0)
        # dose origin not on CT pixel centres
        frac = (np.array(ph.dose_origin_mm[:2]) - ph.origin_xy_mm) / ph.pixel_spacing[0]
        assert np.all(np.abs(frac - np.round(frac)) > 1e-3)
        dx = ph.dose_origin_mm[0] + ds_col * np.arange(dcols)
        dy = ph.dose_origin_mm[1] + ds_row * np.arange(drows)
        dz = ph.dose_z_mm
        x = ph.origin_xy_mm[0] + ph.pixel_spacing[1] * np.arange(cols)
        y = ph.origin_xy_mm[1] + ph.pixel_spacing[0] * np.arange(rows)
        in_x = (x >= dx[0]) & (x <= dx[-1])
        in_y = (y >= dy[0]) & (y <= dy[-1])
        in_grid = in_y[:, None] & in_x[None, :]
        assert not in_grid.all()  # some CT pixels lie outside the dose grid
        assert np.all(in_grid[ph.masks["BODY"].any(axis=0)])  # but the body does not
        assert dz[0] <= ph.slice_positions_mm[0] and dz[-1] >= ph.slice_positions_mm[-1]
        # 70 Gy in the PTV, falling off outside, nothing in the air
        c = np.array(ph.ptv_centre_mm)
        r = np.array(ph.ptv_radii_mm)
        Z, Y, X = np.meshgrid(dz, dy, dx, indexing="ij")
        rho = np.sqrt(((X - c[0]) / r[0]) ** 2 + ((Y - c[1]) / r[1]) ** 2
                      + ((Z - c[2]) / r[2]) ** 2)
        assert ph.dose_gy.dtype == np.float32
        assert np.all(ph.dose_gy[rho <= 1.0] == np.float32(70.0))
        assert ph.dose_gy.max() == np.float32(70.0)
        assert np.all(ph.dose_gy[rho > 4.0] < 10.0)
        assert ph.dose_gy.min() == 0.0 and (ph.dose_gy > 0).mean() < 0.9


def test_ptv_side_matches_its_position(full_size_phantoms):
    for ph in full_size_phantoms:
        dx = ph.ptv_centre_mm[0] - ph.body_centre_xy_mm[0]
        assert (dx > 0) == (ph.ptv_side == "L")  # +x is the patient's left (LPS)
        k = int(np.argmin(np.abs(ph.slice_positions_mm - ph.ptv_centre_mm[2])))
        assert ph.masks["PTV70"][k].any()
        assert np.all(ph.masks["BODY"][ph.masks["PTV70"]])


def test_contours_outline_the_masks(small_phantom):
    ph = small_phantom
    rows, cols = ph.hu.shape[1:]
    x = ph.origin_xy_mm[0] + ph.pixel_spacing[1] * np.arange(cols)
    y = ph.origin_xy_mm[1] + ph.pixel_spacing[0] * np.arange(rows)
    X, Y = np.meshgrid(x, y)
    centres = np.column_stack([X.ravel(), Y.ravel()])
    z_index = {round(float(z), 3): k for k, z in enumerate(ph.slice_positions_mm)}
    for name in ("BODY", "PTV70", "Mandible", "LeftParotid"):
        inter = union = 0
        for contour in ph.contours[name]:
            k = z_index[round(float(contour[0, 2]), 3)]
            raster = MplPath(contour[:, :2]).contains_points(centres).reshape(rows, cols)
            mask = ph.masks[name][k]
            inter += (raster & mask).sum()
            union += (raster | mask).sum()
        assert inter / union > 0.85, name


def test_make_phantom_is_deterministic_and_seeded():
    a = make_phantom(2, seed=5, rows=48)
    b = make_phantom(2, seed=5, rows=48)
    c = make_phantom(2, seed=6, rows=48)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.dose_gy, b.dose_gy)
    assert a.study_uid == b.study_uid != c.study_uid
    assert a.patient_id == c.patient_id == "DEMO003"
    assert a.hu.shape != c.hu.shape or not np.array_equal(a.hu, c.hu)


def test_write_demo_cohort_layout_and_byte_identical(tmp_path):
    first = write_demo_cohort(tmp_path / "a", n_patients=2, seed=0, rows=48)
    second = write_demo_cohort(tmp_path / "b", n_patients=2, seed=0, rows=48)
    assert [f.name for f in first] == ["DEMO001", "DEMO002"]
    for fa, fb in zip(first, second):
        names = sorted(p.name for p in fa.iterdir())
        assert names == sorted(p.name for p in fb.iterdir())
        assert f"RD_{fa.name}.dcm" in names and f"RS_{fa.name}.dcm" in names
        assert sum(n.startswith("CT_") for n in names) >= 40
        for name in names:
            assert (fa / name).read_bytes() == (fb / name).read_bytes(), name
    # one study and one frame of reference per patient, shared by CT, dose and structures
    for folder in first:
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]
        assert len({h.StudyInstanceUID for h in headers}) == 1
        assert len({h.FrameOfReferenceUID for h in headers if "FrameOfReferenceUID" in h}) == 1
        assert {h.Modality for h in headers} == {"CT", "RTDOSE", "RTSTRUCT"}
        assert all(h.PatientName == "" and h.PatientID == folder.name for h in headers)
    assert first[0] != first[1]
    uids_0 = pydicom.dcmread(first[0] / "RD_DEMO001.dcm").StudyInstanceUID
    uids_1 = pydicom.dcmread(first[1] / "RD_DEMO002.dcm").StudyInstanceUID
    assert uids_0 != uids_1


def test_demo_files_keep_their_fixed_provenance(small_phantom, written):
    # pinned, not just run-to-run equal: the demo's Manufacturer, descriptions, date and time and
    # its "medhash.demo" UIDs are what every earlier demo cohort and archive holds
    assert DEMO_PROVENANCE.uid("study", 0, 0) == (
        "1.2.826.0.1.3680043.8.498.81595767919566710534001391733954811171")
    assert small_phantom.study_uid == DEMO_PROVENANCE.uid("study", 0, 0)
    headers = {"CT": pydicom.dcmread(written["ct"][0], stop_before_pixels=True),
               "RTDOSE": pydicom.dcmread(written["rtdose"], stop_before_pixels=True),
               "RTSTRUCT": pydicom.dcmread(written["rtstruct"])}
    for modality, ds in headers.items():
        assert ds.Manufacturer == "medhash demo phantom", modality
        assert ds.StudyDescription == "medhash synthetic head and neck", modality
        for element in ("InstanceCreation", "Study", "Series", "Content"):
            assert ds[f"{element}Date"].value == "20240102", (modality, element)
            assert ds[f"{element}Time"].value == "120000", (modality, element)
        assert ds.PatientName == "", modality
    assert headers["CT"].SeriesDescription == "synthetic CT"
    assert headers["CT"].SOPInstanceUID == DEMO_PROVENANCE.uid("CT", small_phantom.ct_series_uid, 0)
    assert headers["RTDOSE"].SeriesDescription == "synthetic dose"
    assert headers["RTDOSE"].SOPInstanceUID == DEMO_PROVENANCE.uid(
        "RTDOSE", small_phantom.study_uid, small_phantom.frame_of_reference_uid,
        written["rtdose"].name)
    assert headers["RTSTRUCT"].SeriesDescription == "synthetic structures"
    assert headers["RTSTRUCT"].StructureSetLabel == "DEMO"
    assert (headers["RTSTRUCT"].StructureSetDate, headers["RTSTRUCT"].StructureSetTime) == (
        "20240102", "120000")


def test_write_demo_cohort_rewrites_stale_files(tmp_path):
    (tmp_path / "DEMO001").mkdir()
    (tmp_path / "DEMO001" / "CT_9999.dcm").write_bytes(b"stale")
    (tmp_path / "DEMO001" / "notes.txt").write_text("keep me")
    (folder,) = write_demo_cohort(tmp_path, n_patients=1, rows=48)
    assert not (folder / "CT_9999.dcm").exists()
    assert (folder / "notes.txt").read_text() == "keep me"
    assert isinstance(folder, Path)
