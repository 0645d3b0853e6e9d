"""Cumulative dose-volume histograms (DVH): one dose's curves, the band of the similar patients' doses,
and their CSV, JSON and PNG files.

* A **cumulative DVH** of a structure gives, at each dose ``D`` of a dose axis (Gy), the percentage of
  the structure's voxels that receive at least ``D``: 100 % at 0 Gy, falling to 0 % above the hottest
  voxel. Every voxel counts the same (the model grid's voxels all have one volume).
* The **band** of ``k`` similar patients: each neighbour's dose, already mapped onto the query's grid,
  gives one DVH per query structure; the band is their minimum, median and maximum at each axis dose.
* :func:`write_dvh` writes ``OUT-dvh.csv`` (long format, one row per structure and axis dose),
  ``OUT-dvh.json`` (the same curves, the axis and the caller's DVH metrics,
  :func:`medhash.dose.scores.dvh_metrics`) and ``OUT-dvh.png`` (one panel per structure, targets first).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from ..geometry import target_level
from ..store.durable import replace_atomically

BAND_ROWS = ("min", "median", "max")
"""The rows of a band array, in order."""
CSV_COLUMNS = ("structure", "dose_gy", "predicted_pct", "band_min_pct", "band_median_pct", "band_max_pct",
               "truth_pct")
MAX_COLUMNS = 4
PREDICTED_COLOUR = "#d7191c"
BAND_COLOUR = "#2c7bb6"
MEDIAN_COLOUR = "#1f4e79"


def dose_axis(max_gy: float, step_gy: float = 0.5) -> np.ndarray:
    """Dose bins from 0 Gy in steps of ``step_gy`` up to the first bin at or above ``max_gy``.

    Parameters
    ----------
    max_gy : float
        Highest dose to cover, Gy (>= 0), e.g. the maximum of the doses to plot.
    step_gy : float
        Bin width, Gy (> 0).

    Returns
    -------
    (m,) float64 array, Gy: ``0, step, 2 step, ..., >= max_gy``; at least two bins (``0, step``).
    """
    max_gy, step_gy = float(max_gy), float(step_gy)
    if not (math.isfinite(step_gy) and step_gy > 0):
        raise ValueError(f"dose step must be a positive number of Gy, not {step_gy}")
    if not (math.isfinite(max_gy) and max_gy >= 0):
        raise ValueError(f"maximum dose must be a finite number of Gy >= 0, not {max_gy}")
    n = max(1, math.ceil(max_gy / step_gy - 1e-9))         # 1e-9: 50 / 0.5 stays 100 bins, not 101
    return step_gy * np.arange(n + 1, dtype=np.float64)


def cumulative_dvh(dose: np.ndarray, mask: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Percentage of a structure's voxels receiving at least each dose of ``axis``.

    Parameters
    ----------
    dose : (n, 128, 128) float32 array, Gy (any shape, the same as ``mask``).
    mask : (n, 128, 128) bool array, the structure's voxels.
    axis : (m,) array, Gy (:func:`dose_axis`).

    Returns
    -------
    (m,) float64 array, %: 100 at 0 Gy for a non-empty mask (doses are >= 0), all NaN for an empty one.

    Raises
    ------
    ValueError
        Shapes differ, or a voxel of the mask has no finite dose.
    """
    dose = np.asarray(dose)
    mask = np.asarray(mask, dtype=bool)
    axis = np.asarray(axis, dtype=np.float64)
    if dose.shape != mask.shape:
        raise ValueError(f"mask shape {mask.shape} is not the dose's {dose.shape}")
    d = np.sort(dose[mask].astype(np.float64))
    if not len(d):
        return np.full(axis.shape, np.nan)
    if not np.isfinite(d).all():
        raise ValueError("the dose is not finite (NaN or inf) in some voxels of the mask")
    below = np.searchsorted(d, axis, side="left")          # voxels with dose < axis value
    return 100.0 * (len(d) - below) / len(d)


def structure_dvhs(dose: np.ndarray, structures: dict[str, np.ndarray], axis: np.ndarray) -> dict[str, np.ndarray]:
    """The cumulative DVH of each non-empty structure.

    Parameters
    ----------
    dose : (n, 128, 128) float32 array, Gy.
    structures : name -> (n, 128, 128) bool mask; empty masks are skipped.
    axis : (m,) array, Gy.

    Returns
    -------
    name -> (m,) float64 array, % (:func:`cumulative_dvh`), in the order of ``structures``.
    """
    out: dict[str, np.ndarray] = {}
    for name, mask in structures.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            out[name] = cumulative_dvh(dose, mask, axis)
    return out


def dvh_band(doses: list[np.ndarray], structures: dict[str, np.ndarray], axis: np.ndarray) -> dict[str, np.ndarray]:
    """Minimum, median and maximum of several doses' DVHs of the same structures.

    Parameters
    ----------
    doses : list of k (n, 128, 128) float32 arrays, Gy: each similar patient's dose on the query's grid.
    structures : name -> (n, 128, 128) bool mask of the query; empty masks are skipped.
    axis : (m,) array, Gy.

    Returns
    -------
    name -> (3, m) float64 array, %: rows min, median, max (:data:`BAND_ROWS`) over the k DVHs at
    each axis dose (an even k takes the mean of the two middle DVHs as median).
    """
    doses = list(doses)
    if not doses:
        raise ValueError("a DVH band needs at least one dose")
    curves = [structure_dvhs(d, structures, axis) for d in doses]
    out: dict[str, np.ndarray] = {}
    for name in curves[0]:
        stack = np.stack([c[name] for c in curves])          # (k, m)
        out[name] = np.stack([stack.min(axis=0), np.median(stack, axis=0), stack.max(axis=0)])
    return out


def structure_order(names) -> list[str]:
    """Targets first (names with a level, :func:`medhash.geometry.target_level`; highest level first,
    then by name), then the other structures by name."""
    names = list(dict.fromkeys(names))
    targets = sorted((n for n in names if target_level(n) is not None), key=lambda n: (-target_level(n), n))
    return targets + sorted(n for n in names if target_level(n) is None)


def _check_curves(axis: np.ndarray, predicted: dict, band: dict | None, truth: dict | None) -> None:
    m = len(axis)
    for what, curves, shape in (("predicted", predicted, (m,)), ("band", band or {}, (3, m)),
                                ("truth", truth or {}, (m,))):
        for name, curve in curves.items():
            if np.shape(curve) != shape:
                raise ValueError(f"{what} {name}: shape {np.shape(curve)}, expected {shape} for {m} axis doses")


def _cell(value: float) -> str:
    """One CSV cell: 4 decimals, empty for NaN."""
    return "" if not np.isfinite(value) else f"{value:.4f}"


def jsonable(value):
    """numpy arrays and numbers as lists and floats, NaN and inf as None (strict JSON); dicts and
    lists walked through, anything else as it is."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


def _write_csv(path: Path, axis: np.ndarray, names: list[str], predicted: dict, band: dict, truth: dict) -> None:
    nan = np.full(len(axis), np.nan)
    with replace_atomically(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for name in names:
            p = predicted.get(name, nan)
            b = band.get(name, np.stack([nan, nan, nan]))
            t = truth.get(name, nan)
            for i, gy in enumerate(axis):
                w.writerow([name, f"{gy:g}", _cell(p[i]), _cell(b[0][i]), _cell(b[1][i]), _cell(b[2][i]),
                            _cell(t[i])])


def _write_json(path: Path, axis: np.ndarray, names: list[str], predicted: dict, band: dict, truth: dict,
                metrics: dict | None, title: str) -> None:
    curves = {}
    for name in names:
        entry = {}
        if name in predicted:
            entry["predicted_pct"] = predicted[name]
        if name in band:
            entry.update({f"band_{row}_pct": band[name][j] for j, row in enumerate(BAND_ROWS)})
        if name in truth:
            entry["truth_pct"] = truth[name]
        curves[name] = entry
    data = {"title": title, "unit": {"dose": "Gy", "volume": "%"}, "dose_gy": axis, "structures": names,
            "curves": curves, "metrics": metrics or {}}
    with replace_atomically(path) as tmp, open(tmp, "w") as f:
        json.dump(jsonable(data), f, indent=1, allow_nan=False)
        f.write("\n")


def _draw_panel(ax, name: str, axis: np.ndarray, predicted: dict, band: dict, truth: dict) -> None:
    """One structure's curves on one matplotlib axis."""
    if name in band:
        ax.fill_between(axis, band[name][0], band[name][2], color=BAND_COLOUR, alpha=0.25, linewidth=0)
    if name in predicted:
        ax.plot(axis, predicted[name], color=PREDICTED_COLOUR, linestyle="-", linewidth=1.6)
    if name in band:                                       # dashes over the predicted line: both stay visible
        ax.plot(axis, band[name][1], color=MEDIAN_COLOUR, linestyle="--", linewidth=1.2)
    if name in truth:
        ax.plot(axis, truth[name], color="black", linestyle=":", linewidth=1.6)
    ax.set_xlim(0, float(axis[-1]))
    ax.set_ylim(0, 102)                                    # 102: a curve at 100 % stays clear of the frame
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.tick_params(labelsize=7)
    ax.set_title(name if len(name) <= 28 else name[:27] + "…", fontsize=9)


def _legend_handles(band: dict, truth: dict, truth_label: str = "truth") -> tuple[list, list[str]]:
    from matplotlib.lines import Line2D  # start-up: matplotlib only when a figure is drawn
    from matplotlib.patches import Patch  # (as above)

    handles = [Line2D([0], [0], color=PREDICTED_COLOUR, lw=1.6)]
    labels = ["predicted"]
    if band:
        handles += [Patch(facecolor=BAND_COLOUR, alpha=0.25), Line2D([0], [0], color=MEDIAN_COLOUR, lw=1.2, ls="--")]
        labels += ["similar patients (min-max)", "similar patients (median)"]
    if truth:
        handles.append(Line2D([0], [0], color="black", lw=1.6, ls=":"))
        labels.append(truth_label)
    return handles, labels


def _figure(axis: np.ndarray, names: list[str], predicted: dict, band: dict, truth: dict, title: str,
            truth_label: str = "truth"):
    """The DVH figure (a matplotlib Figure with an Agg canvas): one panel per structure, at most
    :data:`MAX_COLUMNS` columns, the legend below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # start-up: matplotlib only when a figure is drawn
    from matplotlib.figure import Figure  # start-up: matplotlib only when a figure is drawn

    n = max(1, len(names))
    ncols = min(MAX_COLUMNS, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(max(3.0 * ncols, 5.0), 2.4 * nrows + 0.9), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for j, ax in enumerate(axes.flat):
        if j >= len(names):
            ax.remove()
            continue
        _draw_panel(ax, names[j], axis, predicted, band, truth)
        if j + ncols >= len(names):                        # lowest panel of its column
            ax.set_xlabel("dose (Gy)", fontsize=8)
        if j % ncols == 0:
            ax.set_ylabel("volume (%)", fontsize=8)
    if not names:
        fig.text(0.5, 0.5, "no structure to show", ha="center", va="center")
    else:
        handles, labels = _legend_handles(band, truth, truth_label)
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels) if ncols >= 3 else 2, fontsize=8,
                   frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _write_png(path: Path, axis: np.ndarray, names: list[str], predicted: dict, band: dict, truth: dict,
               title: str) -> None:
    fig = _figure(axis, names, predicted, band, truth, title)
    with replace_atomically(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _curves(axis, predicted, band, truth) -> tuple[np.ndarray, dict, dict, dict, list[str]]:
    """The checked inputs of :func:`write_dvh` and :func:`dvh_png` as float64 arrays, and the
    structures in drawing order (:func:`structure_order`)."""
    axis = np.asarray(axis, dtype=np.float64)
    if axis.ndim != 1 or len(axis) < 2:
        raise ValueError(f"the dose axis needs at least two doses, not shape {axis.shape}")
    predicted = {k: np.asarray(v, dtype=np.float64) for k, v in predicted.items()}
    band = {k: np.asarray(v, dtype=np.float64) for k, v in (band or {}).items()}
    truth = {k: np.asarray(v, dtype=np.float64) for k, v in (truth or {}).items()}
    _check_curves(axis, predicted, band, truth)
    return axis, predicted, band, truth, structure_order([*predicted, *band, *truth])


def dvh_png(axis: np.ndarray, predicted: dict[str, np.ndarray], band: dict[str, np.ndarray] | None = None,
            truth: dict[str, np.ndarray] | None = None, title: str = "", truth_label: str = "truth") -> bytes:
    """The PNG of :func:`write_dvh` as bytes (the web app serves it), drawn by the same code.

    Parameters are those of :func:`write_dvh`; ``truth_label`` names the dotted curve in the legend
    (``"real plan"`` on the web page). Not thread-safe (matplotlib): callers serialise drawing.
    """
    import io  # start-up: only when a figure is drawn

    axis, predicted, band, truth, names = _curves(axis, predicted, band, truth)
    buf = io.BytesIO()
    _figure(axis, names, predicted, band, truth, title, truth_label).savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def write_dvh(out: str | Path, axis: np.ndarray, predicted: dict[str, np.ndarray],
              band: dict[str, np.ndarray] | None = None, truth: dict[str, np.ndarray] | None = None,
              metrics: dict | None = None, title: str = "") -> dict[str, Path]:
    """Write the DVH curves of one query as ``OUT-dvh.csv``, ``OUT-dvh.json`` and ``OUT-dvh.png``.

    Parameters
    ----------
    out : path without suffix (``results/p001`` -> ``results/p001-dvh.csv``, ...); folders are made.
    axis : (m,) array, Gy (:func:`dose_axis`).
    predicted : name -> (m,) %, the predicted dose's DVHs (:func:`structure_dvhs`).
    band : name -> (3, m) %, min / median / max of the similar patients' DVHs (:func:`dvh_band`).
    truth : name -> (m,) %, the delivered (reference) dose's DVHs, when known.
    metrics : written as given into the JSON, e.g. ``{"predicted": dvh_metrics(...), "truth": ...}``
        (:func:`medhash.dose.scores.dvh_metrics`, Gy); NaN becomes null.
    title : the figure's title and the JSON's ``title``.

    Returns
    -------
    ``{"csv": path, "json": path, "png": path}``.

    Notes
    -----
    Structures are those of ``predicted``, ``band`` and ``truth`` together, targets first
    (:func:`structure_order`). The CSV has the columns :data:`CSV_COLUMNS`, % with 4 decimals, an empty
    cell where a curve is absent or NaN. The PNG has one panel per structure in at most 4 columns:
    predicted solid, band shaded between min and max with its median dashed, truth black dotted.
    """
    axis, predicted, band, truth, names = _curves(axis, predicted, band, truth)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = {kind: out.with_name(f"{out.name}-dvh.{kind}") for kind in ("csv", "json", "png")}
    _write_csv(files["csv"], axis, names, predicted, band, truth)
    _write_json(files["json"], axis, names, predicted, band, truth, metrics, title)
    _write_png(files["png"], axis, names, predicted, band, truth, title)
    return files
