"""Every slice picture medhash draws: CT in a window, isodose lines with a legend, result grids
(``medhash search --png``) and the web app's slice PNGs (:func:`render_png`).

* :mod:`~medhash.render.panels`: one slice on one axis (CT window, isodose lines, crop around the
  body) and the web's slice PNGs.
* :mod:`~medhash.render.isodose`: the levels (default 95, 80, 50 and 20 % of the prescription or of
  the maximum dose; or chosen, in percent or Gy) and their palette of distinct hues.
* :mod:`~medhash.render.grid`: the result grid for any number of results, captions that never
  overlap, the legend in Gy.
* :mod:`~medhash.render.results`: a search result's captions (Hamming distance, percentile) and
  verdict, drawn by :func:`render_search`.

matplotlib is imported only inside the functions that draw.
"""
from __future__ import annotations

from .grid import MAX_COLS, grid_figure, grid_layout, render_results
from .isodose import (DEFAULT_ISODOSE, DEFAULT_PERCENT, ISODOSE_COLOURS, ISODOSE_GY, MAX_LEVELS, PALETTE, Isodose,
                      IsodoseSpec, level_colours, parse_isodose, resolve_levels)
from .panels import SOFT_TISSUE_WINDOW, crop_box, draw_slice, render_png
from .results import query_caption, render_search, result_caption, search_title

__all__ = ["DEFAULT_ISODOSE", "DEFAULT_PERCENT", "ISODOSE_COLOURS", "ISODOSE_GY", "MAX_COLS", "MAX_LEVELS", "PALETTE",
           "SOFT_TISSUE_WINDOW", "Isodose", "IsodoseSpec", "crop_box", "draw_slice", "grid_figure", "grid_layout",
           "level_colours", "parse_isodose", "query_caption", "render_png", "render_results", "render_search",
           "resolve_levels", "result_caption", "search_title"]
