"""Isodose levels chosen by the user in the web app: ``/api/slices/...png?isodose=...&reference_gy=...``,
``/api/isodose`` and the Settings field "Isodose lines" (the legend above the results, the result
pictures' URLs). The PNG checks count the palette's colours present in the picture: one colour per
level the slice's dose crosses."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medhash.render import PALETTE
from test_browser import ARTIFACTS, browser, open_page, server, wait_js  # noqa: F401
from webarchive import client, demo_arch  # noqa: F401  (fixtures: client needs demo_arch)


def hottest_slice(get, pid: str = "DEMO001") -> tuple[int, float, int]:
    """(slice_index, maximum dose Gy, position in the patient's slice list) of the patient's slice
    with the highest dose; ``get(path)`` returns the JSON of an API path."""
    slices = get(f"/api/patients/{pid}")["slices"]
    best = max((get(f"/api/slices/{pid}/{s['slice_index']}")["dose_max_gy"] or 0.0, pos, s["slice_index"])
               for pos, s in enumerate(slices))
    return best[2], best[0], best[1]


def palette_colours(png: bytes) -> list[str]:
    """The palette colours drawn in a PNG (at least 20 pixels within 30 of the colour in every channel;
    the CT underneath is grey)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    found = []
    for colour in PALETTE:
        ref = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        if int((np.abs(rgb - ref).max(axis=2) < 30).sum()) >= 20:
            found.append(colour)
    return found


def test_slice_png_draws_the_levels_asked_for(client):
    idx, top, _ = hottest_slice(lambda p: client.get(p).json())
    assert top > 40   # every Gy level below crosses this slice's dose
    url = f"/api/slices/DEMO001/{idx}.png"

    def colours(params):
        resp = client.get(url, params=params)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == "image/png"
        return palette_colours(resp.content)

    # three Gy levels: red (30), yellow (20), green (10); four percent levels of the slice's maximum
    # add cyan; 95 and 80 % of 1.5 x the maximum lie above the dose: only 50 and 20 % are drawn,
    # in their own colours (green, cyan: those of the legend, which lists all four)
    assert colours({"isodose": "10,20,30"}) == list(PALETTE[:3])
    assert colours({"isodose": "95,80,50,20%"}) == list(PALETTE[:4])
    assert colours({"isodose": "95,80,50,20%", "reference_gy": top * 1.5}) == list(PALETTE[2:4])
    assert colours({"isodose": "95,80,50,20%", "reference_gy": top * 1.5, "dose": "false"}) == []
    # the reference does not change Gy levels
    assert colours({"isodose": "10,20,30", "reference_gy": top * 1.5}) == list(PALETTE[:3])


@pytest.mark.parametrize("params, words", [
    ({"isodose": "abc"}, "isodose level 'abc' in 'abc' is not a number"),
    ({"isodose": "10,20%,30"}, "mix percent and Gy"),
    ({"isodose": "1,2,3,4,5,6,7,8"}, "8 isodose levels in '1,2,3,4,5,6,7,8': at most 7"),
    ({"isodose": "1," * 60}, "at most 100 characters"),
])
def test_bad_isodose_text_is_a_422_naming_the_field(client, params, words):
    idx, _, _ = hottest_slice(lambda p: client.get(p).json())
    for path in (f"/api/slices/DEMO001/{idx}.png", "/api/isodose"):
        q = params if path.endswith(".png") else {"text": params["isodose"]}
        resp = client.get(path, params=q)
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert words in body["detail"]
        assert body["field"] == ("isodose" if path.endswith(".png") or "characters" not in words else "text")


@pytest.mark.parametrize("ref", [0, -5, 200.5, "nan"])
def test_bad_reference_is_a_422(client, ref):
    idx, _, _ = hottest_slice(lambda p: client.get(p).json())
    resp = client.get(f"/api/slices/DEMO001/{idx}.png", params={"isodose": "95%", "reference_gy": ref})
    assert resp.status_code == 422 and resp.json()["field"] == "reference_gy"


def test_isodose_levels_in_gy_with_colours(client):
    pct = client.get("/api/isodose", params={"text": "95,80,50,20%", "reference_gy": 70}).json()
    assert pct["unit"] == "%" and pct["title"] == "isodose lines, % of the query's maximum dose (70.0 Gy)"
    assert [(lv["gy"], lv["colour"], lv["label"]) for lv in pct["levels"]] == [
        (66.5, PALETTE[0], "66.5 Gy (95 %)"), (56.0, PALETTE[1], "56.0 Gy (80 %)"),
        (35.0, PALETTE[2], "35.0 Gy (50 %)"), (14.0, PALETTE[3], "14.0 Gy (20 %)")]
    gy = client.get("/api/isodose", params={"text": "20,40,60"}).json()
    assert gy["unit"] == "Gy" and [lv["label"] for lv in gy["levels"]] == ["60 Gy", "40 Gy", "20 Gy"]
    assert client.get("/api/isodose", params={"text": "95,80%"}).json()["levels"] == []   # no reference
    assert client.get("/api/archive").json()["palette"] == list(PALETTE)


def _search_slice(page, pos: int) -> None:
    if page.input_value("#patient") != "DEMO001":   # (selecting it again would reload it under the slider)
        page.select_option("#patient", "DEMO001")
    # the preview is set once the patient's slices have come: the slider then spans them
    wait_js(page, "() => (document.getElementById('preview').dataset.src || '').includes('/DEMO001/')")
    page.locator("#slider").fill(str(pos))
    wait_js(page, f"() => document.getElementById('slider').value === '{pos}'")
    page.click("#slice-search")


def _set_isodose(page, text: str) -> None:
    page.click("nav a[data-view=settings]")
    page.fill("#set-isodose", text)
    page.click("#settings-form button[type=submit]")
    page.click("nav a[data-view=search]")


RESULT_SRCS = "() => [...document.querySelectorAll('#result-grid img')].map(i => i.dataset.src || '')"
LOADED = "() => [...document.querySelectorAll('#result-grid img')].every(i => i.complete && i.naturalWidth > 0)"


def test_settings_isodose_lines_drive_legend_and_pictures(server, browser):
    import json
    import urllib.request

    base, _ = server
    idx, top, pos = hottest_slice(lambda p: json.load(urllib.request.urlopen(base.rstrip("/") + p)))
    page, problems = open_page(browser, base, index="ct64")

    _set_isodose(page, "95,80,50,20%")
    assert "isodose lines 95,80,50,20%" in page.inner_text("#settings-summary")
    _search_slice(page, pos)
    wait_js(page, f"() => document.querySelector('#result-grid figcaption') && "
                  f"document.querySelector('#result-grid figcaption').textContent.startsWith('query DEMO001:{idx}')")
    wait_js(page, LOADED)
    legend = page.inner_text("#legend")
    assert f"% of the query's maximum dose ({top:.1f} Gy)" in legend
    for p in (95, 80, 50, 20):
        assert f"{p * top / 100:.1f} Gy ({p} %)" in legend
    swatches = page.evaluate("() => [...document.querySelectorAll('#legend .swatch')].map(s => s.style.background)")
    assert swatches == ["rgb(230, 25, 75)", "rgb(255, 225, 25)", "rgb(60, 180, 75)", "rgb(66, 212, 244)"]
    srcs = page.evaluate(RESULT_SRCS)
    assert len(srcs) >= 2   # the query and its results, every one with the query's levels
    assert all("isodose=95%2C80%2C50%2C20%25" in s and f"reference_gy={top:g}" in s for s in srcs), srcs
    page.screenshot(path=str(ARTIFACTS / "browser-isodose-percent.png"), full_page=True)

    # Gy levels, kept across a reload (stored like the other settings); no reference in the URLs
    page.reload()
    page.wait_for_selector("#patient option", state="attached")
    _set_isodose(page, "20,40,60")
    page.click("nav a[data-view=settings]")
    assert page.input_value("#set-isodose") == "20,40,60"
    page.click("nav a[data-view=search]")
    _search_slice(page, pos)
    wait_js(page, "() => document.getElementById('legend').textContent.includes('60 Gy')")
    wait_js(page, LOADED)
    assert page.inner_text("#legend").split() == ["isodose", "lines:", "60", "Gy", "40", "Gy", "20", "Gy"]
    srcs = page.evaluate(RESULT_SRCS)
    assert all("isodose=20%2C40%2C60" in s and "reference_gy" not in s for s in srcs), srcs

    # empty: the archive's fixed 10 to 70 Gy, plain URLs
    _set_isodose(page, "")
    _search_slice(page, pos)
    wait_js(page, "() => document.getElementById('legend').textContent.includes('70 Gy')")
    wait_js(page, LOADED)
    assert all("isodose" not in s for s in page.evaluate(RESULT_SRCS))
    assert problems == []
    page.close()


def test_upload_percent_levels_use_each_pictures_maximum(server, browser):
    base, demo = server
    page, problems = open_page(browser, base, index="ct64")
    _set_isodose(page, "90,50%")
    page.set_input_files("#file", str(demo / "DEMO002" / "CT_0012.dcm"))
    page.click("#upload-search")
    wait_js(page, "() => document.querySelectorAll('#result-grid img.result-image').length > 0")
    wait_js(page, LOADED)
    # an upload's answer carries no maximum dose: percent of each picture's own, said by the legend
    assert page.inner_text("#legend").split() == ["isodose", "lines,", "%", "of", "each", "picture's", "own",
                                                  "maximum", "dose", "(the", "query's", "is", "not", "known):",
                                                  "90", "%", "50", "%"]
    srcs = page.evaluate("() => [...document.querySelectorAll('#result-grid img.result-image')].map(i => i.dataset.src)")
    assert srcs and all(s.endswith("?isodose=90%2C50%25") for s in srcs), srcs
    assert problems == []
    page.close()
