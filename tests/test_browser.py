"""A headless Chromium opens a rendered chapter over file:// and checks that the plotly figure
drew, the math was typeset and the saved widget showed, with nothing fetched from the network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nanolib.book import build_book

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# URL schemes that never touch the network.
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(
                f"{CHROMIUM} is missing; CI must run the browser check (apt-get install chromium)"
            )
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); CI runs this check")
    return CHROMIUM


def test_chapter_page_draws_offline(chromium, fixture_book, monkeypatch, tmp_path):
    from playwright.sync_api import sync_playwright

    fixture_book.env(monkeypatch)
    out = build_book(out=tmp_path / "_book")
    shot = tmp_path / "chapter.png"
    requests: list[str] = []
    failed: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((out / "01_plots.html").as_uri())
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
            page.wait_for_selector("mjx-container", timeout=30_000)
            page.wait_for_selector(".widget-slider", timeout=30_000)
            page.wait_for_timeout(500)  # let fonts settle before the picture
            page.screenshot(path=str(shot), full_page=True)
            assert page.locator(".js-plotly-plot").count() == 1
            assert page.locator("mjx-container").count() >= 2  # inline and displayed math
        finally:
            browser.close()
    shutil.copyfile(shot, "/tmp/book_chapter.png")
    print(f"\nscreenshot: {shot} (copied to /tmp/book_chapter.png); {len(requests)} requests")
    assert requests, "the browser recorded no requests at all"
    remote = [u for u in requests if not u.startswith(LOCAL_SCHEMES)]
    assert not remote, f"fetched from outside _book/: {remote}"
    assert not failed, f"requests that failed: {failed}"
    assert not errors, f"JavaScript errors on the page: {errors}"
