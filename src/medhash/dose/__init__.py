"""Dose: prediction from similar patients (:mod:`.prediction`) and the OpenKBP dose and DVH scores (:mod:`.scores`)."""
from .prediction import DosePrediction, predict_dose, write_prediction
from .scores import LEADERBOARD, dose_score, dvh_metrics, dvh_score, tenth_cc_voxels

__all__ = ["DosePrediction", "LEADERBOARD", "dose_score", "dvh_metrics", "dvh_score", "predict_dose",
           "tenth_cc_voxels", "write_prediction"]
