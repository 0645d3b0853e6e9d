"""Distance maps and features of a planted geometry, against distances counted by hand."""
import numpy as np
import pytest

from medhash.geometry import (CLIP_MM, VOXEL_FEATURES, descriptor_names, from_arrays, patient_descriptor,
                              voxel_features)

DZ, DX = 2.5, 3.906


def phantom(targets=("PTV70",), organ="LeftParotid"):
    """A box body (HU 40) of 20 slices, a 5-slice x 11 x 11 PTV70 inside, a 2-voxel organ column beside it."""
    n = 20
    ct = np.full((n, 128, 128), -1000.0, dtype=np.float32)
    ct[:, 30:90, 30:90] = 40.0
    ptv = np.zeros(ct.shape, dtype=bool)
    ptv[8:13, 50:61, 50:61] = True
    masks = {name: ptv for name in targets}
    org = np.zeros(ct.shape, dtype=bool)
    org[:, 55:57, 64:66] = True                     # 3 columns right of the PTV (cols 61..63 outside)
    masks[organ] = org
    return from_arrays(ct, np.arange(n) * DZ, masks, patient_id="p1")


def test_signed_distance_to_the_target_counts_voxels():
    g = phantom()
    d1 = g.maps()["d1"]
    assert d1[10, 55, 63] == pytest.approx(3 * DX, abs=1e-3)        # 3 columns outside the face
    assert d1[10, 55, 61] == pytest.approx(DX, abs=1e-3)
    assert d1[5, 55, 55] == pytest.approx(3 * DZ, abs=1e-3)          # 3 slices below it
    assert d1[10, 55, 55] == pytest.approx(-3 * DZ, abs=1e-3)        # centre: 3 slices to the nearest outside
    assert d1[10, 55, 55] < 0 < d1[10, 55, 70]


def test_missing_levels_read_the_clip_and_depth_counts_from_the_skin():
    g = phantom()
    maps = g.maps()
    assert g.levels == [70.0]
    assert np.all(maps["d2"] == CLIP_MM) and np.all(maps["d3"] == CLIP_MM)
    np.testing.assert_array_equal(maps["d_any"], maps["d1"])
    assert maps["depth"][10, 60, 30] == pytest.approx(DX, abs=1e-3)       # the first body column
    assert maps["depth"][10, 60, 34] == pytest.approx(5 * DX, abs=1e-3)
    assert maps["depth"][10, 10, 10] == 0.0                                # outside the body


def test_voxel_features_are_in_the_documented_order():
    g = phantom()
    vox = np.ravel_multi_index(([10, 10], [55, 55], [63, 55]), g.shape)
    x = voxel_features(g, vox)
    assert x.shape == (2, len(VOXEL_FEATURES))
    col = {name: i for i, name in enumerate(VOXEL_FEATURES)}
    assert x[0, col["d1"]] == pytest.approx(3 * DX, abs=1e-3)
    assert x[0, col["l1"]] == 70.0 and x[0, col["l2"]] == 0.0
    assert x[0, col["rx"]] == pytest.approx(8 * DX, abs=1e-3)              # centroid column 55
    assert x[1, col["rx"]] == pytest.approx(0.0, abs=1e-3) and x[1, col["rz"]] == pytest.approx(0.0, abs=1e-3)
    assert x[0, col["hu"]] == 40.0
    assert x[0, col["organ Parotid_L"]] == 0.0
    assert x[1, col["vol1"]] == pytest.approx(np.log1p(5 * 11 * 11 * DZ * DX * DX / 1000), rel=1e-5)


def test_descriptor_overlap_volume_histogram_of_the_organ():
    g = phantom()
    d = dict(zip(descriptor_names(), patient_descriptor(g)))
    assert d["Parotid_L present"] == 1.0 and d["Parotid_R present"] == 0.0
    # organ voxels at 3-4 columns (11.7-15.6 mm) from the PTV on its 5 slices, farther elsewhere
    assert d["Parotid_L OVH any 0mm"] == 0.0
    assert d["Parotid_L OVH any 5mm"] == 0.0
    assert 0.0 < d["Parotid_L OVH any 20mm"] < 1.0
    assert d["Parotid_L OVH any 50mm"] == 1.0
    assert d["level 1"] == pytest.approx(1.0) and d["level 2"] == 0.0


def test_the_same_geometry_under_other_names_gives_the_same_descriptor():
    a = patient_descriptor(phantom(("PTV70",), "LeftParotid"))
    b = patient_descriptor(phantom(("PTV_7000",), "Parotid L"))
    np.testing.assert_array_equal(a, b)
