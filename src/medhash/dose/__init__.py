"""Dose: at planning time from geometry and the archive's plans (:mod:`.planning`: the dose model of
:mod:`.model`, transfer by anatomy of :mod:`.transfer` from the neighbours of :mod:`.atlas`), the
slice-pasting rule of :mod:`.prediction`, and the OpenKBP dose and DVH scores (:mod:`.scores`)."""
from .atlas import Atlas, build_atlas, patients_with_dose
from .dvh import cumulative_dvh, dose_axis, dvh_band, structure_dvhs, structure_order, write_dvh
from .model import DoseModel, fit_dose_model, list_dose_models, load_dose_model
from .planning import METHODS, NEIGHBOURS_BY, predict_dose_planned
from .prediction import DosePrediction, predict_dose, write_prediction
from .scores import LEADERBOARD, dose_score, dvh_metrics, dvh_score, tenth_cc_voxels

__all__ = ["Atlas", "DoseModel", "DosePrediction", "LEADERBOARD", "METHODS", "NEIGHBOURS_BY", "build_atlas",
           "cumulative_dvh", "dose_axis", "dose_score", "dvh_band", "dvh_metrics", "dvh_score", "structure_dvhs",
           "structure_order", "write_dvh", "fit_dose_model", "list_dose_models", "load_dose_model",
           "patients_with_dose", "predict_dose", "predict_dose_planned", "tenth_cc_voxels", "write_prediction"]
