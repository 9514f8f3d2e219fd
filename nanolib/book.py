"""Render what runs/ holds into the static, offline book under _book/; it never executes code.

`build_book(preset)` walks book.yml's chapters in order and asks `nanolib.runs.run_state` about
each one's run at the preset. Runs that are ok or stale are rendered from their executed
notebook with nbconvert (our `nanobook` template extends JupyterLab's `lab` template); stale ones
get a banner that says why, and failed or missing chapters get a placeholder page that names
the command that makes them. Beside the chapters come `index.html` (table of contents) and
`report.html` (one row per manifest: cost and headline metrics).

Everything a page loads lives in `_book/assets/`, copied once per build: plotly.min.js from the
plotly wheel, MathJax 3 and the Jupyter widget HTML manager from `node_modules/` (declared in the
repository's package.json; `npm ci` installs them), and the CSS/JS in `nanolib/templates/static/`.
The book is built in a temporary sibling directory and swapped in at the end, so a crash never
leaves half a book behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from nanolib import __version__
from nanolib.config import Book, Chapter, load_book
from nanolib.files import atomic_dir
from nanolib.runs import RunState, run_state, runs_root

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
)
NODE_REQUIRED = ("mathjax/es5/tex-chtml-full.js", "@jupyter-widgets/html-manager/dist/embed.js")

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
        for ch in book.chapters:
            html = _chapter_page(pages, book, ch, preset, states[ch.slug])
            (tmp / f"{ch.slug}.html").write_text(html, encoding="utf-8")
        groups = _report_groups(book, preset, states)
        (tmp / "report.html").write_text(
            pages.render("report.html.j2", "report", Uses(), groups=groups), encoding="utf-8"
        )
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
        f"the book's browser assets (MathJax, widget manager) are not installed: run `npm ci` in "
        f"{REPO_ROOT} (it installs package-lock.json into node_modules/)"
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
    """JupyterLab's notebook styles (from the lab template) and the code highlighting styles."""
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
        HtmlFormatter(style=JupyterStyle).get_style_defs(".highlight"),
    ]
    return "\n".join(parts)


# ---- chapters --------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _exporter():
    """One HTMLExporter for every chapter of every build (compiling templates is the slow part)."""
    from nbconvert import HTMLExporter

    return HTMLExporter(
        template_name="nanobook",
        extra_template_basedirs=[str(TEMPLATES)],
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )


def _chapter_page(pages: _Pages, book: Book, ch: Chapter, preset: str, state: RunState) -> str:
    failed = runs_root() / preset / f"{ch.slug}.failed.ipynb"
    context: dict[str, Any] = {
        "state": state,
        "command": f"nanobook run {ch.number} --preset {preset}",
        "card": _run_card(state.manifest) if state.status in ("ok", "stale") else None,
        "failed_notebook": _shown_path(failed, book) if failed.exists() else None,
        "chapter_label": _label(ch.number),
        "source": _shown_path(ch.file, book),
        "body": None,
        "top_in_body": False,
    }
    uses = Uses()
    if state.status in ("ok", "stale") and state.notebook is not None:
        top = pages.render_partial("_top.html.j2", **context)
        context["body"], context["top_in_body"], uses = _render_notebook(state.notebook, ch, top)
    return pages.render("chapter.html.j2", ch.slug, uses, **context)


def _render_notebook(path: Path, ch: Chapter, top: str) -> tuple[str, bool, Uses]:
    """The executed notebook as an HTML fragment with `top` (banner, run card) right under the
    chapter's title cell; whether it found that cell; and which assets the page needs."""
    import nbformat
    from markupsafe import Markup

    nb = nbformat.read(path, as_version=4)
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
    return Markup(body), title is not None, _uses(nb)


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


def _report_groups(book: Book, preset: str, states: dict[str, RunState]) -> list[dict[str, Any]]:
    """One table per preset that has runs; the rendered preset first, with every chapter."""
    groups = [_report_group(book, preset, states, link=True)]
    for name in book.presets:
        if name == preset:
            continue
        if any((runs_root() / name / ch.slug / "manifest.json").exists() for ch in book.chapters):
            other = {ch.slug: run_state(book, ch.slug, name) for ch in book.chapters}
            groups.append(_report_group(book, name, other, link=False))
    return groups


def _report_group(
    book: Book, preset: str, states: dict[str, RunState], link: bool
) -> dict[str, Any]:
    rows, wall, flops = [], 0.0, 0.0
    for ch in book.chapters:
        state = states[ch.slug]
        m = state.manifest or {}
        if not link and not m:
            continue
        wall += float(m.get("wall_time_s") or 0)
        flops += float(m.get("flops") or 0)
        card = _run_card(m) if m else None
        rows.append(
            {
                "label": _label(ch.number),
                "title": ch.title,
                "href": f"{ch.slug}.html" if link else None,
                "status": state.status,
                "device": card["device"] if card else "—",
                "wall_time": _duration(m.get("wall_time_s")),
                "headline": card["headline"] if card else [],
                "flops": _flops(m.get("flops")),
                "started": _date(m.get("start")),
            }
        )
    return {
        "preset": preset,
        "description": book.preset(preset).description,
        "rows": rows,
        "ok": sum(r["status"] == "ok" for r in rows),
        "wall_time": _duration(wall),
        "flops": _flops(flops) if flops else "—",
    }


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
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _flops(value: Any) -> str:
    if not value:
        return "—"
    mantissa, _, exponent = f"{float(value):.3g}".partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa
