"""Geometry images of planted slices against the rules of medhash.geometry.slices, counted by hand."""
import numpy as np
import pytest

from medhash.features import CHANNEL_RANGE, preprocess, psnr
from medhash.features.preprocess import preprocessing_constants
from medhash.geometry import slices
from medhash.geometry.slices import archive_geometry_images, geometry_images

DX = 3.906


def phantom(n=3):
    """n slices: a box body (HU 40) with an enclosed air pocket; on slice 1 a PTV70 (rows 50..59, cols
    50..59), a PTV56 overlapping its right half and reaching to column 64, a parotid above them."""
    ct = np.full((n, 128, 128), -1000.0, dtype=np.float32)
    ct[:, 30:100, 30:100] = 40.0
    ct[:, 35:40, 35:40] = -1000.0                      # air inside the body: filled, still body
    masks = {name: np.zeros(ct.shape, dtype=bool) for name in ("PTV70", "PTV_5600", "LeftParotid", "Ring")}
    masks["PTV70"][1, 50:60, 50:60] = True
    masks["PTV_5600"][1, 50:60, 55:65] = True
    masks["LeftParotid"][:, 40:44, 50:60] = True
    masks["LeftParotid"][1, 58, 52] = True             # an organ pixel inside the PTV: the target wins
    masks["Ring"][1, 70:72, 70:72] = True              # neither organ nor target: plain body
    return ct, masks


def test_planted_targets_organs_body_and_outside():
    ct, masks = phantom()
    g = geometry_images(ct, masks)
    assert g.shape == ct.shape and g.dtype == np.float32
    assert g.min() >= -1 and g.max() <= 1
    assert g[1, 55, 52] == pytest.approx(1.0)          # PTV70 only: 70 / 70
    assert g[1, 55, 57] == pytest.approx(1.0)          # overlap: the higher level
    assert g[1, 55, 62] == pytest.approx(0.8)          # PTV56 only: 56 / 70
    assert g[1, 58, 52] == pytest.approx(1.0)          # organ pixel inside the target
    assert g[1, 41, 55] == -0.5 and g[0, 41, 55] == -0.5 and g[2, 42, 58] == -0.5
    assert g[1, 10, 10] == -1.0 and g[0, 120, 5] == -1.0 and g[1, 100, 50] == -1.0
    # in the body: 0.5 exp(-d / 30 mm), d the in-plane distance to the nearest target pixel
    assert g[1, 55, 65] == pytest.approx(0.5 * np.exp(-DX / 30), rel=1e-5)          # next to the edge
    assert g[1, 55, 70] == pytest.approx(0.5 * np.exp(-6 * DX / 30), rel=1e-5)      # 6 columns right
    assert g[1, 64, 68] == pytest.approx(0.5 * np.exp(-np.hypot(5, 4) * DX / 30), rel=1e-5)
    assert g[1, 71, 71] == pytest.approx(0.5 * np.exp(-np.hypot(12, 7) * DX / 30), rel=1e-5)   # "Ring"
    assert g[1, 37, 37] == pytest.approx(0.5 * np.exp(-np.hypot(13, 13) * DX / 30), rel=1e-5)  # filled air
    outside_targets = g[1][(g[1] > -0.5) & (g[1] < 0.6)]
    assert outside_targets.max() == pytest.approx(0.5 * np.exp(-DX / 30), rel=1e-5)  # 0.5 is the edge's limit
    # slices without a target: 0 in the body (the air pocket too)
    assert g[0, 70, 70] == 0.0 and g[2, 37, 37] == 0.0 and g[0, 55, 55] == 0.0


def test_levels_clip_and_the_targets_override():
    ct, masks = phantom()
    low = {"PTV40": masks["PTV70"], "PTV90": masks["PTV_5600"]}
    g = geometry_images(ct, low)
    assert g[1, 55, 52] == pytest.approx(0.6)          # 40 / 70 = 0.57 -> 0.6
    assert g[1, 55, 62] == pytest.approx(1.0)          # 90 / 70 -> 1
    named = {"Boost": masks["PTV70"], "Cord": masks["LeftParotid"]}
    g = geometry_images(ct, named, targets={"Boost": 63.0})
    assert g[1, 55, 52] == pytest.approx(0.9) and g[1, 41, 55] == -0.5
    assert geometry_images(ct, named)[1, 55, 52] == 0.0       # no level: plain body


def test_one_slice_is_the_stack_slice_and_never_reads_a_dose():
    ct, masks = phantom()
    g = geometry_images(ct, masks)
    one = geometry_images(ct[1], {k: m[1] for k, m in masks.items()})
    assert one.shape == (128, 128)
    np.testing.assert_array_equal(one, g[1])
    with pytest.raises(ValueError, match="shape"):
        geometry_images(ct, {"PTV70": masks["PTV70"][:2]})


def test_preprocessing_of_the_geometry_channel():
    img = np.resize(np.array([-3.0, -1.0, 0.25, 1.0, 2.0], dtype=np.float32), (2, 128, 128))
    out = preprocess("geometry", img)
    assert out.shape == (2, 1, 128, 128)
    np.testing.assert_array_equal(out[:, 0], np.clip(img, -1, 1))
    const = preprocessing_constants("geometry")
    assert const["range"] == CHANNEL_RANGE["geometry"] == 2.0
    assert const["encoding"].endswith(f"revision {slices.REVISION}")
    assert psnr("geometry", 0.04) == pytest.approx(10 * np.log10(4 / 0.04))


def test_archive_images_follow_the_patient_not_the_call(trained):
    _, arch = trained
    table = arch.table()
    rows = np.flatnonzero(table["patient_id"] == "DEMO002")
    full = archive_geometry_images(arch, rows)
    masks = arch.structure_masks(rows)
    np.testing.assert_array_equal(full, geometry_images(np.asarray(arch.ct[rows], np.float32), masks))
    assert np.isclose(full, 1.0).any() and (full == -0.5).any() and (full == -1).any()   # PTV70, organs, air
    # any subset, in any order, mixed with another patient: the same images
    other = np.flatnonzero(table["patient_id"] == "DEMO003")[:4]
    pick = np.array([rows[30], other[2], rows[3], rows[17], other[0]])
    part = archive_geometry_images(arch, pick)
    np.testing.assert_array_equal(part[[0, 2, 3]], full[[30, 3, 17]])
    np.testing.assert_array_equal(part[[1, 4]], archive_geometry_images(arch, other)[[2, 0]])
    assert archive_geometry_images(arch, []).shape == (0, 128, 128)
