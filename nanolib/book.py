"""Render what runs/ holds into the static, offline book under _book/; it never executes code.

`build_book(preset)` walks book.yml's chapters in order and asks `nanolib.runs.run_state` about
each one's run at the preset. Runs that are ok or stale are rendered from their executed
notebook with nbconvert (our `nanobook` template extends JupyterLab's `lab` template); stale ones
get a banner that says why, and failed or missing chapters get a placeholder page that names
the command that makes them. Beside the chapters come `index.html` (table of contents) and
`report.html` (the report card of `nanolib.report`: cost, results, expected bands).

Each chapter page also gets: its executed notebook to download (`notebooks/<slug>.ipynb`), an
"on this page" outline of its headings, and an entry in the book's offline search index
(`assets/search-index.js`, read by MiniSearch in the browser). Outputs show paths as
`runs/<preset>/<chapter>/…` (never the temporary folder a run executed in), HTML outputs and
widget HTML are sanitised (`nanolib.html.sanitize`), and every page carries a Content Security
Policy that allows no inline script and nothing from the network.

Everything a page loads lives in `_book/assets/`, copied once per build: plotly.min.js from the
plotly wheel, MathJax 3, the Jupyter widget HTML manager and MiniSearch from `node_modules/`
(declared in the repository's package.json; `npm ci` installs them), and the CSS/JS in
`nanolib/templates/static/`.
The book is built in a temporary sibling directory and swapped in at the end, so a crash never
leaves half a book behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from nanolib import __version__
from nanolib.config import Book, Chapter, load_book
from nanolib.files import atomic_dir
from nanolib.html import sanitize
from nanolib.runs import RunState, run_dir_for, run_state, runs_root

TEMPLATES = Path(__file__).resolve().parent / "templates"
REPO_ROOT = Path(__file__).resolve().parent.parent

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"

# What the pages need from node_modules/: (folder in node_modules, folder in assets, files).
# MathJax's combined TeX+CHTML build loads its fonts (and, on demand, menu and a11y parts)
# relative to itself; the widget manager's embed.js renders the built-in ipywidgets without
# require.js and loads its icon fonts relative to itself. Neither reaches for a CDN.
NODE_ASSETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("mathjax", "mathjax", ("LICENSE",)),
    ("mathjax/es5", "mathjax", ("tex-chtml-full.js",)),
    ("mathjax/es5/output/chtml/fonts/woff-v2", "mathjax/output/chtml/fonts/woff-v2", ("*",)),
    ("mathjax/es5/ui", "mathjax/ui", ("*",)),
    ("mathjax/es5/a11y", "mathjax/a11y", ("*",)),
    (
        "@jupyter-widgets/html-manager/dist",
        "widgets",
        ("embed.js", "embed.js.LICENSE.txt", "*.woff2", "*.woff", "*.ttf"),
    ),
    ("minisearch", "minisearch", ("LICENSE.txt",)),
    ("minisearch/dist/umd", "minisearch", ("index.js",)),
)
NODE_REQUIRED = (
    "mathjax/es5/tex-chtml-full.js",
    "@jupyter-widgets/html-manager/dist/embed.js",
    "minisearch/dist/umd/index.js",
)

# Only the book's own files run: no inline script or event handler, nothing from the network
# (file: for a book opened from disk, 'self' for one served over http). 'unsafe-eval': the widget
# manager compiles its JSON schemas with `new Function`. Plotly and MathJax set inline styles.
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self' file: 'unsafe-eval'",
        "style-src 'self' file: 'unsafe-inline'",
        "img-src 'self' file: data: blob:",
        "font-src 'self' file: data:",
        "connect-src 'self' file: data: blob:",
        "media-src 'self' file: data:",
        "base-uri 'none'",
        "form-action 'none'",
        "object-src 'none'",
        "frame-src 'none'",
    )
)

_MATH = re.compile(r"\$|\\\(|\\\[|\\begin\{")


class BookBuildError(RuntimeError):
    """The book cannot be built; the message says what to do."""


@dataclass(frozen=True)
class Uses:
    """Which of the heavier assets a page needs."""

    notebook: bool = False
    math: bool = False
    plotly: bool = False
    widgets: bool = False


def build_book(
    preset: str | None = None, out: str | Path | None = None, book: Book | None = None
) -> Path:
    """Render runs/<preset>/ into a static book (default: `<book root>/_book`); return its path."""
    book = book or load_book()
    preset = preset or book.render_preset
    preset_info = book.preset(preset)  # an unknown preset fails here, listing the valid ones
    out = Path(out) if out else book.root / "_book"
    modules = node_modules(book)
    states = {ch.slug: run_state(book, ch.slug, preset) for ch in book.chapters}
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    toc = [_toc_entry(ch, states[ch.slug]) for ch in book.chapters]
    order = [
        {"key": "index", "href": "index.html", "title": "Contents"},
        *({"key": e["slug"], "href": e["href"], "title": e["title"]} for e in toc),
        {"key": "report", "href": "report.html", "title": "Report card"},
    ]
    pages = _Pages(book, preset, toc, order, built)

    with atomic_dir(out) as tmp:
        os.chmod(tmp, 0o755)
        _copy_assets(tmp / "assets", modules)
        (tmp / "index.html").write_text(
            pages.render("index.html.j2", "index", Uses(), preset_info=preset_info),
            encoding="utf-8",
        )
        search: list[dict[str, str]] = []
        for ch in book.chapters:
            html, sections = _chapter_page(pages, book, ch, preset, states[ch.slug], tmp)
            (tmp / f"{ch.slug}.html").write_text(html, encoding="utf-8")
            search += _search_docs(ch, sections)
        (tmp / "report.html").write_text(_report_page(pages, book, preset, states), "utf-8")
        _write_search_index(tmp / "assets" / "search-index.js", search)
    return out


def node_modules(book: Book | None = None) -> Path:
    """The node_modules/ folder holding MathJax and the widget manager, or a clear error."""
    candidates = []
    if os.environ.get("NANOBOOK_NODE_MODULES"):
        candidates.append(Path(os.environ["NANOBOOK_NODE_MODULES"]))
    if book is not None:
        candidates.append(book.root / "node_modules")
    candidates.append(REPO_ROOT / "node_modules")
    for folder in candidates:
        if all((folder / rel).is_file() for rel in NODE_REQUIRED):
            return folder
    raise BookBuildError(
        f"the book's browser assets (MathJax, widget manager, MiniSearch) are not installed: run "
        f"`npm ci` in {REPO_ROOT} (it installs package-lock.json into node_modules/)"
    )


# ---- assets ----------------------------------------------------------------------------------


def _copy_assets(dest: Path, modules: Path) -> None:
    """Copy every file a page may load into dest (once per build; pages only link to them)."""
    dest.mkdir(parents=True)
    for src_rel, dst_rel, patterns in NODE_ASSETS:
        src, dst = modules / src_rel, dest / dst_rel
        for pattern in patterns:
            for path in sorted(src.glob(pattern)):
                target = dst / path.relative_to(src)
                if path.is_dir():
                    shutil.copytree(path, target, dirs_exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
    shutil.copyfile(_plotly_js(), dest / "plotly.min.js")
    for path in (TEMPLATES / "static").iterdir():
        shutil.copyfile(path, dest / path.name)
    (dest / "jupyter.css").write_text(_jupyter_css(), encoding="utf-8")


def _plotly_js() -> Path:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise BookBuildError(f"{path} is missing: reinstall plotly (pip install plotly)")
    return path


@lru_cache(maxsize=1)
def _jupyter_css() -> str:
    """JupyterLab's notebook styles (from the lab template; its dark theme where the reader's
    system prefers dark) and the code highlighting styles (which follow the theme's variables)."""
    from jupyterlab_pygments import JupyterStyle
    from pygments.formatters import HtmlFormatter

    lab = next(
        (Path(p) for p in _exporter().template_paths if (Path(p) / "static/index.css").is_file()),
        None,
    )
    if lab is None:
        raise BookBuildError(
            "nbconvert's lab template has no static/index.css: reinstall nbconvert"
        )
    parts = [
        (lab / "static/index.css").read_text(),
        (lab / "static/theme-light.css").read_text(),
        "@media (prefers-color-scheme: dark) {",
        (lab / "static/theme-dark.css").read_text(),
        "}",
        HtmlFormatter(style=JupyterStyle).get_style_defs(".highlight"),
    ]
    return "\n".join(parts)


# ---- chapters --------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _exporter():
    """One HTMLExporter for every chapter of every build (compiling templates is the slow part)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="nanobook",
        extra_template_basedirs=[str(TEMPLATES)],
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    exporter.register_filter("sanitize_html", _sanitize_output)
    return exporter


def _chapter_page(
    pages: _Pages, book: Book, ch: Chapter, preset: str, state: RunState, out: Path
) -> tuple[str, list[Section]]:
    """The chapter's page, and its sections (for the search index; none unless it has a run)."""
    failed = runs_root() / preset / f"{ch.slug}.failed.ipynb"
    shown = state.status in ("ok", "stale") and state.notebook is not None
    context: dict[str, Any] = {
        "state": state,
        "command": f"nanobook run {ch.number} --preset {preset}",
        "card": _run_card(state.manifest) if state.status in ("ok", "stale") else None,
        "failed_notebook": _shown_path(failed, book) if failed.exists() else None,
        "chapter_label": _label(ch.number),
        "source": _shown_path(ch.file, book),
        "download": f"notebooks/{ch.slug}.ipynb" if shown else None,
        "body": None,
        "top_in_body": False,
        "outline": [],
    }
    uses, sections = Uses(), []
    if shown:
        nb = _shown_notebook(state.notebook, book, ch, preset)
        (out / "notebooks").mkdir(exist_ok=True)
        text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"  # nbformat's layout
        (out / context["download"]).write_text(text, encoding="utf-8")
        top = pages.render_partial("_top.html.j2", **context)
        context["body"], context["top_in_body"], uses = _render_notebook(nb, ch, top)
        sections = _outline(context["body"])
        context["outline"] = [s for s in sections if s.level in (2, 3) and s.id]
    return pages.render("chapter.html.j2", ch.slug, uses, **context), sections


def _shown_notebook(path: Path, book: Book, ch: Chapter, preset: str):
    """The executed notebook as the book shows and offers it: paths as the reader will find
    them, widget HTML sanitised."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    _show_final_paths(nb, book, ch, preset)
    _sanitize_widgets(nb)
    return nb


def _render_notebook(nb, ch: Chapter, top: str) -> tuple[str, bool, Uses]:
    """The notebook as an HTML fragment with `top` (banner, run card) right under the chapter's
    title cell; whether it found that cell; and which assets the page needs."""
    from markupsafe import Markup

    title = next(
        (c for c in nb.cells if c.cell_type == "markdown" and c.source.lstrip().startswith("# ")),
        None,
    )
    if title is not None:
        title.metadata["nanobook_title"] = True
    resources = {
        "metadata": {"name": ch.slug, "path": str(ch.file.parent)},
        "nanobook_top": top,
    }
    body, _ = _exporter().from_notebook_node(nb, resources=resources)
    if title is not None:
        del title.metadata["nanobook_title"]
    return Markup(body), title is not None, _uses(nb)


# ---- what outputs show -----------------------------------------------------------------------

# A chapter executes in a temporary folder beside its run (runs/<preset>/.<slug>.partial…) and is
# moved into place when it succeeds: what it printed names the folder it ran in.
_PARTIAL = re.compile(r"(?<![\w.])\.(\d\d[\w-]*)\.partial[^/\\\s'\"<>]*")
WIDGET_HTML_MODELS = {"HTMLModel", "HTMLMathModel"}


def _show_final_paths(nb, book: Book, ch: Chapter, preset: str) -> None:
    """Rewrite the paths in outputs (and the injected parameters) to where the run now lives:
    `runs/<preset>/<slug>/…` for the runs folder, book-relative for the rest of the book."""
    final = f"runs/{preset}/{ch.slug}"
    pm = nb.metadata.get("papermill", {})
    work = (pm.get("parameters") or {}).get("run_dir")
    swaps = [(str(run_dir_for(ch.slug, preset)), final)]
    if work:
        swaps.insert(0, (str(work), final))
    swaps += [(str(runs_root()), "runs"), (str(book.root) + os.sep, "")]

    def fix(text: str) -> str:
        for old, new in swaps:
            text = text.replace(old, new)
        return _PARTIAL.sub(r"\1", text)

    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "injected-parameters" in cell.metadata.get("tags", []) and work:
            cell.source = re.sub(
                r"^run_dir = .*$",
                f"run_dir = None  # nanobook ran it in a temporary folder, now {final}",
                cell.source,
                flags=re.M,
            )
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = fix(output["text"])
            if "traceback" in output:
                output["traceback"] = [fix(line) for line in output["traceback"]]
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    output["data"][mime] = fix(value)
    for key in ("input_path", "output_path"):
        if isinstance(pm.get(key), str):
            pm[key] = fix(pm[key])
    if work and isinstance(pm.get("parameters"), dict):
        pm["parameters"]["run_dir"] = None


def _sanitize_widgets(nb) -> None:
    """The saved state of HTML widgets (tqdm's labels, say) is HTML the widget manager inserts."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE_MIME, {}).get("state", {})
    for model in state.values():
        values = model.get("state", {})
        if model.get("model_name") in WIDGET_HTML_MODELS and isinstance(values.get("value"), str):
            values["value"] = sanitize(values["value"])
        if values.get("description_allow_html") and isinstance(values.get("description"), str):
            values["description"] = sanitize(values["description"])


# ---- outline and search ----------------------------------------------------------------------


@dataclass
class Section:
    """A heading of a rendered chapter and the prose and code under it (up to the next one)."""

    id: str | None
    title: str
    level: int
    text: str = ""
    parts: list[str] = field(default_factory=list)  # the text while it is being read


_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4}
_BLOCKS = {"p", "li", "td", "th", "tr", "div", "pre", "dd", "dt", "blockquote", "table"}
# The parts of a rendered cell that are the chapter's own words: its markdown and its code.
_TEXT_CLASSES = ("jp-RenderedMarkdown", "jp-InputArea-editor")


class _OutlineParser(HTMLParser):
    """Headings and the text under each, from a rendered notebook's markdown and code."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections = [Section(None, "", 0)]
        self.new_cell()

    def new_cell(self) -> None:
        """Forget open tags (a cell is fed without its outputs, so its tags may not close)."""
        self.reset()
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, opens text, skipped)
        self.in_text = 0
        self.skip = 0  # inside a heading's anchor link (¶), a <script> or a <style>
        self.heading: Section | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _VOID:
            if tag == "br" and self.in_text and self.heading is None:
                self.sections[-1].parts.append(" ")
            return
        classes = dict(attrs).get("class") or ""
        opens = any(c in classes for c in _TEXT_CLASSES)
        skipped = tag in ("script", "style") or "anchor-link" in classes
        self.stack.append((tag, opens, skipped))
        self.in_text += opens
        self.skip += skipped
        if tag in _HEADINGS and self.in_text and not self.skip:
            self.heading = Section(dict(attrs).get("id"), "", _HEADINGS[tag])
            self.sections.append(self.heading)

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCKS and self.in_text and self.heading is None:
            self.sections[-1].parts.append(" ")  # words of adjacent blocks stay apart
        if all(t != tag for t, _, _ in self.stack):
            return
        while self.stack:
            t, opens, skipped = self.stack.pop()
            self.in_text -= opens
            self.skip -= skipped
            if t in _HEADINGS and self.heading is not None:
                self.heading.title = " ".join(self.heading.title.split())
                self.heading = None
            if t == tag:
                return

    def handle_data(self, data: str) -> None:
        if self.skip or not self.in_text:
            return
        if self.heading is not None:
            self.heading.title += data
        else:
            self.sections[-1].parts.append(data)


_CELL_START = re.compile(r'(?=<div class="jp-Cell )')
_OUTPUTS_START = '<div class="jp-Cell-outputWrapper"'


def _outline(body: str) -> list[Section]:
    """The sections of a rendered chapter, in order (the first: text before any heading)."""
    parser = _OutlineParser()
    # Only the cells' inputs are read (outputs are most of a page's markup and stay out of the
    # index): cell by cell, each cut before its outputs.
    for cell in _CELL_START.split(str(body)):
        parser.new_cell()
        parser.feed(cell.split(_OUTPUTS_START, 1)[0])
        parser.close()
    for section in parser.sections:
        section.text, section.parts = " ".join("".join(section.parts).split()), []
    return [s for s in parser.sections if s.title or s.text]


def _search_docs(ch: Chapter, sections: list[Section]) -> list[dict[str, str]]:
    """One search document per section of a chapter; a chapter without a run gets its title."""
    chapter = f"{_label(ch.number)}. {ch.title}"
    if not sections:
        return [{"href": f"{ch.slug}.html", "chapter": chapter, "section": "", "text": ""}]
    return [
        {
            "href": f"{ch.slug}.html" + (f"#{s.id}" if s.id and s.level > 1 else ""),
            "chapter": chapter,
            "section": s.title,
            "text": s.text,
        }
        for s in sections
    ]


def _write_search_index(path: Path, docs: list[dict[str, str]]) -> None:
    """The index as a script (pages opened from file:// cannot fetch JSON): documents only;
    the browser builds the MiniSearch index from them when the reader first searches."""
    for i, doc in enumerate(docs):
        doc["id"] = str(i)
    data = json.dumps(docs, ensure_ascii=False, separators=(",", ":"))
    data = data.replace("</", "<\\/")  # a "</script>" in the text must not end anything
    path.write_text(f"window.NANOBOOK_SEARCH_DOCS = {data};\n", encoding="utf-8")


def _sanitize_output(fragment: str) -> str:
    return sanitize(fragment)  # looked up at each call (a test swaps it for a control)


def _uses(nb) -> Uses:
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    datas = [o.get("data", {}) for o in outputs]
    texts = [c.source for c in nb.cells if c.cell_type == "markdown"]
    for data in datas:
        texts += [str(data[k]) for k in ("text/markdown", "text/latex", "text/html") if k in data]
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE_MIME, {}).get("state")
    widgets = bool(state) and any(WIDGET_VIEW_MIME in d for d in datas)
    return Uses(
        notebook=True,
        math=any(_MATH.search(t) for t in texts) or widgets,  # widget labels may hold math
        plotly=any(PLOTLY_MIME in d for d in datas),
        widgets=widgets,
    )


def _run_card(m: dict[str, Any]) -> dict[str, Any]:
    device = str(m.get("device_name") or m.get("device") or "—")
    if int(m.get("nproc") or 1) > 1:
        device += f" × {m['nproc']}"
    versions = " · ".join(
        f"{name} {m[key]}"
        for name, key in (("torch", "torch"), ("nanolib", "nanolib_version"), ("Python", "python"))
        if m.get(key)
    )
    return {
        "preset": m.get("preset", "—"),
        "device": device,
        "wall_time": _duration(m.get("wall_time_s")),
        "started": _date(m.get("start")),
        "versions": versions or "—",
        "git_commit": _short_commit(m.get("git_commit")),
        "headline": [(k, _number(v)) for k, v in (m.get("headline") or {}).items()],
        "params": [(k, json.dumps(v, default=str)) for k, v in (m.get("params") or {}).items()],
    }


# ---- report card -----------------------------------------------------------------------------


def _report_page(pages: _Pages, book: Book, preset: str, states: dict[str, RunState]) -> str:
    """The report card: what each chapter cost, what it reached, and whether that was expected."""
    from nanolib import report

    labelled = {h.chapter for h in report.HEADLINES}
    other = [  # headlines of chapters the report knows no labels for (e.g. a new chapter)
        (f"{ch.slug[:2]} {key}", report.fmt(value))
        for ch in book.chapters
        if ch.slug not in labelled
        for key, value in ((states[ch.slug].manifest or {}).get("headline") or {}).items()
    ]
    figure = report.flops_figure(book, preset)
    return pages.render(
        "report.html.j2",
        "report",
        Uses(plotly=figure is not None),
        preset_info=book.preset(preset),
        ledger=report.ledger(book, preset, states),
        results=report.results(book, preset, states),
        other=other,
        differences=report.load_bands(book)[1] if book.preset(preset).device == "cuda" else [],
        figure=figure,
    )


# ---- pages -----------------------------------------------------------------------------------


class _Pages:
    """The jinja environment of templates/pages/ and what every page shares."""

    def __init__(self, book: Book, preset: str, toc: list, order: list, built: str):
        import jinja2

        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES / "pages"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.shared = {
            "book": book,
            "preset": preset,
            "toc": toc,
            "built": built,
            "nanolib_version": __version__,
            "csp": CSP,
        }
        self.order = order

    def render_partial(self, template: str, **context: Any) -> str:
        """A fragment (no page shell) with the shared context."""
        return self.env.get_template(template).render(**self.shared, **context)

    def render(self, template: str, key: str, uses: Uses, **context: Any) -> str:
        i = next(i for i, p in enumerate(self.order) if p["key"] == key)
        page = {
            **self.order[i],
            "prev": self.order[i - 1] if i > 0 else None,
            "next": self.order[i + 1] if i + 1 < len(self.order) else None,
        }
        tpl = self.env.get_template(template)
        return tpl.render(**self.shared, page=page, uses=uses, **context)


def _toc_entry(ch: Chapter, state: RunState) -> dict[str, Any]:
    m = state.manifest or {}
    shown = state.status in ("ok", "stale")
    return {
        "slug": ch.slug,
        "label": _label(ch.number),
        "title": ch.title,
        "href": f"{ch.slug}.html",
        "status": state.status,
        "wall_time": _duration(m.get("wall_time_s")) if shown else "—",
        "started": _date(m.get("start")) if shown else "—",
    }


# ---- formatting ------------------------------------------------------------------------------


def _label(number: str) -> str:
    return str(int(number)) if number.isdigit() else number


def _shown_path(path: Path, book: Book) -> str:
    try:
        return str(path.resolve().relative_to(book.root))
    except ValueError:
        return str(path)


def _duration(seconds: Any) -> str:
    if seconds is None or seconds == "":
        return "—"
    s = float(seconds)
    if s < 10:
        return f"{s:.2f} s"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _date(iso: Any) -> str:
    if not iso:
        return "—"
    try:
        t = datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _short_commit(commit: Any) -> str:
    if not commit:
        return "—"
    sha, plus, rest = str(commit).partition("+")
    return sha[:10] + plus + rest


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "not measured"  # never a raw None or nan on a page
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"
