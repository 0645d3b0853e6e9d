import numpy as np
import pytest

from medhash.core.grid import (AIR_HU, GRID_SIZE, GRID_SPACING_MM, PlaneGeometry, body_centre_uv, body_fraction,
                          grid_points, place_grid, resample_plane, stack_to_grid)


def test_equal_spacing_copies_pixels_exactly():
    rng = np.random.default_rng(0)
    img = rng.integers(-1000, 2000, size=(200, 180)).astype(np.float32)
    out = resample_plane(img, (GRID_SPACING_MM, GRID_SPACING_MM), (10.0, -5.0), order=1, cval=AIR_HU,
                         antialias=True)
    assert out.shape == (GRID_SIZE, GRID_SIZE)
    np.testing.assert_array_equal(out[:, 5:], img[10:138, 0:123])
    assert (out[:, :5] == AIR_HU).all()  # left of the image: air


def test_linear_ramp_is_resampled_without_error():
    # a ramp in mm along columns, 1 mm pixels: bilinear sampling of a linear function is exact,
    # and the symmetric anti-aliasing filter keeps a linear function away from the border
    spacing = (1.0, 1.0)
    cols = np.arange(800, dtype=np.float32)
    img = np.tile(cols * 2.0, (800, 1))  # value = 2 * x_mm
    out = resample_plane(img, spacing, (100.0, 100.0), order=1, cval=0.0, antialias=True)
    expect = 2.0 * (100.0 + np.arange(GRID_SIZE) * GRID_SPACING_MM)
    np.testing.assert_allclose(out[64], expect, atol=1e-3)


def test_grid_is_centred_on_the_body_and_snapped():
    hu = np.full((3, 256, 256), -1000.0, dtype=np.float32)
    hu[:, 150:190, 40:80] = 40.0  # body centred at row 169.5, col 59.5
    geo = PlaneGeometry(np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), (2.0, 2.0), (256, 256))
    v, u = body_centre_uv(hu, geo.spacing)
    assert (v, u) == pytest.approx((169.5 * 2, 59.5 * 2))
    ipps = np.array([[-100.0, -50.0, z] for z in (0.0, 2.5, 5.0)])
    place = place_grid(hu, geo, ipps)
    assert float(place.start[0]).is_integer() and float(place.start[1]).is_integer()
    grid = stack_to_grid(hu, geo.spacing, place.start, kind="ct")
    body = grid[1] > -500
    rows, cols = np.nonzero(body)
    assert abs(rows.mean() - 63.5) < 1.0 and abs(cols.mean() - 63.5) < 1.0
    # origin of pixel (0,0) in patient mm matches the start index
    np.testing.assert_allclose(place.origins_mm[0], [-100 + place.start[1] * 2, -50 + place.start[0] * 2, 0])


def test_masks_are_resampled_by_nearest_neighbour():
    m = np.zeros((1, 300, 300), dtype=bool)
    m[0, 100:200, 100:200] = True
    out = stack_to_grid(m, (1.3, 1.3), (0.0, 0.0), kind="mask")
    assert out.dtype == bool
    assert out.sum() > 0 and set(np.unique(out)) <= {False, True}


def test_grid_points_and_body_fraction():
    pts = grid_points(np.array([10.0, 20.0, 30.0]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
    assert pts.shape == (GRID_SIZE, GRID_SIZE, 3)
    np.testing.assert_allclose(pts[2, 3], [10 + 3 * GRID_SPACING_MM, 20 + 2 * GRID_SPACING_MM, 30])
    img = np.full((GRID_SIZE, GRID_SIZE), -1000.0)
    img[:16, :16] = 0.0
    assert body_fraction(img) == pytest.approx(256 / GRID_SIZE**2)


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="kind must be"):
        stack_to_grid(np.zeros((1, 4, 4)), (1.0, 1.0), (0.0, 0.0), kind="pet")
