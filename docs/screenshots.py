"""Screenshots of the web app for the README (Playwright driving Debian's chromium).

    .venv/bin/medhash serve --archive demo-archive --port 8000 &      # after `make demo`
    .venv/bin/python docs/screenshots.py --url http://127.0.0.1:8000/

Writes docs/web-search.png (the search page: upload form, archive slider with its preview),
docs/web-results.png (DEMO001:25 searched in the joint CT + dose index: the query and its 10 nearest
slices of other patients, with isodose lines), docs/web-detail.png (a result's detail view) and
docs/web-similar.png (the patients most similar to DEMO001, in the CT index).
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

DOCS = Path(__file__).resolve().parent


def wait_js(page, script: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not page.evaluate(script):
        if time.time() > deadline:
            raise TimeoutError(script)
        time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000/")
    ap.add_argument("--upload", type=Path, default=Path("demo-data/DEMO002/CT_0030.dcm"))
    args = ap.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(args.url)
        page.wait_for_selector("#patient option", state="attached")
        page.click("nav a[data-view=settings]")
        page.select_option("#set-index", "joint256")
        page.fill("#set-k", "10")
        page.click("#settings-form button[type=submit]")
        page.click("nav a[data-view=search]")
        page.set_input_files("#file", str(args.upload))
        page.locator("#slider").fill("25")
        wait_js(page, "() => document.getElementById('slider-label').textContent.startsWith('25 (z')")
        wait_js(page, "() => document.getElementById('preview').complete && document.getElementById('preview').naturalWidth > 0")
        page.screenshot(path=str(DOCS / "web-search.png"))
        page.click("#slice-search")
        wait_js(page, "() => document.querySelectorAll('#result-grid img.result-image').length === 10 && "
                      "[...document.querySelectorAll('#result-grid img')].every(i => i.complete && i.naturalWidth > 0)")
        page.locator("#results").scroll_into_view_if_needed()
        page.screenshot(path=str(DOCS / "web-results.png"), full_page=True)
        page.locator("figure.result[data-slice]").first.click()
        wait_js(page, "() => document.getElementById('detail-image').complete && "
                      "document.getElementById('detail-image').naturalWidth === 512 && "
                      "[...document.querySelectorAll('#neighbours img')].every(i => i.complete && i.naturalWidth > 0)")
        page.screenshot(path=str(DOCS / "web-detail.png"), full_page=True)
        # the patients most similar to DEMO001 (patient-level search), in the CT index
        page.click("nav a[data-view=settings]")
        page.select_option("#set-index", "ct256")
        page.fill("#set-k", "5")
        page.click("#settings-form button[type=submit]")
        page.goto(args.url.rstrip("/") + "/#similar/DEMO001")
        wait_js(page, "() => document.querySelectorAll('#similar-table tr.similar-row').length > 0 && "
                      "[...document.querySelectorAll('#similar-table img')].every(i => i.complete && i.naturalWidth > 0)")
        page.mouse.move(0, 0)
        page.screenshot(path=str(DOCS / "web-similar.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
