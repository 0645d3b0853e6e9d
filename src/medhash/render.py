"""Every slice picture medhash draws: CT in a window, isodose lines with a legend, result grids
(``medhash search --png``) and the web app's slice PNGs (:func:`render_png`).

* CT is shown in a soft-tissue window (width 400 HU, level 40 HU) by default.
* Dose is drawn as isodose lines at fixed levels (``ISODOSE_GY``), the same colours in every panel,
  with one legend for the figure.
* Panels are cropped to one square around the body of all the slices shown (plus a margin), so
  a head-and-neck slice is not lost in the 500 mm field of view of the model grid.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .core.grid import BODY_HU, GRID_SIZE, GRID_SPACING_MM

ISODOSE_GY = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0)
ISODOSE_COLOURS = ("#2c7bb6", "#00a6ca", "#00ccbc", "#90eb9d", "#f9d057", "#f29e2e", "#d7191c")
SOFT_TISSUE_WINDOW = (40.0, 400.0)  # level, width in HU


def crop_box(images: list[np.ndarray], margin_px: int = 6, min_size: int = 48) -> tuple[slice, slice]:
    """One square (rows, cols) window holding the body of every image (HU, model grid)."""
    body = np.zeros((GRID_SIZE, GRID_SIZE), dtype=bool)
    for img in images:
        if img is not None:
            body |= img > BODY_HU
    if not body.any():
        return slice(0, GRID_SIZE), slice(0, GRID_SIZE)
    rows, cols = np.nonzero(body)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    size = int(min(GRID_SIZE, max(min_size, r1 - r0 + 2 * margin_px, c1 - c0 + 2 * margin_px)))
    rc, cc = (r0 + r1) // 2, (c0 + c1) // 2
    rs = int(np.clip(rc - size // 2, 0, GRID_SIZE - size))
    cs = int(np.clip(cc - size // 2, 0, GRID_SIZE - size))
    return slice(rs, rs + size), slice(cs, cs + size)


def draw_slice(ax, ct: np.ndarray, dose: np.ndarray | None = None, *, window=SOFT_TISSUE_WINDOW,
               crop: tuple[slice, slice] | None = None, title: str = "", levels=ISODOSE_GY) -> None:
    """Draw one slice on a matplotlib axis: CT in ``window`` (level, width HU), isodose lines in Gy."""
    level, width = window
    rs, cs = crop or (slice(0, GRID_SIZE), slice(0, GRID_SIZE))
    ax.imshow(ct[rs, cs], cmap="gray", vmin=level - width / 2, vmax=level + width / 2, interpolation="bilinear")
    if dose is not None and np.nanmax(dose) > 0:
        d = dose[rs, cs]
        present = [(lv, col) for lv, col in zip(levels, ISODOSE_COLOURS) if d.max() >= lv]
        if present:
            ax.contour(d, levels=[p[0] for p in present], colors=[p[1] for p in present], linewidths=1.0)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def render_png(ct: np.ndarray, dose: np.ndarray | None, *, level: float = SOFT_TISSUE_WINDOW[0],
               width: float = SOFT_TISSUE_WINDOW[1], show_dose: bool = True, size: int = 256,
               crop: str = "body") -> bytes:
    """One slice as a square PNG of ``size`` x ``size`` pixels (the web app's pictures).

    Parameters
    ----------
    ct : (128, 128) array
        CT in HU on the model grid.
    dose : (128, 128) array or None
        Dose in Gy, drawn as isodose lines when ``show_dose``.
    level, width : float
        CT window in HU (default W400/L40).
    show_dose : bool
        Draw the isodose lines.
    size : int
        Side of the picture, pixels.
    crop : {"body", "full"}
        ``"body"``: a square around the body, as in ``medhash search --png``; ``"full"``: the whole
        500 mm model grid.

    Returns
    -------
    bytes
        The PNG file. Not thread-safe (matplotlib): callers serialise.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # start-up: matplotlib only when drawing
    from matplotlib.figure import Figure  # start-up: matplotlib only when drawing

    fig = Figure(figsize=(size / 100, size / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    box = crop_box([ct]) if crop == "body" else None
    draw_slice(ax, ct, dose if show_dose else None, window=(level, width), crop=box)
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def render_results(query_ct: np.ndarray, query_dose: np.ndarray | None, query_title: str,
                   results: list[tuple[np.ndarray, np.ndarray | None, str]], out: str | Path, *,
                   suptitle: str = "", ncols: int = 6) -> Path:
    """Write a PNG grid: the query first (framed), then each result with its caption.

    Parameters
    ----------
    query_ct, query_dose : (128, 128) HU and Gy (dose may be None).
    results : (ct HU, dose Gy or None, caption) per result, in rank order.
    out : PNG path.
    """
    import matplotlib  # start-up: matplotlib only when drawing
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # start-up: matplotlib only when drawing
    from matplotlib.lines import Line2D  # (as above)

    panels = [(query_ct, query_dose, query_title)] + list(results)
    crop = crop_box([p[0] for p in panels])
    n = len(panels)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 2.5 * nrows + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for j, (ct, dose, caption) in enumerate(panels):
        ax = axes.flat[j]
        ax.axis("on")
        draw_slice(ax, ct, dose, crop=crop, title=caption)
        if j == 0:
            for side in ax.spines.values():
                side.set_edgecolor("#d7191c")
                side.set_linewidth(2.5)
    any_dose = any(p[1] is not None and np.nanmax(p[1]) > 0 for p in panels)
    if any_dose:
        handles = [Line2D([0], [0], color=c, lw=2) for c in ISODOSE_COLOURS]
        fig.legend(handles, [f"{lv:g} Gy" for lv in ISODOSE_GY], loc="lower center", ncol=len(ISODOSE_GY),
                   fontsize=8, frameon=False, title="isodose lines", title_fontsize=8)
    size_mm = (crop[0].stop - crop[0].start) * GRID_SPACING_MM
    fig.suptitle((suptitle + "\n" if suptitle else "") +
                 f"CT window W{SOFT_TISSUE_WINDOW[1]:g}/L{SOFT_TISSUE_WINDOW[0]:g} HU, panels {size_mm:.0f} mm wide",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.08 if any_dose else 0, 1, 0.95))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def render_search(archive, result: dict, query, out: str | Path) -> Path:
    """The PNG grid of a :func:`medhash.search` result (query + top-k)."""
    q = result["query"]
    if q["type"] == "archive":
        qtitle = f"query {q['patient_id']}:{q['slice_index']}\nz {q['z_mm']:.1f} mm"
    else:
        qtitle = f"query {Path(q['file']).name}"
    panels = []
    for r in result["results"]:
        s = archive.get(r["patient_id"], r["slice_index"])
        dist = f"H {r['hamming']}" + (f", E {r['euclidean']:.3g}" if "euclidean" in r else "")
        panels.append((s.ct, s.dose, f"#{r['rank']} {r['patient_id']}:{r['slice_index']}\n{dist}"))
    title = (f"index {result['index']} ({result['channel']}, {result['n_bits']} bits), top {result['k']}"
             + (f", re-ranked from {result['rerank']}" if result["rerank"] else "")
             + ("" if result["same_patient"] else ", other patients only"))
    return render_results(query.ct, query.dose, qtitle, panels, out, suptitle=title)
