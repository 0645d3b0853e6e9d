"""End to end in a real browser: Debian's chromium driven by Playwright against `medhash serve`'s app.

Upload a DICOM CT slice, see the k result pictures actually loaded, open a detail view, move
through an archive patient with the slider; list the patients similar to an archive patient and
open one. Screenshots go to test-artifacts/ (kept by CI, ignored by git); the README's come from
docs/screenshots.py. Skipped, with the reason, when chromium or
playwright is missing (`.ci/run` installs both).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from webarchive import web_archive

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on 127.0.0.1:PORT in a uvicorn thread, on the small trained demo archive."""
    import uvicorn

    from medhash.web import create_app

    demo, archive_dir = web_archive(tmp_path_factory)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(archive_dir), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/", demo
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    required = os.environ.get("MEDHASH_BROWSER_REQUIRED") == "1"   # set by .ci/run: CI must not skip
    if chromium is None:
        reason = "Debian's chromium is not installed (apt-get install chromium; .ci/run does it)"
        pytest.fail(reason) if required else pytest.skip(reason)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


def wait_js(page, script: str, timeout: float = 60.0):
    """Poll a JavaScript predicate from Python (the page's CSP forbids wait_for_function's eval)."""
    deadline = time.time() + timeout
    while True:
        value = page.evaluate(script)
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for: {script}")
        time.sleep(0.1)


LOADED = """() => [...document.querySelectorAll(SEL)].map(i => i.complete ? i.naturalWidth : -1)"""


def loaded_sizes(page, selector: str) -> list[int]:
    return page.evaluate(LOADED.replace("SEL", repr(selector)))


def choose_index(page, name: str, same: str | None = None) -> None:
    """Choose the index in Settings (an archive with several indexes has none chosen at first), and the
    same-patient setting when given ("true": include, "": default), then back to Search."""
    page.click("nav a[data-view=settings]")
    page.select_option("#set-index", name)
    if same is not None:
        page.select_option("#set-same", same)
    page.click("#settings-form button[type=submit]")
    page.click("nav a[data-view=search]")


def open_page(browser, base: str, index: str | None = None):
    """The app's page, loaded (patient list filled), with ``index`` chosen in Settings when given, and
    the list its script errors are collected in."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.goto(base)
    page.wait_for_selector("#patient option", state="attached")
    if index is not None:
        choose_index(page, index)
    return page, problems


def test_upload_results_detail_and_slider(server, browser):
    base, demo = server
    page, problems = open_page(browser, base)
    wait_js(page, "() => document.getElementById('preview').naturalWidth > 0")

    # settings: pick the CT index, k = 6, the query's own patient included (kept in the browser): an
    # upload of an archive slice is recognised as its patient, left out by default
    page.click("nav a[data-view=settings]")
    page.select_option("#set-index", "ct64")
    page.select_option("#set-same", "true")
    page.fill("#set-k", "6")
    page.click("#settings-form button[type=submit]")
    page.click("nav a[data-view=search]")
    assert "index ct64 · k 6" in page.inner_text("#settings-summary")

    # upload a DICOM slice: the query and its 6 results are shown as pictures that really loaded
    page.set_input_files("#file", str(demo / "DEMO002" / "CT_0012.dcm"))
    page.click("#upload-search")
    wait_js(page, "() => document.querySelectorAll('#result-grid img.result-image').length === 6")
    wait_js(page, "() => [...document.querySelectorAll('#result-grid img')].every(i => i.complete && i.naturalWidth > 0)")
    assert loaded_sizes(page, "#result-grid img.result-image") == [256] * 6
    assert loaded_sizes(page, "#result-grid img.query-image") == [256]
    captions = page.locator("#result-grid figcaption").all_inner_texts()
    assert captions[0].startswith("query CT_0012.dcm")
    assert captions[1].startswith("#1 DEMO002:") and "Hamming 0" in captions[1]
    assert "ct64 (ct, 64 bits) · top 6" in page.inner_text("#results-meta")
    assert page.locator("#error").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "browser-results.png"), full_page=True)

    # a click opens the detail view: the large picture, metadata, neighbours; dose lines toggle
    first = page.locator("figure.result[data-slice]").first
    pid, idx = first.get_attribute("data-patient"), first.get_attribute("data-slice")
    first.click()
    page.wait_for_selector("#view-detail:not([hidden])")
    wait_js(page, "() => document.getElementById('detail-image').naturalWidth === 512")
    assert page.inner_text("#detail-title") == f"{pid}:{idx}"
    # filled when the slice's details arrive (later than the view, on a loaded machine)
    wait_js(page, "() => document.getElementById('detail-meta').innerText.includes('Hamming distance')")
    meta = page.inner_text("#detail-meta")
    assert "Hamming distance\t0" in meta and "max " in meta and "Gy" in meta
    wait_js(page, "() => [...document.querySelectorAll('#neighbours img')].every(i => i.complete && i.naturalWidth === 96)")
    assert page.locator("#neighbours figure").count() >= 4
    page.uncheck("#detail-dose")
    wait_js(page, "() => document.getElementById('detail-image').dataset.src.includes('dose=false')")
    wait_js(page, "() => document.getElementById('detail-image').complete && document.getElementById('detail-image').naturalWidth === 512")
    page.screenshot(path=str(ARTIFACTS / "browser-detail.png"), full_page=True)

    # an archive patient, moved through with the slider, searched with its own slice (own patient: default)
    choose_index(page, "ct64", same="")
    page.select_option("#patient", "DEMO003")
    wait_js(page, "() => (document.getElementById('preview').dataset.src || '').includes('/DEMO003/')")
    page.locator("#slider").fill("10")
    wait_js(page, "() => document.getElementById('slider-label').textContent.startsWith('10 (z')")
    page.click("#slice-search")
    wait_js(page, "() => document.querySelector('#result-grid figcaption') && "
                  "document.querySelector('#result-grid figcaption').textContent.startsWith('query DEMO003:10')")
    wait_js(page, "() => [...document.querySelectorAll('#result-grid img')].every(i => i.complete && i.naturalWidth > 0)")
    texts = page.locator("#result-grid figcaption").all_inner_texts()[1:]
    assert len(texts) == 6 and not any("DEMO003:" in t for t in texts)   # own patient left out

    # the archive overview
    page.click("nav a[data-view=archive]")
    page.wait_for_selector("#indexes details")
    assert page.locator("#patients-table tbody tr").count() == 3
    assert "ct64" in page.inner_text("#indexes") and "joint64" in page.inner_text("#indexes")
    assert problems == []
    page.close()


def test_bad_upload_shows_the_message(server, browser, tmp_path):
    base, _ = server
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page = browser.new_page()
    page.goto(base)
    page.wait_for_selector("#patient option", state="attached")
    page.set_input_files("#file", str(bad))
    page.click("#upload-search")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error").startswith("415: notes.txt: unsupported file type")
    page.close()


def test_similar_patients_view(server, browser):
    base, _ = server
    page, problems = open_page(browser, base, index="ct64")
    page.select_option("#patient", "DEMO001")
    wait_js(page, "() => (document.getElementById('preview').dataset.src || '').includes('/DEMO001/')")

    # the request is held back at first: the loading state shows, the button waits
    held = []
    page.route("**/api/patients/*/similar*", lambda route: held.append(route))
    page.click("#similar-search")
    page.wait_for_selector("#view-similar:not([hidden])")
    wait_js(page, "() => document.getElementById('similar-status').textContent"
                  ".startsWith('Searching every slice of DEMO001')")
    assert page.is_visible("#similar-status") and page.is_disabled("#similar-search")
    assert page.locator("#similar-results").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "browser-similar-loading.png"))
    assert wait_js(page, "() => location.hash") == "#similar/DEMO001"
    wait_js(page, "() => true")          # let the route handler see the request
    deadline = time.time() + 30
    while not held:
        assert time.time() < deadline, "the similar-patients request was not sent"
        page.wait_for_timeout(50)
    url = held[0].request.url
    assert "/api/patients/DEMO001/similar?" in url and "index=ct64" in url and "k=10" in url   # the page's settings
    held[0].continue_()
    page.unroute("**/api/patients/*/similar*")

    # ranked rows: the other patients with a numeric score in [0, 1] and their matched slice pairs as pictures
    wait_js(page, "() => document.querySelectorAll('#similar-table tr.similar-row').length > 0")
    wait_js(page, "() => [...document.querySelectorAll('#similar-table img')].length > 0 && "
                  "[...document.querySelectorAll('#similar-table img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#similar-status").is_hidden() and page.locator("#error").is_hidden()
    rows = page.locator("#similar-table tr.similar-row")
    assert 1 <= rows.count() <= 2
    pids = [rows.nth(i).get_attribute("data-patient") for i in range(rows.count())]
    assert "DEMO001" not in pids and set(pids) <= {"DEMO002", "DEMO003"}
    scores = [float(t) for t in page.locator("#similar-table .score-value").all_inner_texts()]
    assert all(0.0 <= x <= 1.0 for x in scores) and scores == sorted(scores, reverse=True) and scores[0] > 0
    first = rows.first
    assert first.locator("td.rank").inner_text() == "#1"
    assert " of " in first.locator("td").nth(3).inner_text()           # matched slices: n of m
    assert "1 − (r − 1) / 20" in page.get_attribute("#similar-score-head", "title")
    assert "Patient score" in page.inner_text("#similar-help")
    assert set(loaded_sizes(page, "#similar-table img")) == {96}
    queries = page.locator("#similar-table tr.similar-row:first-child img.pair-query")
    matches = page.locator("#similar-table tr.similar-row:first-child img.pair-match")
    assert 1 <= queries.count() <= 3 and queries.count() == matches.count()
    assert "/api/slices/DEMO001/" in queries.first.get_attribute("data-src")
    assert f"/api/slices/{pids[0]}/" in matches.first.get_attribute("data-src")
    assert "index ct64 (ct, 64 bits)" in page.inner_text("#similar-meta")
    page.mouse.move(0, 0)                 # no row under the pointer (hover) in the screenshots
    page.screenshot(path=str(ARTIFACTS / "browser-similar.png"), full_page=True)

    # a click on a picture opens that slice; back, then a click on the row opens the patient in the browser
    match_slice = int(matches.first.get_attribute("data-src").split("/")[-1].split(".")[0])
    matches.first.click()
    page.wait_for_selector("#view-detail:not([hidden])")
    assert page.inner_text("#detail-title") == f"{pids[0]}:{match_slice}"
    assert page.inner_text("#back") == "← back to the similar patients"
    page.click("#back")
    page.wait_for_selector("#view-similar:not([hidden])")
    wait_js(page, "() => document.querySelectorAll('#similar-table tr.similar-row').length > 0")
    page.locator("#similar-table tr.similar-row").first.locator("td.rank").click()   # not on a picture
    page.wait_for_selector("#view-search:not([hidden])")
    wait_js(page, f"() => (document.getElementById('preview').dataset.src || '').includes('/{pids[0]}/')")
    assert page.input_value("#patient") == pids[0]
    wait_js(page, "() => document.getElementById('preview').complete && "
                  "document.getElementById('preview').naturalWidth > 0")
    assert page.inner_text("#slider-label").split(" ")[0].isdigit()
    page.screenshot(path=str(ARTIFACTS / "browser-similar-opened.png"))

    # errors are shown: an unknown patient
    page.goto(base + "#similar/NOPE")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == "404: no patient 'NOPE' in arch"
    assert "No similar patients for NOPE" in page.inner_text("#similar-status")
    assert page.locator("#similar-results").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "browser-similar-error.png"))

    # the tab lists the patients similar to the one chosen under the slider
    page.click("nav a[data-view=search]")
    page.select_option("#patient", "DEMO003")
    page.click("nav a[data-view=similar]")
    wait_js(page, "() => location.hash === '#similar/DEMO003'")
    wait_js(page, "() => document.querySelectorAll('#similar-table tr.similar-row').length > 0")
    assert page.inner_text("#similar-patient") == "DEMO003" and page.locator("#error").is_hidden()
    assert [p for p in problems if "404" not in p] == []    # the browser logs the failed request itself
    page.close()


def test_planned_dose_in_the_similar_view(server, browser):
    base, _ = server
    page, problems = open_page(browser, base, index="ct64")
    page.goto(base + "#similar/DEMO001")
    page.wait_for_selector("#view-similar:not([hidden]) #planned-run")
    wait_js(page, "() => document.querySelectorAll('#similar-table tr.similar-row').length > 0")
    assert page.inner_text("#planned-patient") == "DEMO001" and page.locator("#planned-results").is_hidden()

    # the prediction is held back at first: the status line shows, the button waits
    held = []
    json_url = re.compile(r"/api/patients/DEMO001/planned-dose\?")
    page.route(json_url, lambda route: held.append(route))
    page.click("#planned-run")
    wait_js(page, "() => document.getElementById('planned-status').textContent"
                  ".startsWith('Predicting the dose of DEMO001')")
    assert page.is_disabled("#planned-run") and page.locator("#planned-results").is_hidden()
    deadline = time.time() + 30
    while not held:
        assert time.time() < deadline, "the planned-dose request was not sent"
        page.wait_for_timeout(50)
    assert "neighbours_by=geometry" in held[0].request.url
    held[0].continue_()
    page.unroute(json_url)

    # the DVH figure loaded, the metrics (predicted, real plan, difference) and the neighbours used
    page.wait_for_selector("#planned-results:not([hidden])", timeout=120_000)
    wait_js(page, "() => { const i = document.getElementById('planned-dvh'); "
                  "return i.complete && i.naturalWidth > 0; }")
    assert page.evaluate("() => document.getElementById('planned-dvh').naturalWidth") == 1200
    assert page.locator("#planned-status").is_hidden() and page.is_enabled("#planned-run")
    rows = page.locator("#planned-metrics tbody tr")
    assert rows.count() >= 5
    cells = rows.first.locator("td").all_inner_texts()
    assert cells[0] == "D99 PTV70" and all(c.replace(".", "").lstrip("+−").isdigit() for c in cells[1:]), cells
    assert page.locator("#planned-metrics tbody td", has_text="mean SpinalCord").count() == 1
    used = page.locator("#planned-neighbours tbody tr td:nth-child(2)").all_inner_texts()
    assert sorted(used) == ["DEMO002", "DEMO003"]
    assert page.inner_text("#planned-distance-head") == "geometry distance"
    assert "2 similar patients by geometry" in page.inner_text("#planned-meta")
    page.mouse.move(0, 0)
    page.locator("#planned").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser-planned-dose.png"), full_page=True)

    # an error replaces the results: none of the earlier ones stay below it
    fail = re.compile(r"/planned-dose\?")
    page.route(fail, lambda route: route.fulfill(status=422, content_type="application/json",
                                                 body='{"detail": "patient has no target", "field": "targets"}'))
    page.click("#planned-run")
    wait_js(page, "() => document.getElementById('planned-status').classList.contains('error')")
    assert page.inner_text("#planned-status") == "No planning-time dose for DEMO001: 422: patient has no target"
    assert page.locator("#planned-results").is_hidden()
    assert page.locator("#planned-metrics tbody tr").count() == 0 and not page.get_attribute("#planned-dvh", "src")
    page.unroute(fail)

    # another patient: nothing of DEMO001's prediction is left
    page.goto(base + "#similar/DEMO002")
    wait_js(page, "() => document.getElementById('planned-patient').textContent === 'DEMO002'")
    assert page.locator("#planned-status").is_hidden() and page.locator("#planned-results").is_hidden()
    assert [p for p in problems if "422" not in p] == []
    page.close()
