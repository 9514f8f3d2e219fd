"""The book builder renders the fixture book's runs (tests/conftest.py) into a static, offline
_book/: every page and link exists, nothing loads from the network, the banners say what they
should, and the report card lists the manifests. No browser here (see test_browser.py)."""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import nanolib.book as book_mod
from nanolib.book import BookBuildError, build_book
from nanolib.config import BookConfigError, load_book
from nanolib.runs import run_state

CHAPTERS = ("01_plots", "02_results", "03_broken", "04_later")
PAGES = ("index", *CHAPTERS, "report")
# Tags whose src/href the browser fetches by itself (an <a href> is a link the reader follows).
FETCHING_TAGS = {"script", "link", "img", "iframe", "source", "embed", "video", "audio", "object"}
CDN_HOSTS = ("cdnjs", "unpkg", "jsdelivr", "cdn.plot.ly", "googleapis", "mathjax.org")


class _Refs(HTMLParser):
    """Every (tag, attribute, value) with a src or href in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.refs.append((tag, name, value))


def refs(page: Path) -> list[tuple[str, str, str]]:
    parser = _Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.refs


@pytest.fixture
def env(fixture_book, monkeypatch):
    fixture_book.env(monkeypatch)
    return fixture_book


@pytest.fixture
def built(env, tmp_path) -> Path:
    t = time.perf_counter()
    out = build_book(out=tmp_path / "_book")
    print(f"\nbook build: {time.perf_counter() - t:.2f} s")
    return out


def page(out: Path, name: str) -> str:
    return (out / f"{name}.html").read_text(encoding="utf-8")


def test_every_page_exists(built):
    for name in PAGES:
        assert (built / f"{name}.html").is_file(), name
    sizes = {p.name: p.stat().st_size for p in sorted(built.glob("*.html"))}
    print("page sizes (bytes):", sizes)
    assert max(sizes.values()) < 1_000_000, sizes


def test_every_relative_link_resolves(built):
    for html in built.glob("*.html"):
        for tag, attr, value in refs(html):
            parts = urlsplit(value)
            if parts.scheme or value.startswith(("#", "//")):
                continue
            target = built / parts.path
            assert target.is_file(), f"{html.name}: <{tag} {attr}={value!r}> points nowhere"


def test_nothing_is_fetched_from_the_network(built):
    for html in built.glob("*.html"):
        text = html.read_text(encoding="utf-8")
        for tag, attr, value in refs(html):
            if tag in FETCHING_TAGS:
                assert not urlsplit(value).scheme and not value.startswith("//"), (
                    f"{html.name}: <{tag} {attr}={value!r}> loads from outside _book/"
                )
        for host in CDN_HOSTS:
            assert host not in text, f"{html.name} mentions the CDN {host}"
    for css in built.glob("assets/**/*.css"):
        text = css.read_text(encoding="utf-8")
        assert "@import" not in text, css
        assert "url(http" not in text.replace(" ", "").replace("'", "").replace('"', ""), css


def test_plotly_js_is_shared_not_inlined(built):
    copies = sorted(p.relative_to(built) for p in built.rglob("plotly*.js"))
    assert copies == [Path("assets/plotly.min.js")]
    assert (built / "assets/plotly.min.js").stat().st_size > 1_000_000
    ch1 = page(built, "01_plots")
    assert '<script src="assets/plotly.min.js"></script>' in ch1
    assert 'class="jp-OutputArea-output nb-plotly"' in ch1  # the figure's JSON is on the page
    for name in PAGES:
        text = page(built, name)
        assert "plotly.js v" not in text and len(text) < 500_000, name
    assert "assets/plotly.min.js" not in page(built, "02_results")  # only pages with figures


def test_math_and_widgets_are_local(built):
    ch1 = page(built, "01_plots")
    assert 'src="assets/mathjax/tex-chtml-full.js"' in ch1
    assert (built / "assets/mathjax/tex-chtml-full.js").is_file()
    assert any((built / "assets/mathjax/output/chtml/fonts/woff-v2").glob("*.woff"))
    assert r"$x^2$" in ch1
    assert 'src="assets/widgets/embed.js"' in ch1
    assert '<script type="application/vnd.jupyter.widget-state+json">' in ch1
    assert '<script type="application/vnd.jupyter.widget-view+json">' in ch1


def test_ok_chapter_has_run_card(env, built):
    ch1 = page(built, "01_plots")
    assert 'class="run-card"' in ch1
    assert "<code>smoke</code>" in ch1 and "<dd>cpu</dd>" in ch1 and "torch 2." in ch1
    assert "<th>points</th><td><code>8</code></td>" in ch1  # the smoke preset's value
    # 01 is stale only if nanolib changed since the fixture ran (others may be editing it).
    state = run_state(load_book(env.root / "book.yml"), "01_plots", "smoke")
    assert ("banner-stale" in ch1) == (state.status == "stale")
    # the run card sits right under the chapter's title cell
    assert ch1.index("1. Plots, math and widgets") < ch1.index('class="run-card"')


def test_stale_chapter_shows_banner(built):
    ch2 = page(built, "02_results")
    assert 'class="banner banner-stale"' in ch2
    assert "02_results.py changed since the run" in ch2
    assert "nanobook run 02 --preset smoke" in ch2
    assert "scale = 1.0" in ch2  # the stale run is still rendered


def test_failed_chapter_is_a_placeholder(built):
    ch3 = page(built, "03_broken")
    assert 'class="banner banner-failed"' in ch3
    assert "nanobook run 03 --preset smoke" in ch3
    assert "runs/smoke/03_broken.failed.ipynb" in ch3
    assert "fails on purpose" not in ch3  # the failed notebook is never rendered
    assert 'class="run-card"' not in ch3


def test_missing_chapter_is_a_placeholder(built):
    ch4 = page(built, "04_later")
    assert 'class="banner banner-missing"' in ch4
    assert "nanobook run 04 --preset smoke" in ch4
    assert "never executed" not in ch4


def test_index_lists_chapters_with_status(built):
    index = page(built, "index")
    assert "<h1>The Fixture Book</h1>" in index
    assert "Four tiny chapters that exercise the book builder." in index
    for slug, status in (("02_results", "stale"), ("03_broken", "failed"), ("04_later", "missing")):
        row = index[index.index(f'<td><a href="{slug}.html">') :].split("</tr>")[0]
        assert f"badge-{status}" in row, slug


def test_sidebar_and_prev_next(built):
    for i, name in enumerate(PAGES):
        text = page(built, name)
        assert '<nav class="sidebar"' in text
        assert text.count('<li class="current">') == 1, name
        if i > 0:
            assert f'rel="prev" href="{PAGES[i - 1]}.html"' in text, name
        if i + 1 < len(PAGES):
            assert f'rel="next" href="{PAGES[i + 1]}.html"' in text, name


def test_report_card_answers_its_three_questions(built):
    report = page(built, "report")
    assert "Report card · <code>smoke</code>" in report
    for question in ("What did it cost?", "What did it reach?", "Is that what we expected?"):
        assert question in report
    for slug in CHAPTERS:
        assert f'href="{slug}.html"' in report
    assert report.count('class="row-') == len(CHAPTERS)  # one ledger row per chapter
    assert "1.5e+09" in report and "2e+10" in report and "2.15e+10" in report  # FLOPs, total
    # a chapter the report has no labels for still shows its numbers, formatted
    assert '<td>val_bpb</td><td class="value">1.23</td>' in report
    assert '<td>last_y</td><td class="value">49</td>' in report
    assert not re.search(r">\s*(None|nan)\s*<", report)


def test_build_is_fast(env, tmp_path):
    build_book(out=tmp_path / "warm")  # the first build in a process compiles the templates
    t = time.perf_counter()
    build_book(out=tmp_path / "_book")
    elapsed = time.perf_counter() - t
    print(f"\nwarm build of the fixture book: {elapsed:.2f} s")
    assert elapsed < 10


def test_default_out_and_preset(env):
    out = build_book()
    assert out == env.root / "_book"
    assert "preset <code>smoke</code>" in page(out, "index")  # book.yml's render_preset


def test_a_crash_leaves_the_old_book(env, tmp_path, monkeypatch):
    out = build_book(out=tmp_path / "_book")
    before = page(out, "index")

    def boom(*args, **kwargs):
        raise RuntimeError("crash while rendering")

    monkeypatch.setattr(book_mod, "_chapter_page", boom)
    with pytest.raises(RuntimeError, match="crash while rendering"):
        build_book(out=out)
    assert page(out, "index") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_book"]  # no temp dir left behind


def test_missing_node_modules_says_npm_ci(env, tmp_path, monkeypatch):
    monkeypatch.delenv("NANOBOOK_NODE_MODULES", raising=False)
    monkeypatch.setattr(book_mod, "REPO_ROOT", tmp_path)
    with pytest.raises(BookBuildError) as e:
        build_book(out=tmp_path / "_book")
    message = str(e.value)
    assert "npm ci" in message and "\n" not in message
    assert not (tmp_path / "_book").exists()


def test_unknown_preset_is_an_error(env, tmp_path):
    with pytest.raises(BookConfigError, match="valid presets: smoke, tiny"):
        build_book("nope", out=tmp_path / "_book")


# ---- what outputs show, the page outline, search and downloads (issues 10 and 14) -------------


class _Scripts(HTMLParser):
    """Every <script> of a page: its src and type attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.scripts.append(dict(attrs))


def test_pages_run_no_inline_script(built):
    """Every page carries a CSP without 'unsafe-inline' for scripts, and needs none."""
    for html in built.glob("*.html"):
        text = html.read_text(encoding="utf-8")
        assert '<meta http-equiv="Content-Security-Policy"' in text, html.name
        assert "script-src &#39;self&#39; file: &#39;unsafe-eval&#39;;" in text, html.name
        parser = _Scripts()
        parser.feed(text)
        for attrs in parser.scripts:
            data = (attrs.get("type") or "").startswith("application/")
            assert attrs.get("src") or data, f"{html.name}: inline script {attrs}"


def test_download_outline_and_search_index(built):
    nb = built / "notebooks/01_plots.ipynb"
    ch1 = page(built, "01_plots")
    assert nb.is_file() and 'href="notebooks/01_plots.ipynb">Download this notebook' in ch1
    import nbformat

    nbformat.validate(nbformat.read(nb, as_version=4))
    assert not (built / "notebooks/04_later.ipynb").exists()  # never run: nothing to offer
    assert '<a href="#A-figure">A figure</a>' in ch1 and '<a href="#A-widget">' in ch1
    assert 'id="A-figure"' in ch1
    text = (built / "assets/search-index.js").read_text(encoding="utf-8")
    assert text.startswith("window.NANOBOOK_SEARCH_DOCS = [")
    docs = json.loads(text[text.index("[") : text.rindex("]") + 1])
    figure = [d for d in docs if d["href"] == "01_plots.html#A-figure"]
    assert figure and "px.line" in figure[0]["text"]  # code is searchable
    assert figure[0]["chapter"] == "1. Plots, math and widgets"
    assert any(d["href"] == "04_later.html" for d in docs)  # a chapter not run: its title
    assert (built / "assets/minisearch/index.js").is_file()


def test_printed_paths_name_the_final_run_folder(tmp_path):
    """A run executes in runs/<preset>/.<slug>.partial…; the book shows runs/<preset>/<slug>."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from nanolib.runs import runs_root

    book = load_book(Path(__file__).resolve().parent.parent / "book.yml")
    ch = book.chapter("03_pretraining")
    work = runs_root() / "smoke" / ".03_pretraining.partial-1234"
    nb = new_notebook(
        cells=[
            new_code_cell(
                f'preset = "smoke"\nrun_dir = "{work}"\n',
                metadata={"tags": ["injected-parameters"]},
            ),
            new_code_cell(
                "print(run.summary())",
                outputs=[
                    new_output("stream", name="stdout", text=f"run dir  {work}\n"),
                    new_output(
                        "execute_result",
                        data={"text/plain": f"'{work}/checkpoint/config.json'"},
                        execution_count=1,
                    ),
                    new_output(
                        "display_data",
                        data={"text/html": f"<code>{book.root}/chapters/x.py</code>"},
                    ),
                ],
            ),
        ],
        metadata={"papermill": {"parameters": {"run_dir": str(work)}}},
    )
    book_mod._show_final_paths(nb, book, ch, "smoke")
    text = nbformat.writes(nb)
    assert ".partial" not in text and str(book.root) not in text
    outputs = nb.cells[1].outputs
    assert outputs[0].text == "run dir  runs/smoke/03_pretraining\n"
    assert outputs[1].data["text/plain"] == "'runs/smoke/03_pretraining/checkpoint/config.json'"
    assert outputs[2].data["text/html"] == "<code>chapters/x.py</code>"
    assert "run_dir = None  # nanobook ran it in a temporary folder" in nb.cells[0].source
    # a relative mention of another chapter's work folder is fixed as well
    assert book_mod._PARTIAL.sub(r"\1", "runs/tiny/.04_scaling.partial/sweep") == (
        "runs/tiny/04_scaling/sweep"
    )


@pytest.mark.slow
def test_real_book_shows_no_temporary_paths(smoke_runs, monkeypatch, tmp_path):
    monkeypatch.setenv("NANOBOOK_RUNS", str(smoke_runs))
    out = build_book("smoke", out=tmp_path / "_book")
    for path in [*out.glob("*.html"), *out.glob("notebooks/*.ipynb")]:
        text = path.read_text(encoding="utf-8")
        assert ".partial" not in text, path.name
        assert str(smoke_runs) not in text, path.name
    assert "runs/smoke/02_model" in page(out, "02_model")
