"""A headless Chromium opens the rendered book over file:// and checks what a reader sees: plotly
figures, math and saved widgets drawn; search, the page outline, copy buttons, folded outputs,
the dark theme, the notebook download and a phone-sized layout working; and hostile text from
the corpus or a model shown as text, never run. Every page must stay offline and error-free."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

import nanolib.book as book_mod
from nanolib.book import build_book

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
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
SMOKE_PAGES = ("index", "01_tokenizer", "02_model", "03_pretraining", "04_scaling", "05_core")


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
    """A Chromium page and what it did: every request, failed request, JavaScript error and
    Content Security Policy violation."""

    page: object
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)
    offline: bool = True


@pytest.fixture
def open_page(chromium) -> Iterator[Callable[..., Page]]:
    """open_page(offline=True, **context options) gives a fresh page in headless Chromium; at
    the end, asserts that every page stayed offline (unless told otherwise) and error-free."""
    from playwright.sync_api import sync_playwright

    opened: list[Page] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)

        def new_page(offline: bool = True, **options) -> Page:
            options.setdefault("viewport", {"width": 1280, "height": 900})
            page = browser.new_context(**options).new_page()
            # generous: on a loaded 2-core machine a chapter page with ten figures took > 30 s
            page.set_default_timeout(90_000)
            seen = Page(page, offline=offline)
            page.on("request", lambda r: seen.requests.append(r.url))
            page.on("requestfailed", lambda r: seen.failed.append(f"{r.url} ({r.failure})"))
            page.on("pageerror", lambda e: seen.errors.append(str(e)))
            page.on(
                "console",
                lambda m: seen.csp.append(m.text) if "Content Security Policy" in m.text else None,
            )
            opened.append(seen)
            return seen

        try:
            yield new_page
        finally:
            browser.close()
    for seen in opened:
        assert seen.requests, "the browser recorded no requests at all"
        if seen.offline:
            remote = [u for u in seen.requests if not u.startswith(LOCAL_SCHEMES)]
            assert not remote, f"fetched from outside _book/: {remote}"
        assert not seen.failed, f"requests that failed: {seen.failed}"
        assert not seen.errors, f"JavaScript errors on the page: {seen.errors}"


@pytest.fixture
def browser_page(open_page) -> Page:
    """One page at 1280 × 900 (offline and error-free, checked at the end)."""
    return open_page()


@pytest.fixture(scope="module")
def smoke_book(smoke_runs, tmp_path_factory) -> Path:
    """The real book's smoke runs, built once for this module."""
    out = tmp_path_factory.mktemp("smoke_book") / "_book"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NANOBOOK_RUNS", str(smoke_runs))
        build_book("smoke", out=out)
    return out


def no_csp_violations(*pages: Page) -> None:
    for seen in pages:
        assert not seen.csp, f"the page broke its own Content Security Policy: {seen.csp}"


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
    no_csp_violations(browser_page)
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


def test_scaling_dial_moves_without_kernel(browser_page, smoke_book):
    """Chapter 04's static page: the slider and the menu redraw the fitted curves offline."""
    page = browser_page.page
    page.goto((smoke_book / "04_scaling.html").as_uri())
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


# ---- issue 14: the book as readers of d2l or a Jupyter Book expect ----------------------------


def _search_docs(book: Path) -> list[dict]:
    text = (book / "assets/search-index.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("[") : text.rindex("]") + 1])


def _word_only_in(docs: list[dict], slug: str) -> str:
    """A long word of the chapter's text that no other chapter's text has."""

    def words(d: dict) -> set[str]:
        return set(re.findall(r"[a-z]{8,}", (d["section"] + " " + d["text"]).lower()))

    mine = set().union(*(words(d) for d in docs if d["href"].startswith(slug)))
    others = set().union(*(words(d) for d in docs if not d["href"].startswith(slug)))
    unique = sorted(mine - others)
    assert unique, f"chapter {slug} has no word of its own in the search index"
    return unique[len(unique) // 2]


def test_search_finds_a_word_from_another_chapter(open_page, smoke_book):
    word = _word_only_in(_search_docs(smoke_book), "02_model")
    seen = open_page()
    page = seen.page
    page.goto((smoke_book / "01_tokenizer.html").as_uri())
    page.fill("#book-search", word)
    hit = page.locator("#book-search-results a.search-hit").first
    hit.wait_for(timeout=15_000)
    href = hit.get_attribute("href")
    assert href.startswith("02_model.html"), (word, href)
    hit.click()
    page.wait_for_url("**/02_model.html*")
    assert word in page.inner_text("main").lower()
    if "#" in href:  # a section: its heading is on the page
        anchor = href.split("#", 1)[1]
        assert page.evaluate(
            "a => !!(document.getElementById(a) || document.getElementById(decodeURIComponent(a)))",
            anchor,
        ), anchor
    # nothing found says so
    page.fill("#book-search", "qqqzzzxxy")
    page.wait_for_selector("#book-search-results .search-none")
    no_csp_violations(seen)


def test_page_outline_links_to_every_heading(open_page, smoke_book):
    wide = open_page(viewport={"width": 1600, "height": 900})
    page = wide.page
    page.goto((smoke_book / "04_scaling.html").as_uri())
    links = page.locator(".page-toc a")
    assert links.count() >= 3
    assert page.locator(".page-toc").evaluate("el => el.open"), "wide screens show the outline"
    assert links.first.is_visible()
    hrefs = links.evaluate_all("els => els.map(e => e.getAttribute('href'))")
    missing = page.evaluate(
        """hs => hs.filter(h => !(document.getElementById(h.slice(1)) ||
                                  document.getElementById(decodeURIComponent(h.slice(1)))))""",
        hrefs,
    )
    assert not missing, f"outline links to no heading: {missing}"
    links.nth(1).click()
    assert page.url.endswith(hrefs[1])
    narrow = open_page(viewport={"width": 1000, "height": 900})
    narrow.page.goto((smoke_book / "04_scaling.html").as_uri())
    assert not narrow.page.locator(".page-toc").evaluate("el => el.open")  # folded, above text
    no_csp_violations(wide, narrow)


def test_copy_button_copies_the_code(open_page, smoke_book):
    seen = open_page(permissions=["clipboard-read", "clipboard-write"])
    page = seen.page
    page.goto((smoke_book / "02_model.html").as_uri())
    cells = page.locator("main.notebook > .jp-CodeCell .jp-InputArea-editor")  # not parameters
    assert cells.count() >= 3
    assert page.locator(".copy-button").count() >= cells.count()
    cell = cells.nth(2)
    code = cell.locator("pre").text_content().rstrip("\n")
    cell.hover()
    cell.locator(".copy-button").click()
    page.wait_for_function("() => document.querySelector('.copy-button[data-state]')")
    assert cell.locator(".copy-button").inner_text() == "Copied"
    assert page.evaluate("navigator.clipboard.readText()") == code
    no_csp_violations(seen)


def test_dark_theme_follows_the_system(open_page, smoke_book):
    def colours(scheme: str) -> dict:
        seen = open_page(color_scheme=scheme)
        seen.page.goto((smoke_book / "01_tokenizer.html").as_uri())
        seen.page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
        return seen.page.evaluate(
            """() => ({
              body: getComputedStyle(document.body).backgroundColor,
              text: getComputedStyle(document.body).color,
              code: getComputedStyle(document.querySelector('.jp-InputArea-editor'))
                      .backgroundColor,
              plot: document.querySelector('.js-plotly-plot').layout.plot_bgcolor || null,
            })"""
        )

    def luminance(rgb: str) -> float:
        r, g, b = (int(v) for v in re.findall(r"\d+", rgb)[:3])
        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255

    light, dark = colours("light"), colours("dark")
    assert luminance(light["body"]) > 0.9 and luminance(dark["body"]) < 0.15, (light, dark)
    assert luminance(dark["text"]) > 0.6 and luminance(dark["code"]) < 0.2, dark
    assert dark["plot"] != light["plot"]  # figures follow the theme too


@pytest.fixture
def serve() -> Iterator[Callable[[Path], str]]:
    """serve(folder) serves it over http on 127.0.0.1 (with content types) and gives its URL."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(Quiet, directory=str(folder))
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def test_notebook_download(open_page, smoke_book, serve):
    import nbformat

    # Opened from disk: the link leads to the executed notebook, outputs and all.
    seen = open_page()
    page = seen.page
    page.goto((smoke_book / "02_model.html").as_uri())
    link = page.locator("a[download]", has_text="Download this notebook")
    href = link.get_attribute("href")
    assert href == "notebooks/02_model.ipynb"
    nb = nbformat.read(smoke_book / href, as_version=4)
    nbformat.validate(nb)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    with page.expect_response("**/02_model.ipynb") as response:
        link.click()
    assert response.value.ok
    # Served over http (the CSP allows 'self'), the same link downloads the file.
    url = serve(smoke_book)
    served = open_page(offline=False, accept_downloads=True)
    served.page.goto(f"{url}/02_model.html")
    served.page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
    with served.page.expect_download() as download:
        served.page.locator("a[download]").click()
    assert download.value.suggested_filename == "02_model.ipynb"
    assert nbformat.read(download.value.path(), as_version=4).cells == nb.cells
    assert all(u.startswith((url, *LOCAL_SCHEMES)) for u in served.requests)
    no_csp_violations(seen, served)


def test_phone_layout(open_page, smoke_book):
    """At 375 px nothing is wider than the screen, and the sidebar folds behind a menu button."""
    seen = open_page(
        viewport={"width": 375, "height": 740},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    page = seen.page
    for name in (*SMOKE_PAGES, "report"):
        page.goto((smoke_book / f"{name}.html").as_uri())
        page.wait_for_load_state("load")
        page.wait_for_timeout(300)
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, window.innerWidth, visualViewport.width]"
        )
        assert widths == [375, 375, 375], f"{name}: page wider than the phone: {widths}"
        assert not page.locator("#sidebar").is_visible(), name
        assert page.locator(".menu-toggle").is_visible(), name
    page.locator(".menu-toggle").click()
    assert page.locator("#sidebar").is_visible()
    assert page.locator(".menu-toggle").get_attribute("aria-expanded") == "true"
    assert page.locator("#book-search").is_visible()
    no_csp_violations(seen)


def test_report_card_fits_the_page(open_page, smoke_book):
    """From 1000 to 1400 px the report card's tables fit their column (nothing scrolls or is
    clipped sideways), its figure draws, and it answers its three questions without a raw
    None or nan."""
    for width in (1000, 1300, 1400):
        seen = open_page(viewport={"width": width, "height": 900})
        page = seen.page
        page.goto((smoke_book / "report.html").as_uri())
        page.wait_for_selector(".report-figure .js-plotly-plot .main-svg", timeout=60_000)
        overflow = page.evaluate(
            """() => {
              const out = [];
              const doc = document.documentElement;
              if (doc.scrollWidth > window.innerWidth) out.push(`page ${doc.scrollWidth}`);
              document.querySelectorAll('.table-wrap, .report-figure').forEach((el, i) => {
                if (el.scrollWidth > el.clientWidth + 1)
                  out.push(`${el.className} ${i}: ${el.scrollWidth} > ${el.clientWidth}`);
              });
              return out;
            }"""
        )
        assert not overflow, f"{width} px: wider than its column: {overflow}"
        text = page.inner_text("main")
        for question in ("What did it cost?", "What did it reach?", "Is that what we expected?"):
            assert question in text
        assert not re.search(r"\b(None|nan|NaN)\b", text), width
        no_csp_violations(seen)


# ---- issue 10: hostile text in the corpus and in model output ---------------------------------


def payload(n: int) -> str:
    """A script and an image whose error handler record n and n + 1 in window.__pwned; two
    words (no space inside either), so a chapter's word-level slicing keeps them whole."""
    record = "(window.__pwned||=[]).push({})"
    return f"<script>{record.format(n)}</script> <img/src/onerror={record.format(n + 1)}>"


OUTPUTS_CHAPTER = """# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 90. Outputs of every kind
#
# Model output a careless chapter did not escape, in every form an output can take.

# %% tags=["parameters"]
preset = "tiny"
run_dir = None

# %%
from nanolib.runs import start_chapter

run = start_chapter("90_outputs", preset, globals())
print(run.summary())

# %%
from IPython.display import HTML, SVG, Javascript, Markdown, display

display(HTML("<p>completion: PAYLOAD_1</p>"))
display(Markdown("**completion:** PAYLOAD_3"))
display(Javascript("(window.__pwned||=[]).push(5)"))
svg = '<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><script>'
display(SVG(svg + "(window.__pwned||=[]).push(6)</script><circle r='4' cx='4' cy='4'/></svg>"))

# %%
import pandas as pd

pd.DataFrame({"completion": ["PAYLOAD_7"]}).style

# %%
import ipywidgets as widgets

widgets.HTML(value="completion: PAYLOAD_9")

# %%
import plotly.express as px

px.line(x=[0, 1, 2], y=[0, 1, 4], title="completion: PAYLOAD_11")

# %%
print("\\n".join(f"line {i}" for i in range(200)))

# %%
run.finish(headline={"lines": 200})
"""


def _hostile_val(src: Path, dest: Path) -> int:
    """The shipped val shard with payloads at the start of the text and in the middle of every
    document (where chapter 3 takes its sample prompts: the middle eight words); its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = []
    for k, text in enumerate(pq.read_table(src).column("text").to_pylist()):
        words = text.split()
        h = min(len(words) // 2, 40)
        head = payload(20).split() if k == 0 else ["The", "play:"]
        # 2 + h + 2 + h words: the middle one is the first of payload(30)
        docs.append(" ".join(head + words[:h] + payload(30).split() + words[h : 2 * h]))
    pq.write_table(pa.table({"text": docs}), dest)
    return len(docs)


@pytest.fixture(scope="session")
def hostile_book(tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the real book (chapters linked, not copied) whose val text carries script and
    image payloads, with chapters 1 and 3 and a careless 90_outputs chapter run at smoke;
    returns (book root, runs folder)."""
    from nanolib.config import load_book
    from nanolib.data import sha256_file
    from nanolib.execute import execute_chapter

    root = tmp_path_factory.mktemp("hostile_book")
    config = yaml.safe_load((REPO / "book.yml").read_text())
    config["chapters"].append({"file": "chapters/90_outputs.py", "title": "Outputs of every kind"})
    (root / "book.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "chapters").mkdir()
    for path in (REPO / "chapters").glob("*.py"):
        (root / "chapters" / path.name).symlink_to(path)
    text = OUTPUTS_CHAPTER
    for n in (1, 3, 7, 9, 11):
        text = text.replace(f"PAYLOAD_{n}", payload(n))
    (root / "chapters/90_outputs.py").write_text(text)
    (root / "data").mkdir()
    for path in (REPO / "data").iterdir():
        if path.name != "corpus":
            (root / "data" / path.name).symlink_to(path)
    corpus = root / "data/corpus"
    corpus.mkdir()
    manifest = json.loads((REPO / "data/corpus/MANIFEST.json").read_text())
    for name in manifest:
        if name.startswith("val-"):
            rows = _hostile_val(REPO / "data/corpus" / name, corpus / name)
            size = (corpus / name).stat().st_size
            manifest[name] = {"sha256": sha256_file(corpus / name), "rows": rows, "bytes": size}
        else:
            (corpus / name).symlink_to(REPO / "data/corpus" / name)
    (corpus / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))
    runs = root / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NANOBOOK_ROOT", str(root))
        mp.setenv("NANOBOOK_RUNS", str(runs))
        book = load_book(root / "book.yml")
        for slug in ("01_tokenizer", "03_pretraining", "90_outputs"):
            execute_chapter(slug, "smoke", book=book)
    return root, runs


@pytest.fixture
def build_hostile(hostile_book, monkeypatch, tmp_path) -> Callable[..., Path]:
    """build_hostile(sanitize=True, csp=True) builds the hostile book, with either defence off."""
    root, runs = hostile_book
    monkeypatch.setenv("NANOBOOK_ROOT", str(root))
    monkeypatch.setenv("NANOBOOK_RUNS", str(runs))

    def build(sanitize: bool = True, csp: bool = True) -> Path:
        with pytest.MonkeyPatch.context() as mp:
            if not sanitize:
                mp.setattr(book_mod, "sanitize", lambda html: html)
            if not csp:
                mp.setattr(book_mod, "CSP", "")
            name = f"_book_{'s' if sanitize else ''}{'c' if csp else ''}"
            return build_book("smoke", out=tmp_path / name)

    return build


def _ran(open_page, page_file: Path) -> tuple[list, Page]:
    """What the payloads recorded in window.__pwned after the page settled, and the page."""
    seen = open_page()
    seen.page.goto(page_file.as_uri())
    seen.page.wait_for_load_state("load")
    seen.page.wait_for_timeout(1500)  # widgets and figures render after load
    return seen.page.evaluate("window.__pwned || []"), seen


def test_hostile_text_shows_as_text_and_never_runs(open_page, build_hostile):
    out = build_hostile()
    # chapter 1: the coloured token spans of the val text
    ran, seen = _ran(open_page, out / "01_tokenizer.html")
    assert ran == [], f"payloads ran in chapter 1: {ran}"
    spans = seen.page.locator(".jp-RenderedHTML div[style*='pre-wrap']").first.inner_text()
    assert payload(20) in spans, "chapter 1's token spans should show the payload as text"
    assert seen.page.locator(".js-plotly-plot .main-svg").count() >= 1
    # chapter 3: the samples table (prompts from the val text, completions from the model)
    ran, seen = _ran(open_page, out / "03_pretraining.html")
    assert ran == [], f"payloads ran in chapter 3: {ran}"
    table = seen.page.locator("table", has_text="completion").last.inner_text()
    assert payload(30) in table, "chapter 3's samples table should show the prompt as text"
    assert seen.page.locator(".js-plotly-plot .main-svg").count() >= 1
    # a chapter that escapes nothing: the build's sanitising and the page's CSP stop it all
    ran, seen = _ran(open_page, out / "90_outputs.html")
    assert ran == [], f"payloads ran in the careless chapter: {ran}"
    assert seen.page.locator(".js-plotly-plot").count() == 1
    assert seen.page.locator(".js-plotly-plot .main-svg").count() >= 1
    assert seen.page.locator(".widget-html").count() == 1
    no_csp_violations(seen)  # sanitised: nothing was left for the CSP to block


def test_each_defence_alone_stops_the_payloads(open_page, build_hostile):
    for sanitize, csp in ((True, False), (False, True)):
        out = build_hostile(sanitize=sanitize, csp=csp)
        ran, seen = _ran(open_page, out / "90_outputs.html")
        assert ran == [], f"sanitize={sanitize} csp={csp}: payloads ran: {ran}"
        if not sanitize:
            assert seen.csp, "with the CSP alone, it should have blocked the payloads"
    # The control: with neither, the same payloads run (the tests above can fail).
    out = build_hostile(sanitize=False, csp=False)
    ran, seen = _ran(open_page, out / "90_outputs.html")
    seen.errors.clear()  # the payloads' own noise is not the page's fault
    assert {1, 2, 7, 8, 10} <= set(ran), ran  # HTML, Styler, widget (Markdown escapes)


def test_printed_paths_and_long_outputs(open_page, build_hostile, hostile_book):
    """The run's printed paths name runs/<preset>/<chapter>; a 200-line output folds."""
    root, _ = hostile_book
    out = build_hostile()
    seen = open_page()
    page = seen.page
    page.goto((out / "90_outputs.html").as_uri())
    text = page.inner_text("main")
    assert "runs/smoke/90_outputs" in text
    assert ".partial" not in text and str(root) not in text
    folded = page.locator(".jp-OutputArea-output.nb-folded")
    assert folded.count() == 1 and "line 0" in folded.inner_text()
    short = folded.evaluate("el => el.getBoundingClientRect().height")
    page.locator(".fold-button").click()
    assert page.locator(".jp-OutputArea-output.nb-folded").count() == 0
    tall = page.locator(".nb-foldable").evaluate("el => el.getBoundingClientRect().height")
    assert short < 450 < tall, (short, tall)
    assert page.locator(".fold-button").get_attribute("aria-expanded") == "true"
    no_csp_violations(seen)
