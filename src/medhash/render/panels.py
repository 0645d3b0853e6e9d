"""One slice on one axis: CT in a window, isodose lines, the crop around the body, the web's slice PNGs.

* CT is shown in a soft-tissue window (width 400 HU, level 40 HU) by default.
* Dose is drawn as isodose lines at the levels given (Gy), each in its own colour
  (:mod:`medhash.render.isodose`); a level is drawn on a panel only where its dose crosses it.
* Panels are cropped to one square around the body of all the slices shown (plus a margin), so
  a head-and-neck slice is not lost in the 500 mm field of view of the model grid.
"""
from __future__ import annotations

import io

import numpy as np

from ..core.grid import BODY_HU, GRID_SIZE
from .isodose import ISODOSE_COLOURS, ISODOSE_GY, level_colours, resolve_levels

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
               crop: tuple[slice, slice] | None = None, title: str = "", levels=ISODOSE_GY,
               colours=None) -> list[float]:
    """Draw one slice on a matplotlib axis: CT in a window, isodose lines.

    Parameters
    ----------
    ax : matplotlib axis.
    ct : (128, 128) float32, HU.
    dose : (128, 128) float32, Gy, or None (no lines).
    window : (level, width), HU.
    crop : (rows, cols) slices of the model grid to show (default: all of it).
    title : caption above the panel.
    levels : isodose levels, Gy (default :data:`ISODOSE_GY`).
    colours : one colour per level (default: :func:`~medhash.render.isodose.level_colours`).

    Returns
    -------
    list of float : the levels (Gy) drawn on this panel, highest first (those the dose crosses).
    """
    level, width = window
    rs, cs = crop or (slice(0, GRID_SIZE), slice(0, GRID_SIZE))
    ax.imshow(ct[rs, cs], cmap="gray", vmin=level - width / 2, vmax=level + width / 2, interpolation="bilinear")
    drawn: list[float] = []
    if dose is not None and np.nanmax(dose) > 0 and len(levels):
        d = np.nan_to_num(dose[rs, cs])
        colours = colours or (ISODOSE_COLOURS if tuple(levels) == ISODOSE_GY else level_colours(levels))
        present = sorted(((float(lv), col) for lv, col in zip(levels, colours) if d.min() < lv < d.max()))
        if present:
            ax.contour(d, levels=[p[0] for p in present], colors=[p[1] for p in present], linewidths=1.0)
            drawn = [p[0] for p in reversed(present)]
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return drawn


def render_png(ct: np.ndarray, dose: np.ndarray | None, *, level: float = SOFT_TISSUE_WINDOW[0],
               width: float = SOFT_TISSUE_WINDOW[1], show_dose: bool = True, size: int = 256,
               crop: str = "body", isodose=None, reference_gy: float | None = None) -> bytes:
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
    isodose : None, text, IsodoseSpec or Gy values
        None: the fixed levels :data:`ISODOSE_GY` (10 to 70 Gy, the web app's legend); else what
        :func:`~medhash.render.isodose.parse_isodose` reads, percent levels relative to
        ``reference_gy``.
    reference_gy : float or None
        Dose that percent levels are relative to, Gy (so that the pictures of one result page share
        the query's levels); None: this slice's maximum dose.

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
    levels, colours = ISODOSE_GY, ISODOSE_COLOURS
    if isodose is not None:
        top = float(np.nanmax(dose)) if dose is not None else None
        iso = resolve_levels(isodose, reference_gy if reference_gy else top, "the slice's maximum")
        levels, colours = iso.gy, iso.colours
    draw_slice(ax, ct, dose if show_dose else None, window=(level, width), crop=box, levels=levels, colours=colours)
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
