"""Planning-time dose for the web app: ``GET /api/patients/{id}/planned-dose`` (JSON) and its
``/dvh.png`` figure, from :func:`medhash.dose.planning.predict_dose_planned`.

The prediction reads only the query patient's CT and contours and the other patients' plans
(never its own plan, which is shown beside it as the "real plan"). :class:`PlannedDoseCache`
keeps the last few answers, keyed by every request parameter and the archive's size, so that the
JSON and the PNG of one request (the page fetches both) cost one prediction.

LightGBM, scipy and matplotlib are imported only when a prediction or a figure is made: the app
starts without them.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

CACHE_SIZE = 16
"""Predictions kept (least recently used dropped first); each holds curves and metrics, not the dose."""
TRUTH_LABEL = "real plan"
"""The dotted curve's name on the page and in the figure: the patient's own delivered plan."""


@dataclass
class PlannedDose:
    """One prediction's answer: ``body`` (the route's JSON, strict), ``dvh`` (the curves as arrays,
    for the figure) and, once drawn, ``png``."""

    body: dict
    dvh: dict
    png: bytes | None = field(default=None, repr=False)


class PlannedDoseCache:
    """The last :data:`CACHE_SIZE` planned doses, thread-safe; a key is computed at most once at a time."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[tuple, PlannedDose] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> PlannedDose | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple, item: PlannedDose) -> PlannedDose:
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return item


def neighbour_rows(patients: list[dict]) -> list[dict]:
    """The neighbours used, most similar first: ``patient_id`` and the distance or score that ranked them."""
    keep = ("patient_id", "geometry_distance", "ct_score", "fused_score")
    return [{"rank": r, **{k: p[k] for k in keep if k in p}} for r, p in enumerate(patients, start=1)]


def dvh_lists(dvh: dict) -> dict:
    """The curves of :func:`medhash.dose.planning.dvh_summary` as JSON: ``axis_gy``, ``structures``
    (targets first), ``predicted`` {name: [%]}, ``band`` {name: {min, median, max}: [%]}, ``truth``
    ({name: [%]} or None); NaN as null."""
    from ..dose.dvh import BAND_ROWS, jsonable, structure_order  # start-up: the dose package when predicting

    band = {name: {row: b[j] for j, row in enumerate(BAND_ROWS)} for name, b in dvh["band"].items()}
    names = structure_order([*dvh["predicted"], *dvh["band"], *(dvh["truth"] or {})])
    return jsonable({"axis_gy": dvh["axis"], "structures": names, "predicted": dvh["predicted"], "band": band,
                     "truth": dvh["truth"]})


def answer(pred, patient_id: str, k: int, index: str | None) -> dict:
    """The JSON of ``GET /api/patients/{id}/planned-dose`` for a :class:`~medhash.dose.DosePrediction`."""
    from ..dose.dvh import jsonable  # start-up: the dose package when predicting

    q = pred.query
    metrics = {"predicted": pred.dvh["metrics"]["predicted"], "truth": pred.dvh["metrics"].get("truth")}
    return jsonable({
        "patient_id": patient_id, "method": q["method"], "dose_model": q["dose_model"],
        "neighbours_by": q["neighbours_by"], "k": len(pred.patients), "k_asked": k, "index": index,
        "levels_gy": q["levels_gy"], "structures": q["structures"], "neighbours": neighbour_rows(pred.patients),
        "metrics": metrics, "dvh": dvh_lists(pred.dvh), "seconds": q["seconds"],
    })


def figure_title(body: dict) -> str:
    """The DVH figure's title: patient, method, neighbours (patient ids only)."""
    how = f"dose model {body['dose_model']}" if body["method"] == "model" else "neighbours' plans"
    return (f"{body['patient_id']}: planning-time dose ({how}; {body['k']} similar patients by "
            f"{body['neighbours_by']})")


def draw(item: PlannedDose) -> bytes:
    """The DVH PNG of a planned dose (predicted, neighbour band, real plan dotted)."""
    from ..dose.dvh import dvh_png  # start-up: matplotlib only when a figure is drawn

    d = item.dvh
    return dvh_png(d["axis"], d["predicted"], d["band"], d["truth"], figure_title(item.body), truth_label=TRUTH_LABEL)
