"""Dose transferred by anatomy: a plan's dose by geometry bin, read on another patient's geometry."""
import numpy as np
import pytest

from medhash.dose.transfer import INPLANE_EDGES_MM, DIST_EDGES_MM, DoseTable, dose_table, pool_tables, transfer_dose
from medhash.geometry import from_arrays


def patient(level=70, shift=0, name=None):
    """A box body and a cube target (shifted by ``shift`` columns) at ``level`` Gy."""
    ct = np.full((16, 128, 128), -1000.0, dtype=np.float32)
    ct[:, 30:90, 30:90] = 40.0
    ptv = np.zeros(ct.shape, dtype=bool)
    ptv[6:10, 50:60, 50 + shift:60 + shift] = True
    return from_arrays(ct, np.arange(16) * 2.5, {name or f"PTV{level}": ptv})


def plan(g, inside, outside):
    """A dose of ``inside`` Gy in the target and ``outside`` Gy elsewhere in the body."""
    d = np.where(g.any_target, inside, outside).astype(np.float32)
    d[~g.body] = 0
    return d


def test_a_plan_read_on_a_shifted_anatomy_follows_the_target():
    a, b = patient(), patient(shift=15)
    got = transfer_dose(b, [dose_table(a, plan(a, 70.0, 10.0))])
    np.testing.assert_allclose(got[b.any_target], 70.0, rtol=1e-6)        # the dose moved with the target
    np.testing.assert_allclose(got[b.body & ~b.any_target], 10.0, rtol=1e-6)
    assert np.all(got[~b.body] == 0)


def test_levels_scale_the_transferred_dose():
    a, b = patient(70), patient(60, shift=5)
    got = transfer_dose(b, [dose_table(a, plan(a, 70.0, 14.0))])
    np.testing.assert_allclose(got[b.any_target], 60.0, rtol=1e-5)       # 70 Gy plan -> 60 Gy target
    np.testing.assert_allclose(got[b.body & ~b.any_target], 12.0, rtol=1e-5)


def test_neighbours_are_pooled_by_their_weights():
    a, b, q = patient(), patient(), patient(shift=3)
    ta, tb = dose_table(a, plan(a, 70.0, 10.0)), dose_table(b, plan(b, 70.0, 0.0))
    got = transfer_dose(q, [ta, tb], weights=[1.0, 3.0])
    np.testing.assert_allclose(got[q.body & ~q.any_target], 2.5, rtol=1e-5)   # (1 * 10 + 3 * 0) / 4
    np.testing.assert_allclose(got[q.any_target], 70.0, rtol=1e-5)


def test_a_bin_no_neighbour_filled_reads_its_distance_bin():
    n, nd = len(DIST_EDGES_MM) + 1, len(INPLANE_EDGES_MM) + 1
    sums, counts = np.zeros(n * n * nd), np.zeros(n * n * nd)
    flat = lambda i1, ia, idep: (i1 * n + ia) * nd + idep          # the documented layout
    sums[flat(3, 3, 0)], counts[flat(3, 3, 0)] = 40.0, 2.0          # 20 Gy a voxel
    sums[flat(3, 4, 1)], counts[flat(3, 4, 1)] = 30.0, 3.0          # 10 Gy a voxel
    pooled = pool_tables([DoseTable(sums, counts)])
    assert pooled[flat(3, 3, 0)] == pytest.approx(20.0) and pooled[flat(3, 4, 1)] == pytest.approx(10.0)
    assert pooled[flat(3, 5, 2)] == pytest.approx(70.0 / 5)         # empty bin: the mean of its d1 bin
    assert pooled[flat(7, 3, 0)] == 0.0                             # nothing at that distance at all
    assert pool_tables([]).max() == 0.0


def test_without_a_table_the_dose_is_zero():
    q = patient()
    assert transfer_dose(q, []).max() == pytest.approx(0.0)
