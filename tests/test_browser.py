"""A headless Chromium opens a rendered chapter over file:// and checks that the plotly figure
drew, the math was typeset and the saved widget showed, with nothing fetched from the network."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
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


@dataclass
class Page:
    """A Chromium page and what it did: every request, failed request and JavaScript error."""

    page: object
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def browser_page(chromium) -> Iterator[Page]:
    """A fresh page in headless Chromium; afterwards, asserts it stayed offline and error-free."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            seen = Page(page)
            page.on("request", lambda r: seen.requests.append(r.url))
            page.on("requestfailed", lambda r: seen.failed.append(f"{r.url} ({r.failure})"))
            page.on("pageerror", lambda e: seen.errors.append(str(e)))
            yield seen
        finally:
            browser.close()
    assert seen.requests, "the browser recorded no requests at all"
    remote = [u for u in seen.requests if not u.startswith(LOCAL_SCHEMES)]
    assert not remote, f"fetched from outside _book/: {remote}"
    assert not seen.failed, f"requests that failed: {seen.failed}"
    assert not seen.errors, f"JavaScript errors on the page: {seen.errors}"


def test_chapter_page_draws_offline(browser_page, fixture_book, monkeypatch, tmp_path):
    fixture_book.env(monkeypatch)
    out = build_book(out=tmp_path / "_book")
    shot = tmp_path / "chapter.png"
    page = browser_page.page
    page.goto((out / "01_plots.html").as_uri())
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
    page.wait_for_selector("mjx-container", timeout=30_000)
    page.wait_for_selector(".widget-slider", timeout=30_000)
    page.wait_for_timeout(500)  # let fonts settle before the picture
    page.screenshot(path=str(shot), full_page=True)
    assert page.locator(".js-plotly-plot").count() == 1
    assert page.locator("mjx-container").count() >= 2  # inline and displayed math
    shutil.copyfile(shot, "/tmp/book_chapter.png")
    print(f"\nscreenshot: {shot} (copied to /tmp/book_chapter.png)")


# In the page: the figure with a slider (chapter 04's static dial), its state and its traces.
DIAL_STATE = """() => {
  const gds = [...document.querySelectorAll('.js-plotly-plot')];
  const gd = gds.find(g => (g.layout.sliders || []).length);
  if (!gd) return null;
  return {
    slider: gd.layout.sliders[0].active,
    menu: gd.layout.updatemenus[0].active,
    xTitle: gd.layout.xaxis.title.text,
    visible: gd.data.map((t, i) => t.visible === false ? -1 : i).filter(i => i >= 0),
    // _fullData: the traces as drawn, with numpy's base64 arrays decoded
    traces: gd._fullData.map(t => ({name: t.name, x: t.x ? Array.from(t.x) : null,
                                    y: t.y ? Array.from(t.y) : null})),
  };
}"""


def _predicted(state: dict) -> tuple[list, list]:
    """x and y of the visible 'predicted at C' curve."""
    (i,) = [i for i in state["visible"] if state["traces"][i]["name"] == "predicted at C"]
    return state["traces"][i]["x"], state["traces"][i]["y"]


def test_scaling_dial_moves_without_kernel(browser_page, smoke_runs, monkeypatch, tmp_path):
    """Chapter 04's static page: the slider and the menu redraw the fitted curves offline."""
    monkeypatch.setenv("NANOBOOK_RUNS", str(smoke_runs))
    out = build_book("smoke", out=tmp_path / "_book")
    page = browser_page.page
    page.goto((out / "04_scaling.html").as_uri())
    page.wait_for_selector(".js-plotly-plot .slider-rail-touch-rect", timeout=30_000)
    start = page.evaluate(DIAL_STATE)
    assert start is not None, "no figure with a slider on the chapter 04 page"
    dial = page.locator(".js-plotly-plot", has=page.locator(".slider-rail-touch-rect"))
    dial.scroll_into_view_if_needed()

    # The slider: a click at the right end of its rail picks the largest budget.
    rail = dial.locator(".slider-rail-touch-rect").bounding_box()
    page.mouse.click(rail["x"] + rail["width"] - 2, rail["y"] + rail["height"] / 2)
    page.wait_for_timeout(500)
    slid = page.evaluate(DIAL_STATE)
    assert slid["slider"] != start["slider"]
    assert slid["visible"] == start["visible"]
    x0, y0 = _predicted(start)
    x1, y1 = _predicted(slid)
    assert y0 and y1, "the dial's starting view draws no predicted curve"
    assert max(x1) > max(x0), "a larger budget should move the predicted optimum right"
    assert y1 != y0

    # The menu: another (fit, convention) shows another set of traces and axis title.
    dial.locator(".updatemenu-header").click()
    buttons = dial.locator(".updatemenu-dropdown-button")
    assert buttons.count() == 6  # 2 fits × 3 counting conventions
    other = 0 if start["menu"] != 0 else 5  # the first and last differ in convention
    buttons.nth(other).click()
    page.wait_for_timeout(500)
    switched = page.evaluate(DIAL_STATE)
    assert switched["menu"] == other
    assert not set(switched["visible"]) & set(start["visible"])
    assert switched["xTitle"] != start["xTitle"]
