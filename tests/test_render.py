"""Pictures: the result grid lays out any k with no caption hidden, isodose levels follow the plan,
captions carry the calibration (issue 16 point 4)."""
from __future__ import annotations

import colorsys
import io
import math

import numpy as np
import pytest

from medhash.core.grid import GRID_SIZE
from medhash.errors import InputError
from medhash.render import (DEFAULT_ISODOSE, ISODOSE_COLOURS, ISODOSE_GY, MAX_COLS, PALETTE, IsodoseSpec, draw_slice,
                            grid_figure, level_colours, parse_isodose, render_png, render_search, resolve_levels,
                            result_caption, search_title)

YY, XX = np.mgrid[:GRID_SIZE, :GRID_SIZE]


def _slice(seed: int, top_gy: float | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A body ellipse (40 HU with noise) and a Gaussian dose of maximum ``top_gy`` (None: no dose)."""
    rng = np.random.default_rng(seed)
    body = ((YY - 64) / 30) ** 2 + ((XX - 64) / 45) ** 2 < 1
    ct = np.where(body, 40 + rng.normal(0, 20, body.shape), -1000).astype(np.float32)
    if top_gy is None:
        return ct, None
    return ct, (top_gy * np.exp(-(((YY - 60 - seed % 5) / 14) ** 2 + ((XX - 70) / 18) ** 2))).astype(np.float32)


def _contour_levels(ax) -> list[float]:
    """The isodose levels (Gy) drawn on an axis, highest first."""
    from matplotlib.contour import ContourSet
    return sorted((float(lv) for c in ax.get_children() if isinstance(c, ContourSet) for lv in c.levels), reverse=True)


def layout_faults(fig) -> list[str]:
    """Every text of ``fig`` that leaves the figure, overlaps another text or overlaps a panel."""
    from matplotlib.text import Text
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    texts = [(t.get_text().replace("\n", "/"), t.get_window_extent(r)) for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip()]
    fb = fig.bbox
    out = [f"outside: {n}" for n, b in texts if b.x0 < fb.x0 or b.y0 < fb.y0 or b.x1 > fb.x1 or b.y1 > fb.y1]
    out += [f"{a} overlaps {b}" for i, (a, ba) in enumerate(texts) for b, bb in texts[i + 1:] if ba.overlaps(bb)]
    out += [f"{n} overlaps panel {j}" for n, b in texts for j, ax in enumerate(fig.axes)
            if b.overlaps(ax.get_window_extent(r))]
    return out


def test_fault_finder_finds_planted_overlaps():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(3, 2))
    FigureCanvasAgg(fig)
    fig.text(0.1, 0.5, "first caption")
    fig.text(0.15, 0.5, "second caption")
    fig.text(0.9, 0.1, "cut at the right edge")
    faults = layout_faults(fig)
    assert "first caption overlaps second caption" in faults and "outside: cut at the right edge" in faults


LONG_FILE = "CT.1.2.826.0.1.3680043.8.498.10368452198723415987345192873451928734519.dcm"


@pytest.mark.parametrize("k", [1, 3, 5, 6, 10, 11, 20, 50])
def test_grid_lays_out_any_k_without_hiding_a_caption(k):
    q_ct, q_dose = _slice(0, 14.7)
    captions = [f"#{i + 1} DEMO00{i % 3 + 1}:{100 + i}\nH {30 + i} · pctl {i * 1.37:.2f}\nE {i + 0.5:.3g} · exp. H 98"
                for i in range(k)]
    results = [_slice(i + 1, 14.7 if i % 2 else None) + (c,) for i, c in enumerate(captions)]
    fig = grid_figure(q_ct, q_dose, f"query {LONG_FILE}\nrecognised: DEMO001", results,
                      suptitle=f"index joint64 (ct+dose, 64 bits), top {k}, re-ranked from 100, patient DEMO001 left "
                               "out; H: Hamming distance, pctl: its percentile among random pairs of slices",
                      verdict="The best match is no closer than random pairs of slices of different patients: "
                              "no similar slice in this archive.", alarm=True)
    assert layout_faults(fig) == []
    assert len(fig.axes) == k + 1
    r = fig.canvas.get_renderer()
    query, rest = fig.axes[0].get_window_extent(r), [ax.get_window_extent(r) for ax in fig.axes[1:]]
    assert all(query.x1 < b.x0 for b in rest)                  # the query stands alone at the left
    frame = query.expanded(1.02, 1.02)                         # its red frame is drawn whole
    assert 0 <= frame.x0 and 0 <= frame.y0 and frame.x1 <= fig.bbox.x1 and frame.y1 <= fig.bbox.y1
    rows = sorted({round(b.y0) for b in rest}, reverse=True)
    assert len(rows) == math.ceil(k / MAX_COLS)
    per_row = [sum(round(b.y0) == y for b in rest) for y in rows]
    assert max(per_row) == min(k, MAX_COLS) and sum(per_row) == k
    ranks = [int(ax.get_title().split()[0][1:]) for ax in fig.axes[1:]]
    assert ranks == list(range(1, k + 1))
    xy = [(-round(b.y0), round(b.x0)) for b in rest]               # reading order: rank 1 top left
    assert xy == sorted(xy)
    cap = fig.axes[0].get_title()
    assert cap.startswith("query CT.1.2.8") and "…" in cap and cap.endswith("519.dcm\nrecognised: DEMO001")


def test_grid_height_grows_with_rows_not_captions_overlap():
    q_ct, q_dose = _slice(0, 30.0)
    sizes = {k: grid_figure(q_ct, q_dose, "q", [(q_ct, q_dose, f"#{i + 1}") for i in range(k)]).get_size_inches()
             for k in (5, 6, 50)}
    assert sizes[5][0] == sizes[6][0] == sizes[50][0]           # rows of five: the same width
    assert sizes[5][1] < sizes[6][1] < sizes[50][1]
    assert sizes[50][1] - sizes[6][1] == pytest.approx(8 * (sizes[6][1] - sizes[5][1]))


def test_ncols_puts_the_query_in_the_grid():
    """The evaluation's figures ask for ncols: the query is then the first cell of the grid."""
    q_ct, q_dose = _slice(0, 60.0)
    fig = grid_figure(q_ct, q_dose, "real plan, slice 3", [(q_ct, q_dose, f"panel {i}") for i in range(8)], ncols=3)
    assert layout_faults(fig) == []
    r = fig.canvas.get_renderer()
    boxes = [ax.get_window_extent(r) for ax in fig.axes]
    assert len({round(b.y0) for b in boxes}) == 3 and len({round(b.x0) for b in boxes}) == 3
    assert round(boxes[0].x0) == round(boxes[3].x0) and round(boxes[0].y0) == round(boxes[2].y0)
    assert fig.legends[0].get_title().get_text() == "isodose lines, % of the framed slice's maximum (60.0 Gy)"


def test_low_dose_plan_shows_several_isodose_lines():
    """A plan of 14.7 Gy: the old fixed 10-70 Gy levels drew one line, the default draws four."""
    from matplotlib.figure import Figure
    ct, dose = _slice(0, 14.7)
    fixed = Figure().add_subplot()
    assert draw_slice(fixed, ct, dose) == [10.0] and _contour_levels(fixed) == [10.0]
    fig = grid_figure(ct, dose, "query", [(ct, dose, "#1")])
    want = [pytest.approx(v, abs=2e-3) for v in (0.95 * 14.7, 0.80 * 14.7, 0.50 * 14.7, 0.20 * 14.7)]
    assert _contour_levels(fig.axes[0]) == want and _contour_levels(fig.axes[1]) == want
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["14.0 Gy (95 %)", "11.8 Gy (80 %)", "7.3 Gy (50 %)",
                                                         "2.9 Gy (20 %)"]
    assert legend.get_title().get_text() == "isodose lines, % of the query slice's maximum (14.7 Gy)"


def test_prescription_or_the_user_chooses_the_levels():
    ct, dose = _slice(0, 14.7)
    presc = grid_figure(ct, dose, "query", [(ct, dose, "#1")], reference_gy=50.0)
    assert _contour_levels(presc.axes[0]) == [10.0]          # 20 % of 50 Gy; 25, 40, 47.5 Gy not reached
    assert presc.legends[0].get_title().get_text() == "isodose lines, % of the prescription (50.0 Gy)"
    gy = grid_figure(ct, dose, "query", [(ct, dose, "#1")], isodose="12,8,4")
    assert _contour_levels(gy.axes[1]) == [12.0, 8.0, 4.0]
    assert [t.get_text() for t in gy.legends[0].get_texts()] == ["12 Gy", "8 Gy", "4 Gy"]
    half = grid_figure(ct, dose, "query", [(ct, dose, "#1")], isodose="50%")
    assert _contour_levels(half.axes[0]) == [pytest.approx(7.35, abs=2e-3)]
    # a CT-only query: the reference is the maximum of the slices shown
    shown = grid_figure(ct, None, "query", [_slice(1, 20.0) + ("#1",)])
    assert _contour_levels(shown.axes[1])[0] == pytest.approx(19.0, abs=2e-3)
    assert "maximum of the slices shown (20.0 Gy)" in shown.legends[0].get_title().get_text()
    none = grid_figure(ct, None, "query", [(ct, None, "#1")])
    assert none.legends == [] and layout_faults(none) == []


@pytest.mark.parametrize("text, values, unit", [
    ("95,80,50,20%", (95.0, 80.0, 50.0, 20.0), "%"), ("95%, 80%", (95.0, 80.0), "%"),
    ("10,20,30", (30.0, 20.0, 10.0), "Gy"), ("10 20 30 Gy", (30.0, 20.0, 10.0), "Gy"),
    ("30,10,20,10", (30.0, 20.0, 10.0), "Gy"), (" 107.5 % ", (107.5,), "%")])
def test_parse_isodose(text, values, unit):
    spec = parse_isodose(text)
    assert (spec.values, spec.unit) == (values, unit)
    assert parse_isodose(spec.text()) == spec


@pytest.mark.parametrize("text, message", [
    ("", "no isodose level in ''"),
    ("95%,80", "isodose levels '95%,80' mix percent and Gy"),
    ("50%Gy", "isodose levels '50%Gy' mix percent and Gy"),
    ("10,ten", "isodose level 'ten' in '10,ten' is not a number"),
    ("10,-5", "isodose level '-5' in '10,-5' must be a positive number"),
    ("0%", "isodose level '0%' in '0%' must be a positive number"),
    ("1,2,3,4,5,6,7,8", "8 isodose levels in '1,2,3,4,5,6,7,8': at most 7")])
def test_parse_isodose_refuses(text, message):
    with pytest.raises(InputError) as err:
        parse_isodose(text)
    assert str(err.value).startswith(message) and err.value.param == "isodose"


def _hue(colour: str) -> float:
    rgb = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    return colorsys.rgb_to_hsv(*rgb)[0] * 360


def test_palette_neighbours_differ_clearly():
    hues = [_hue(c) for c in PALETTE]
    gap = lambda a, b: min(abs(a - b), 360 - abs(a - b))  # noqa: E731
    assert min(gap(a, b) for a, b in zip(hues, hues[1:])) >= 60        # neighbouring levels
    assert min(gap(a, b) for i, a in enumerate(hues) for b in hues[i + 1:]) >= 25
    assert dict(zip(ISODOSE_GY, ISODOSE_COLOURS)) == {70.0: PALETTE[0], 60.0: PALETTE[1], 10.0: PALETTE[6],
                                                      20.0: PALETTE[5], 30.0: PALETTE[4], 40.0: PALETTE[3],
                                                      50.0: PALETTE[2]}
    assert level_colours([10.0, 30.0, 20.0]) == [PALETTE[2], PALETTE[0], PALETTE[1]]
    iso = resolve_levels(DEFAULT_ISODOSE, 70.0)
    assert iso.gy == (66.5, 56.0, 35.0, 14.0) and iso.colours == PALETTE[:4]
    assert resolve_levels(IsodoseSpec((95.0,), "%"), None).gy == ()     # percent levels need a reference


def _result(k: int, calibrated: bool) -> dict:
    res = {"query": {"type": "dicom", "file": "/data/x/CT_0042.dcm", "slice_index": 0, "z_mm": -12.25}, "index": "joint64", "channel": "ct+dose",
           "n_bits": 64, "k": k, "rerank": 0, "same_patient": False,
           "results": [{"rank": i + 1, "patient_id": "DEMO002", "slice_index": 10 + i, "z_mm": 1.0, "hamming": 20 + i}
                       for i in range(k)]}
    if calibrated:
        res["recognised"] = {"patient_id": "DEMO001", "matched_on": ["series_uid"]}
        res["excluded_patient"] = "DEMO001"
        for i, r in enumerate(res["results"]):
            r.update(percentile=round(0.35 + 10 * i, 2), expected_hamming=12.25, euclidean=1.5)
        res["calibration"] = {"verdict": "no similar slice", "verdict_text": "No similar slice in this archive: "
                              "the best match is no closer than random pairs of slices."}
    return res


def test_captions_and_title_carry_the_calibration():
    old, new = _result(2, False), _result(2, True)
    assert result_caption(old["results"][0]) == "#1 DEMO002:10\nH 20"
    assert result_caption(new["results"][1]) == "#2 DEMO002:11\nH 21 · pctl 10.35\nE 1.5 · exp. H 12.2"
    assert search_title(old) == "index joint64 (ct+dose, 64 bits), top 2, other patients only"
    assert search_title(new) == ("index joint64 (ct+dose, 64 bits), top 2, patient DEMO001 left out; "
                                 "H: Hamming distance, pctl: its percentile among random pairs of slices")


@pytest.mark.parametrize("calibrated", [False, True])
def test_render_search_draws_verdict_and_captions(calibrated, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import medhash.render.results as results_mod
    ct, dose = _slice(3, 50.0)
    archive = SimpleNamespace(get=lambda pid, s: SimpleNamespace(ct=ct, dose=dose))
    query = SimpleNamespace(ct=ct, dose=None)
    seen = {}
    real = results_mod.render_results

    def keep(*args, **kw):
        seen["fig"] = grid_figure(*args[:4], **kw)
        return real(*args, **kw)
    monkeypatch.setattr(results_mod, "render_results", keep)
    out = render_search(archive, _result(3, calibrated), query, tmp_path / "sub" / "grid.png", isodose="40,20")
    from PIL import Image
    with Image.open(out) as im:
        assert np.abs(np.array(im.size) - seen["fig"].get_size_inches() * 110).max() <= 1   # the figure drawn
    fig = seen["fig"]
    assert layout_faults(fig) == []
    texts = [t.get_text() for t in fig.texts]
    assert (texts[0] == "No similar slice in this archive: the best match is no closer than random pairs of slices.") \
        == calibrated
    assert (fig.texts[0].get_color() == "#b2182b") == calibrated
    assert [ax.get_title() for ax in fig.axes[:2]] == [
        "query CT_0042.dcm\nslice 0, z -12.2 mm" + ("\nrecognised: DEMO001" if calibrated else ""),
        "#1 DEMO002:10\nH 20" + (" · pctl 0.35\nE 1.5 · exp. H 12.2" if calibrated else "")]
    assert _contour_levels(fig.axes[1]) == [40.0, 20.0]


def test_render_search_uses_the_prescription(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import medhash.render.results as results_mod
    ct, dose = _slice(3, 14.7)
    seen = {}
    monkeypatch.setattr(results_mod, "render_results", lambda *a, **kw: seen.update(kw))
    res = _result(1, True)
    res["query"]["prescriptions"] = {"PTV_High": 50.0, "PTV_Low": 42.0}
    render_search(SimpleNamespace(get=lambda pid, s: SimpleNamespace(ct=ct, dose=dose)), res,
                  SimpleNamespace(ct=ct, dose=dose), tmp_path / "g.png")
    assert seen["reference_gy"] == 50.0 and seen["alarm"] is True


def test_render_png_default_and_chosen_levels():
    from PIL import Image
    ct, dose = _slice(0, 14.7)
    coloured = {}
    for name, iso in (("fixed", None), ("relative", "95,80,50,20%")):
        img = np.asarray(Image.open(io.BytesIO(render_png(ct, dose, isodose=iso))).convert("RGB")).astype(int)
        rgb = {p: np.array([int(p[i:i + 2], 16) for i in (1, 3, 5)]) for p in PALETTE}
        coloured[name] = {p for p, c in rgb.items() if (np.abs(img - c).sum(axis=2) < 30).sum() >= 5}
    assert coloured["fixed"] == {ISODOSE_COLOURS[0]}                     # 10 Gy only, blue
    assert coloured["relative"] == set(PALETTE[:4])                      # four lines, four hues
