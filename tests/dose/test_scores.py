"""OpenKBP dose and DVH scores on hand-made volumes, checked against values computed by hand."""
import numpy as np
import pytest

from medhash.dose import dose_score, dvh_metrics, dvh_score, tenth_cc_voxels


def test_dose_score_is_the_mean_absolute_error_inside_the_mask():
    ref = np.zeros((2, 3, 3))
    pred = np.full((2, 3, 3), 7.0)                 # outside the mask: ignored
    mask = np.zeros((2, 3, 3), dtype=bool)
    mask[0, 0, :3] = True
    mask[1, 2, 2] = True
    pred[0, 0, :3] = [1.0, 2.0, 3.0]
    pred[1, 2, 2] = -2.0
    assert dose_score(ref, pred, mask) == pytest.approx((1 + 2 + 3 + 2) / 4)
    with pytest.raises(ValueError, match="no voxel"):
        dose_score(ref, pred, np.zeros_like(mask))
    with pytest.raises(ValueError, match="shapes differ"):
        dose_score(ref, pred[:1], mask)


def test_tenth_cc_voxel_count_rule():
    assert tenth_cc_voxels(3.906 * 3.906 * 2.5) == 3     # 100 / 38.14 = 2.62 -> 3
    assert tenth_cc_voxels(10.0) == 10
    assert tenth_cc_voxels(200.0) == 1                   # round(0.5) = 0, at least 1 voxel
    assert tenth_cc_voxels(1000.0) == 1


def test_dvh_metrics_by_hand():
    dose = np.arange(1, 101, dtype=np.float64).reshape(1, 10, 10)          # 1 .. 100 Gy
    everything = np.ones_like(dose, dtype=bool)
    half = np.zeros_like(everything)
    half[0, :5] = True                                                     # 1 .. 50 Gy
    m = dvh_metrics(dose, {"PTV70": everything, "SpinalCord": everything, "Brainstem": half,
                           "Esophagus": np.zeros_like(everything), "BODY": everything}, 3.906 * 3.906 * 2.5)
    # linear-interpolated percentiles of 1..100: p -> 1 + 99 p / 100
    assert m["D99 PTV70"] == pytest.approx(1 + 0.99)
    assert m["D95 PTV70"] == pytest.approx(1 + 4.95)
    assert m["D1 PTV70"] == pytest.approx(1 + 98.01)
    # 3 voxels of 100 in 0.1 cc: the 97th percentile; of 50: the 94th of 1..50
    assert m["D0.1cc SpinalCord"] == pytest.approx(1 + 0.97 * 99)
    assert m["D0.1cc Brainstem"] == pytest.approx(1 + 0.94 * 49)
    assert m["mean SpinalCord"] == pytest.approx(50.5) and m["mean Brainstem"] == pytest.approx(25.5)
    assert not any("Esophagus" in k or "BODY" in k for k in m)             # empty / not scored
    assert len(m) == 3 + 2 + 2


def test_dvh_score_is_the_mean_over_common_metrics():
    a = {"D95 PTV70": 66.0, "mean SpinalCord": 20.0, "D0.1cc SpinalCord": 40.0}
    b = {"D95 PTV70": 70.0, "mean SpinalCord": 22.0}
    c = {"D95 PTV70": 60.0, "mean SpinalCord": 20.0, "D0.1cc SpinalCord": 43.0}
    assert dvh_score([(a, b)]) == pytest.approx((4 + 2) / 2)
    assert dvh_score([(a, b), (a, c)]) == pytest.approx((4 + 2 + 6 + 0 + 3) / 5)
    assert np.isnan(dvh_score([]))
