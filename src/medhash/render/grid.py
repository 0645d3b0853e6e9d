"""Result grids (``medhash search --png``, the evaluation's figures): the query and its results, captioned.

Layout (sizes in inches, the figure sized from the number of rows, nothing left to ``tight_layout``):

* a header: the verdict (``"no similar slice in this archive"``, in red, when the search's calibration
  says so), then the title lines, wrapped to the figure's width;
* the query on its own at the left, framed in red; the results to its right in rank order, rows of
  at most :data:`MAX_COLS` panels (any k: 1, 10 or 50 results); or, when the caller asks for
  ``ncols``, every panel (query first) in one grid of ``ncols`` columns;
* each panel's caption above it, shortened in the middle (``…``) where it would be wider than the
  panel, so that no caption reaches its neighbour;
* one isodose legend at the bottom (levels in Gy), in as many rows as the figure's width needs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.grid import GRID_SPACING_MM
from .isodose import resolve_levels
from .panels import SOFT_TISSUE_WINDOW, crop_box, draw_slice

MAX_COLS = 5
"""Results a row of the grid holds at most (when the query stands apart at the left)."""
PANEL_IN, GAP_IN, ROW_GAP_IN, QUERY_SEP_IN, MARGIN_IN = 1.9, 0.16, 0.14, 0.4, 0.15
CAPTION_PT, TITLE_PT, VERDICT_PT, LINE_SPACING = 8.0, 9.0, 10.0, 1.35
DPI = 110
QUERY_FRAME = "#d7191c"
ALARM, CALM = "#b2182b", "#1a6b30"


@dataclass
class Layout:
    """Where each panel goes: ``cells[j] = (x_in, row)`` for panel j (the query is panel 0), the
    figure's width and the rows' count. ``apart``: the query stands alone at the left."""

    cells: list[tuple[float, int]]
    width_in: float
    nrows: int
    apart: bool


def grid_layout(n_results: int, ncols: int | None = None) -> Layout:
    """Panel positions for a query and ``n_results`` results.

    Parameters
    ----------
    n_results : int, results shown (>= 0).
    ncols : None: the query alone at the left, results in rows of at most :data:`MAX_COLS`;
        an int: all panels (query first) in a grid of ``ncols`` columns.
    """
    step = PANEL_IN + GAP_IN
    if ncols is None:
        cols = max(1, min(MAX_COLS, n_results))
        x0 = MARGIN_IN + PANEL_IN + QUERY_SEP_IN
        cells = [(MARGIN_IN, 0)] + [(x0 + (i % cols) * step, i // cols) for i in range(n_results)]
        nrows = max(1, math.ceil(n_results / cols))
        return Layout(cells, x0 + cols * step - GAP_IN + MARGIN_IN, nrows, True)
    cols = max(1, min(int(ncols), n_results + 1))
    cells = [(MARGIN_IN + (j % cols) * step, j // cols) for j in range(n_results + 1)]
    return Layout(cells, 2 * MARGIN_IN + cols * step - GAP_IN, math.ceil((n_results + 1) / cols), False)


def _text_px(renderer, text: str, size: float, weight: str = "normal") -> float:
    """Width in pixels of one line of text at ``size`` points (the renderer's dpi)."""
    from matplotlib.font_manager import FontProperties  # start-up: matplotlib only when drawing
    w, _, _ = renderer.get_text_width_height_descent(text, FontProperties(size=size, weight=weight), ismath=False)
    return float(w)


def shorten(renderer, line: str, size: float, max_px: float, weight: str = "normal") -> str:
    """``line`` itself when it fits in ``max_px`` pixels, else cut in the middle with ``…``."""
    if _text_px(renderer, line, size, weight) <= max_px:
        return line
    keep = len(line) - 1
    while keep > 1:
        head = (keep + 1) // 2
        cut = line[:head] + "…" + line[len(line) - (keep - head):]
        if _text_px(renderer, cut, size, weight) <= max_px:
            return cut
        keep -= 1
    return line[:1] + "…"


def wrap(renderer, text: str, size: float, max_px: float, weight: str = "normal") -> list[str]:
    """``text`` broken into lines no wider than ``max_px`` pixels: at spaces (kept lines: the
    ``\\n`` in ``text``); a word wider than a line is shortened."""
    out: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            trial = f"{line} {word}" if line else word
            if line and _text_px(renderer, trial, size, weight) > max_px:
                out.append(shorten(renderer, line, size, max_px, weight))
                line = word
            else:
                line = trial
        out.append(shorten(renderer, line, size, max_px, weight))
    return out


def _reference(panels, reference_gy: float | None, reference_name: str | None,
               first: str = "the query slice") -> tuple[float | None, str]:
    """The reference dose of percent levels: given (the prescription), else the maximum of the first
    panel (the query, named ``first`` in the legend), else the maximum of all the slices shown."""
    if reference_gy is not None and reference_gy > 0:
        return float(reference_gy), reference_name or "the prescription"
    top = [float(np.nanmax(d)) if d is not None else 0.0 for _, d, _ in panels]
    if top[0] > 0:
        return top[0], f"{first}'s maximum"
    if max(top) > 0:
        return max(top), "the maximum of the slices shown"
    return None, ""


def _legend(fig, renderer, iso, width_px: float):
    """The isodose legend in as few rows as fit ``width_px``, its columns filled evenly (read top
    down, highest level first); returns (legend, height in px)."""
    from matplotlib.lines import Line2D  # start-up: matplotlib only when drawing

    handles = [Line2D([0], [0], color=c, lw=2.5) for c in iso.colours]
    title = "\n".join(wrap(renderer, iso.title, CAPTION_PT, width_px))
    rows = 1
    while True:
        ncol = math.ceil(len(handles) / rows)
        leg = fig.legend(handles, list(iso.labels), loc="lower center", ncol=ncol, fontsize=CAPTION_PT,
                         frameon=False, title=title, title_fontsize=CAPTION_PT, columnspacing=1.2, handlelength=1.6)
        box = leg.get_window_extent(renderer)
        if box.width <= width_px or ncol == 1:
            return leg, box.height
        leg.remove()
        rows += 1


def grid_figure(query_ct: np.ndarray, query_dose: np.ndarray | None, query_title: str,
                results: list[tuple[np.ndarray, np.ndarray | None, str]], *, suptitle: str = "",
                ncols: int | None = None, isodose=None, reference_gy: float | None = None,
                reference_name: str | None = None, verdict: str = "", alarm: bool = False):
    """The grid as a matplotlib Figure (Agg canvas attached); see :func:`render_results`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # start-up: matplotlib only when drawing
    from matplotlib.figure import Figure  # start-up: matplotlib only when drawing

    panels = [(query_ct, query_dose, query_title)] + list(results)
    lay = grid_layout(len(results), ncols)
    fig = Figure(figsize=(lay.width_in, 4.0), dpi=DPI)
    renderer = FigureCanvasAgg(fig).get_renderer()
    inner_px = (lay.width_in - 2 * MARGIN_IN) * DPI
    captions = [[shorten(renderer, ln, CAPTION_PT, PANEL_IN * DPI) for ln in str(c).split("\n")] for _, _, c in panels]
    header = [(ln, VERDICT_PT, "bold", ALARM if alarm else CALM) for ln in wrap(renderer, verdict, VERDICT_PT,
                                                                             inner_px, "bold") if verdict]
    crop = crop_box([p[0] for p in panels])
    size_mm = (crop[0].stop - crop[0].start) * GRID_SPACING_MM
    window = f"CT window W{SOFT_TISSUE_WINDOW[1]:g}/L{SOFT_TISSUE_WINDOW[0]:g} HU, panels {size_mm:.0f} mm wide"
    header += [(ln, TITLE_PT, "normal", "black") for ln in wrap(renderer, suptitle + ("\n" if suptitle else "")
                                                                + window, TITLE_PT, inner_px)]
    first = "the query slice" if lay.apart else "the framed slice"
    iso = resolve_levels(isodose, *_reference(panels, reference_gy, reference_name, first))
    any_dose = bool(iso.gy) and any(d is not None and np.nanmax(d) > 0 for _, d, _ in panels)
    leg, leg_px = _legend(fig, renderer, iso, inner_px) if any_dose else (None, 0.0)

    header_in = sum(size * LINE_SPACING / 72 for _, size, _, _ in header) + 0.08
    caption_in = max(len(c) for c in captions) * CAPTION_PT * LINE_SPACING / 72 + 0.08
    row_in = caption_in + PANEL_IN + ROW_GAP_IN
    legend_in = leg_px / DPI + 0.1 if leg is not None else 0.0
    height = 2 * MARGIN_IN + header_in + lay.nrows * row_in + legend_in
    fig.set_size_inches(lay.width_in, height)

    y = MARGIN_IN
    for text, size, weight, colour in header:
        y += size * LINE_SPACING / 72
        fig.text(0.5, 1 - y / height, text, ha="center", va="baseline", fontsize=size, fontweight=weight, color=colour)
    top0 = MARGIN_IN + header_in
    for j, ((ct, dose, _), cap, (x_in, row)) in enumerate(zip(panels, captions, lay.cells)):
        top = top0 + row * row_in + caption_in
        ax = fig.add_axes((x_in / lay.width_in, 1 - (top + PANEL_IN) / height, PANEL_IN / lay.width_in,
                           PANEL_IN / height))
        draw_slice(ax, ct, dose if any_dose else None, crop=crop, levels=iso.gy, colours=iso.colours)
        ax.set_title("\n".join(cap), fontsize=CAPTION_PT, pad=3, color=QUERY_FRAME if j == 0 else "black")
        if j == 0:
            for side in ax.spines.values():
                side.set_edgecolor(QUERY_FRAME)
                side.set_linewidth(2.5)
    if leg is not None:
        leg.set_bbox_to_anchor((0.5, MARGIN_IN / height), transform=fig.transFigure)
    return fig


def render_results(query_ct: np.ndarray, query_dose: np.ndarray | None, query_title: str,
                   results: list[tuple[np.ndarray, np.ndarray | None, str]], out: str | Path, *,
                   suptitle: str = "", ncols: int | None = None, isodose=None, reference_gy: float | None = None,
                   reference_name: str | None = None, verdict: str = "", alarm: bool = False) -> Path:
    """Write a PNG grid: the query (framed in red), then each result with its caption.

    Parameters
    ----------
    query_ct, query_dose : (128, 128) float32, HU and Gy (dose may be None).
    query_title : the query's caption (lines separated by ``\\n``).
    results : (ct HU, dose Gy or None, caption) per result, in rank order; any number.
    out : PNG path (its folder is made).
    suptitle : title lines above the grid (wrapped to the figure's width).
    ncols : None (default): the query alone at the left and the results in rows of at most
        :data:`MAX_COLS`; an int: every panel, query first, in ``ncols`` columns.
    isodose : levels: None (95, 80, 50 and 20 % of the reference dose), text such as
        ``"95,80,50,20%"`` or ``"10,20,30"`` (Gy), an :class:`~medhash.render.isodose.IsodoseSpec`,
        or Gy values (see :func:`~medhash.render.isodose.parse_isodose`).
    reference_gy : reference dose of percent levels, Gy (the prescription); default: the query
        slice's maximum dose, else the maximum of the slices shown.
    reference_name : words for ``reference_gy`` in the legend (default ``"the prescription"``).
    verdict : a headline above the title (the search's verdict), red when ``alarm``.

    Returns
    -------
    Path : ``out``.
    """
    fig = grid_figure(query_ct, query_dose, query_title, results, suptitle=suptitle, ncols=ncols, isodose=isodose,
                      reference_gy=reference_gy, reference_name=reference_name, verdict=verdict, alarm=alarm)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    return out
