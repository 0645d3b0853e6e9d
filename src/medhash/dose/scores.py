"""The OpenKBP challenge's dose and DVH scores, so that dose from retrieval compares with its leaderboard.

Definitions follow the challenge's evaluation (Babier et al., Med Phys 2021; ``dose_evaluation_class``
of the OpenKBP repository):

* **Dose score** of a patient: the mean absolute error in Gy over the voxels of the possible-dose
  mask, ``sum |reference - predicted| / number of mask voxels`` (a prediction outside the mask is
  zeroed first, as the challenge's predictions are). The score of a set is the mean over patients.
* **DVH metrics** per structure, from the dose of its voxels: for targets (``PTV56``, ``PTV63``,
  ``PTV70``) D99, D95 and D1, the dose received by 99 %, 95 % and 1 % of the volume, i.e. the 1st,
  5th and 99th percentiles; for organs at risk the mean dose and D0.1cc, the dose received by the
  hottest 0.1 cm^3: with ``v = max(1, round(100 mm^3 / voxel volume))`` voxels in 0.1 cm^3 and ``n``
  voxels in the organ, the ``100 - 100 v / n`` percentile (numpy's linear interpolation).
* **DVH score**: the mean absolute difference of every metric that both doses have, over all
  structures and patients.

The OpenKBP leaderboard (test set, 3-D dose prediction models): winner 2.43 Gy dose score / 1.48 Gy
DVH score, 2nd 2.56, median of 28 teams about 3.0, last 14.7.
"""
from __future__ import annotations

import numpy as np

from ..geometry import organ_name, target_level

TARGETS = ("PTV56", "PTV63", "PTV70")
ORGANS = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible")
TARGET_METRICS = {"D99": 1.0, "D95": 5.0, "D1": 99.0}        # name -> percentile of the voxel doses
ORGAN_METRICS = ("D0.1cc", "mean")
LEADERBOARD = {"winner": (2.43, 1.48), "second": (2.56, None), "median of 28 teams": (3.0, None),
               "last": (14.7, None)}
"""OpenKBP test-set leaderboard: (dose score, DVH score) in Gy, where published."""


def dose_score(reference: np.ndarray, predicted: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error (Gy) over the mask voxels.

    Parameters
    ----------
    reference, predicted : dose arrays of the same shape, Gy.
    mask : bool array of that shape (the possible-dose mask, or the body where there is none).
    """
    reference = np.asarray(reference, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if reference.shape != predicted.shape or reference.shape != mask.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, predicted {predicted.shape}, mask {mask.shape}")
    n = int(mask.sum())
    if n == 0:
        raise ValueError("the mask has no voxel: no dose score")
    return float(np.abs(reference[mask] - predicted[mask]).sum() / n)


def tenth_cc_voxels(voxel_volume_mm3: float) -> int:
    """Voxels in 0.1 cm^3 (100 mm^3), at least 1, as the challenge counts them."""
    if not voxel_volume_mm3 > 0:
        raise ValueError(f"voxel volume must be positive, not {voxel_volume_mm3}")
    return int(max(1, round(100.0 / voxel_volume_mm3)))


def dvh_metrics(dose: np.ndarray, structures: dict[str, np.ndarray], voxel_volume_mm3: float) -> dict[str, float]:
    """DVH metrics of one dose for the structures it has.

    Parameters
    ----------
    dose : (z, y, x) Gy.
    structures : name -> (z, y, x) bool mask. Targets are the names that carry a level (``PTV70``,
        :func:`medhash.geometry.target_level`), organs the names of a TG-263 organ in any spelling
        (:func:`medhash.geometry.organ_name`); other names and empty masks are ignored.
    voxel_volume_mm3 : volume of one voxel.

    Returns
    -------
    dict ``"METRIC ROI"`` -> Gy, e.g. ``"D95 PTV70"``, ``"mean SpinalCord"``.
    """
    dose = np.asarray(dose, dtype=np.float64)
    v = tenth_cc_voxels(voxel_volume_mm3)
    out: dict[str, float] = {}
    for name, mask in structures.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != dose.shape:
            raise ValueError(f"{name}: mask shape {mask.shape} is not the dose's {dose.shape}")
        d = dose[mask]
        if not len(d):
            continue
        if name in TARGETS or target_level(name) is not None:
            for metric, pct in TARGET_METRICS.items():
                out[f"{metric} {name}"] = float(np.percentile(d, pct))
        elif name in ORGANS or organ_name(name) is not None:
            out[f"D0.1cc {name}"] = float(np.percentile(d, max(0.0, 100.0 - 100.0 * v / len(d))))
            out[f"mean {name}"] = float(d.mean())
    return out


def dvh_differences(reference: dict[str, float], predicted: dict[str, float]) -> list[float]:
    """|reference - predicted| of every metric both have (Gy)."""
    return [abs(reference[k] - predicted[k]) for k in sorted(reference) if k in predicted]


def dvh_score(pairs: list[tuple[dict[str, float], dict[str, float]]]) -> float:
    """Mean absolute difference over every metric of every (reference, predicted) pair (NaN if none)."""
    diffs = [x for ref, new in pairs for x in dvh_differences(ref, new)]
    return float(np.mean(diffs)) if diffs else float("nan")
