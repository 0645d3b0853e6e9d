"""The page in chromium (issue 16 point 4): the index selector, the dose field's label, an error that
replaces the results, the preview that opens the slice, and the calibrated parts of an answer (the
recognised / left-out patient with its toggle, percentiles, the absolute patient score, the "no similar
slice" banner).

The calibrated keys are added by the retrieval code; here the server's real answer is fetched and the
keys of the contract are added to it (Playwright's ``route.fetch`` + ``route.fulfill``), so that the
page's rendering is tested whatever the producers answer today. Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import json

import pytest

from test_browser import ARTIFACTS, browser, choose_index, loaded_sizes, open_page, server, wait_js  # noqa: F401

pytestmark = pytest.mark.browser

ALL_LOADED = "() => [...document.querySelectorAll('#result-grid img')].every(i => i.complete && i.naturalWidth > 0)"


def _option_texts(page, selector: str) -> list[str]:
    return page.locator(f"{selector} option").all_inner_texts()


def test_index_selector_lists_every_index_and_the_dose_label_follows_it(server, browser):
    base, demo = server
    page, problems = open_page(browser, base)

    # several indexes: none is chosen for the user, and every one is listed with channel, bits and hasher
    assert "index not chosen: choose one in Settings" in page.inner_text("#settings-summary")
    assert page.inner_text("#dose-need") == "(needed by an index with dose; choose the index in Settings)"
    page.click("nav a[data-view=settings]")
    assert _option_texts(page, "#set-index") == ["(choose one of the 2 indexes)", "ct64 — ct, 64 bits, kernel-lsh",
                                                 "joint64 — ct+dose, 64 bits, kernel-lsh"]
    assert page.input_value("#set-index") == ""
    assert "several indexes" in page.inner_text("#set-index-help")
    n = page.inner_text("#archive-name").split(", ")[1].split(" ")[0]      # "archive arch: 3 patients, N slices"
    rows = [r.split("\t") for r in page.locator("#set-index-list tbody tr").all_inner_texts()]
    assert rows == [["ct64", "ct", "64", "kernel-lsh", n], ["joint64", "ct+dose", "64", "kernel-lsh", n]]
    page.click("#set-index-list tr[data-index=joint64]")          # a click on a row chooses it
    assert page.input_value("#set-index") == "joint64"
    page.select_option("#set-index", "")
    page.screenshot(path=str(ARTIFACTS / "browser-index-selector.png"))

    # a search with none chosen: the CLI's error, in the page's words
    page.click("nav a[data-view=search]")
    page.click("#slice-search")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == ("422: archive arch has several indexes (ct64, joint64); name one of them"
                                         " — choose the index in Settings")
    assert "--" not in page.inner_text("#error") and page.locator("#results").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "browser-no-index-chosen.png"))

    # the joint index needs a dose: the label says so, and an upload without one is refused before sending
    # (the query's own patient included: the upload is an archive slice)
    choose_index(page, "joint64", same="true")
    assert page.inner_text("#dose-need") == "(required: index joint64 searches ct+dose)"
    assert page.get_attribute("#dose", "aria-required") == "true"
    page.set_input_files("#file", str(demo / "DEMO001" / "CT_0020.dcm"))
    page.click("#upload-search")
    wait_js(page, "() => document.getElementById('error').textContent.includes('choose the query')")
    assert page.inner_text("#error") == "index joint64 searches CT and dose: choose the query's dose file too"
    page.screenshot(path=str(ARTIFACTS / "browser-dose-required.png"))
    page.set_input_files("#dose", str(demo / "DEMO001" / "RD_DEMO001.dcm"))
    page.click("#upload-search")
    wait_js(page, "() => document.querySelectorAll('#result-grid img.result-image').length === 10")
    assert "joint64 (ct+dose, 64 bits)" in page.inner_text("#results-meta") and page.locator("#error").is_hidden()
    first = page.locator("#result-grid figcaption").nth(1).inner_text()
    assert first.startswith("#1 DEMO001:") and "Hamming 0" in first

    # the CT index: the dose is optional again
    choose_index(page, "ct64")
    assert page.inner_text("#dose-need") == "(optional)" and page.get_attribute("#dose", "aria-required") is None
    assert [p for p in problems if "422" not in p] == []
    page.close()


def test_a_geometry_index_does_not_use_the_dose(server, browser):
    """No geometry index in the small archive: /api/indexes answers one more (mocked)."""
    base, _ = server
    page = browser.new_page()

    def indexes(route):
        listed = route.fetch().json()
        listed.append({"name": "geo64", "manifest": {"channel": "geometry", "n_bits": 64, "hasher": {"name": "itq"}}})
        route.fulfill(json=listed)

    page.route("**/api/indexes", indexes)
    page.goto(base)
    page.wait_for_selector("#patient option", state="attached")
    page.click("nav a[data-view=settings]")
    assert _option_texts(page, "#set-index")[1:] == ["ct64 — ct, 64 bits, kernel-lsh",
                                                     "joint64 — ct+dose, 64 bits, kernel-lsh", "geo64 — geometry, 64 bits, itq"]
    page.select_option("#set-index", "geo64")
    page.click("#settings-form button[type=submit]")
    page.click("nav a[data-view=search]")
    assert page.inner_text("#dose-need") == "(not used: index geo64 searches geometry)"
    assert page.is_disabled("#dose")
    page.close()


def test_an_error_replaces_the_results(server, browser, tmp_path):
    base, _ = server
    page, problems = open_page(browser, base, index="ct64")
    page.select_option("#patient", "DEMO002")
    wait_js(page, "() => (document.getElementById('preview').dataset.src || '').includes('/DEMO002/')")
    page.click("#slice-search")
    wait_js(page, "() => document.querySelectorAll('#result-grid img.result-image').length === 10")
    assert page.locator("#results").is_visible()

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.set_input_files("#file", str(bad))
    page.click("#upload-search")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error").startswith("415: notes.txt: unsupported file type")
    assert page.locator("#results").is_hidden() and page.locator("#result-grid figure").count() == 0
    page.screenshot(path=str(ARTIFACTS / "browser-error-replaces-results.png"), full_page=True)

    # a good search afterwards: the error goes, the results come back
    page.click("#slice-search")
    wait_js(page, "() => document.querySelectorAll('#result-grid img.result-image').length === 10")
    assert page.locator("#error").is_hidden()
    assert [p for p in problems if "415" not in p] == []
    page.close()


def test_a_click_on_the_preview_opens_the_slice_large(server, browser):
    base, _ = server
    page, problems = open_page(browser, base)
    page.select_option("#patient", "DEMO003")
    wait_js(page, "() => (document.getElementById('preview').dataset.src || '').includes('/DEMO003/')")  # loaded
    page.locator("#slider").fill("10")
    wait_js(page, "() => document.getElementById('slider-label').textContent.startsWith('10 (z')")
    wait_js(page, "() => (document.getElementById('preview').dataset.src || '').includes('/DEMO003/10.png')")
    assert page.evaluate("() => getComputedStyle(document.getElementById('preview')).cursor") == "zoom-in"
    page.click("#preview")
    page.wait_for_selector("#view-detail:not([hidden])")
    assert page.inner_text("#detail-title") == "DEMO003:10"
    wait_js(page, "() => document.getElementById('detail-image').complete && "
                  "document.getElementById('detail-image').naturalWidth === 512")
    wait_js(page, "() => [...document.querySelectorAll('#neighbours img')].every(i => i.complete && i.naturalWidth === 96)")
    assert page.inner_text("#back") == "← back to the search"           # no search was made
    page.screenshot(path=str(ARTIFACTS / "browser-preview-opened.png"))

    # from the keyboard too
    page.click("nav a[data-view=search]")
    page.locator("#slider").fill("12")
    wait_js(page, "() => document.getElementById('slider-label').textContent.startsWith('12 (z')")
    page.focus("#preview")
    page.keyboard.press("Enter")
    wait_js(page, "() => document.getElementById('detail-title').textContent === 'DEMO003:12'")
    assert problems == []
    page.close()


CALIBRATION_NONE = {"reference_pairs": 5000, "random_median": 31.0, "random_p05": 24.0, "random_p01": 21.0,
                    "nn_p99": None, "verdict": "no similar slice",
                    # as the server words it: the verdict first (the page's banner title says it once)
                    "verdict_text": "no similar slice in this archive: the best match is no closer than random pairs "
                                    "of slices of different patients"}


def test_recognised_patient_percentiles_and_no_similar_slice(server, browser):
    """The contract's keys added to the server's real answers: what the page shows of each."""
    base, demo = server
    page, problems = open_page(browser, base, index="ct64")
    bodies, answers = [], []
    query = demo / "DEMO002" / "CT_0012.dcm"
    # the server's answer to the upload, fetched beforehand: an intercepted multipart request reaches
    # route.fetch without its file's bytes
    uploaded = page.request.post(base + "api/search", multipart={
        "file": {"name": query.name, "mimeType": "application/dicom", "buffer": query.read_bytes()},
        "index": "ct64", "k": "10", "query_image": "true"}).json()

    def search(route):
        bodies.append(route.request.post_data_buffer or b"")
        res = json.loads(json.dumps(uploaded)) if b"CT_0012.dcm" in bodies[-1] else route.fetch().json()
        extra = answers[len(bodies) - 1]
        if extra is None:   # an answer of an older server: none of the contract's keys
            for key in ("recognised", "excluded_patient", "calibration"):
                res.pop(key, None)
            for r in res["results"]:
                r.pop("percentile", None), r.pop("expected_hamming", None)
        else:
            for i, r in enumerate(res["results"]):
                r["percentile"] = round(0.35 + 7.5 * i, 2)
                r["expected_hamming"] = 21.0 + i
            res.update(extra)
        route.fulfill(json=res)

    page.route("**/api/search", search)
    recognised = {"patient_id": "DEMO002", "matched_on": ["series_uid", "study_uid", "frame_of_reference_uid", "patient_id"]}
    answers.append({"recognised": recognised, "excluded_patient": "DEMO002", "calibration": CALIBRATION_NONE})
    page.set_input_files("#file", str(query))
    page.click("#upload-search")
    wait_js(page, "() => document.querySelectorAll('#result-grid img.result-image').length === 10")
    wait_js(page, ALL_LOADED)
    assert page.inner_text("#recognised .recognised-text") == (
        "query recognised as archive patient DEMO002 (matched on series UID, study UID, frame of reference UID, "
        "patient ID) — left out")
    assert page.inner_text("#recognised button") == "include it"
    verdict = page.inner_text("#verdict")
    assert verdict.startswith("No similar slice in this archive\nThe best match is no closer than random pairs")
    assert verdict.endswith("Random pairs: median Hamming 31, 5th percentile 24 (5000 reference pairs).")
    assert page.get_attribute("#result-grid", "class") == "grid dissimilar"
    assert page.evaluate("() => getComputedStyle(document.querySelector('#result-grid figure.result[data-slice]'))"
                         ".opacity") == "0.55"
    captions = page.locator("#result-grid figcaption").all_inner_texts()[1:]
    assert "percentile 0.35 · expected 21.0" in captions[0] and "percentile 7.85 · expected 22.0" in captions[1]
    page.mouse.move(0, 0)
    page.screenshot(path=str(ARTIFACTS / "browser-no-similar-slice.png"), full_page=True)

    # "include it": the same upload again with same_patient=true; the answer says it is included
    answers.append({"recognised": recognised, "excluded_patient": None,
                    "calibration": {**CALIBRATION_NONE, "verdict": "similar", "verdict_text": "The best match is closer "
                                    "than 99% of random pairs."}})
    page.click("#recognised button")
    wait_js(page, "() => document.querySelector('#recognised .recognised-text') && "
                  "document.querySelector('#recognised .recognised-text').textContent.endsWith('included')")
    assert b'name="same_patient"\r\n\r\ntrue' in bodies[1] and b"CT_0012.dcm" in bodies[1]
    assert page.inner_text("#recognised button") == "leave it out"
    assert page.get_attribute("#verdict", "class") == "verdict similar"
    assert page.inner_text("#verdict").startswith("The best match is closer than 99% of random pairs.")
    assert page.get_attribute("#result-grid", "class") == "grid"
    page.screenshot(path=str(ARTIFACTS / "browser-recognised-included.png"), full_page=True)

    # the detail view shows the percentile of the result opened
    page.locator("figure.result[data-slice]").first.click()
    page.wait_for_selector("#view-detail:not([hidden])")
    # the metadata table is filled when the slice's details arrive (later than the view, on a loaded machine)
    wait_js(page, "() => document.getElementById('detail-meta').innerText.includes('percentile (random pairs)')")
    assert "percentile (random pairs)\t0.35" in page.inner_text("#detail-meta")
    page.click("#back")

    # an answer without the keys (an older server): nothing extra is drawn
    answers.append(None)
    page.click("#slice-search")
    wait_js(page, "() => document.querySelector('#result-grid figcaption') && "
                  "document.querySelector('#result-grid figcaption').textContent.startsWith('query DEMO001:')")
    assert page.locator("#recognised").is_hidden() and page.locator("#verdict").is_hidden()
    assert not any("percentile" in c for c in page.locator("#result-grid figcaption").all_inner_texts())
    assert json.loads(bodies[2])["patient_id"] == "DEMO001"
    assert problems == []
    page.close()


def test_absolute_score_and_no_similar_patient(server, browser):
    base, _ = server
    page, problems = open_page(browser, base, index="ct64")

    def similar(route):
        res = route.fetch().json()
        for r in res["results"]:
            r["match_percentile"], r["absolute_score"] = 88.0, 0.12
            for p in r["pairs"]:
                p["percentile"] = 40.0
        res.update({"recognised": None, "excluded_patient": "DEMO001",
                    "calibration": {"verdict": "no similar patient",
                                    "verdict_text": "no similar patient in this archive: the best patient's slices are no "
                                                    "closer than random pairs"}})
        route.fulfill(json=res)

    page.route("**/api/patients/*/similar*", similar)
    page.goto(base + "#similar/DEMO001")
    wait_js(page, "() => document.querySelectorAll('#similar-table tr.similar-row').length > 0")
    wait_js(page, "() => [...document.querySelectorAll('#similar-table img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.inner_text("#similar-verdict") == ("No similar patient in this archive\n"
                                                   "The best patient's slices are no closer than random pairs.")
    assert "similar dissimilar" in page.get_attribute("#similar-table", "class")
    row = page.locator("#similar-table tr.similar-row").first
    assert row.locator(".absolute").inner_text() == "absolute 0.120 (mean percentile 88.0)"
    assert float(row.locator(".score-value").inner_text()) > 0                # the rank-based score stays
    assert "Hamming" in row.locator("figure.pair figcaption").first.inner_text()
    assert "percentile 40.00" in row.locator("figure.pair figcaption").first.inner_text()
    assert "DEMO001 left out" in page.inner_text("#similar-meta") and page.locator("#similar-recognised").is_hidden()
    assert set(loaded_sizes(page, "#similar-table img")) == {96}
    page.mouse.move(0, 0)
    page.screenshot(path=str(ARTIFACTS / "browser-no-similar-patient.png"), full_page=True)
    assert problems == []
    page.close()
