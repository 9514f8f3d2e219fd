"""Shared fixtures: a small book of its own, executed once per session (tests/test_book.py and
tests/test_browser.py render it)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# An accidental download must fail loudly, not slowly: every test runs offline.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent  # the real book's checkout

HEADER = """\
# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---
"""

BOOK_YML = """\
title: The Fixture Book
subtitle: Four tiny chapters that exercise the book builder.
render_preset: smoke
cell_timeout_s: 120
chapters:
  - file: chapters/01_plots.py
    title: Plots, math and widgets
    params:
      points: 20
  - file: chapters/02_results.py
    title: Results
    params:
      scale: 1.0
  - file: chapters/03_broken.py
    title: A chapter that fails
  - file: chapters/04_later.py
    title: A chapter not run yet
presets:
  smoke:
    description: Seconds per chapter.
    where: any CPU
    device: cpu
    nproc: 1
    chapters:
      01_plots:
        points: 8
  tiny:
    description: The CPU book.
    device: cpu
"""

CHAPTERS = {
    "01_plots": """
# %% [markdown]
# # 1. Plots, math and widgets
#
# The loss falls like a power law, $L(N) = a N^{-\\alpha}$; the simplest curve is $x^2$:
#
# $$\\sum_{i=1}^{n} x_i^2$$

# %% tags=["parameters"]
preset = "tiny"
points = None
run_dir = None

# %%
from nanolib.runs import start_chapter

run = start_chapter("01_plots", preset, globals())
print(run.summary())

# %% [markdown]
# ## A figure

# %%
import plotly.express as px

xs = list(range(run.p.points))
px.line(x=xs, y=[x * x for x in xs], title="x squared", labels={"x": "x", "y": "x²"})

# %% [markdown]
# ## A widget

# %%
import ipywidgets as widgets

widgets.IntSlider(value=3, min=0, max=10, description="depth")

# %%
run.finish(headline={"points": run.p.points, "last_y": float(xs[-1] ** 2)}, flops=1.5e9)
""",
    "02_results": """
# %% [markdown]
# # 2. Results

# %% tags=["parameters"]
preset = "tiny"
scale = None
run_dir = None

# %%
from nanolib.runs import start_chapter

run = start_chapter("02_results", preset, globals())
print(f"scale = {run.p.scale}")

# %%
run.finish(headline={"val_bpb": 1.2345678 * run.p.scale}, flops=2.0e10)
""",
    "03_broken": """
# %% [markdown]
# # 3. A chapter that fails

# %% tags=["parameters"]
preset = "tiny"
run_dir = None

# %%
from nanolib.runs import start_chapter

run = start_chapter("03_broken", preset, globals())

# %%
raise RuntimeError("this chapter fails on purpose")
""",
    "04_later": """
# %% [markdown]
# # 4. A chapter not run yet

# %% tags=["parameters"]
preset = "tiny"
run_dir = None

# %%
print("never executed by the fixture")
""",
}


@dataclass(frozen=True)
class FixtureBook:
    root: Path
    runs: Path
    preset: str = "smoke"

    def env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point nanolib at this book (book.yml and runs/)."""
        monkeypatch.setenv("NANOBOOK_ROOT", str(self.root))
        monkeypatch.setenv("NANOBOOK_RUNS", str(self.runs))


def _execute(src: Path, out: Path, preset: str) -> None:
    """Run a percent-format chapter with papermill, in-process; retry once on a rare hang."""
    import jupytext
    import papermill

    out.parent.mkdir(parents=True, exist_ok=True)
    for attempt in (1, 2):
        try:
            papermill.execute_notebook(
                jupytext.read(src),
                str(out),
                parameters={"preset": preset},
                kernel_name="python3",
                cwd=str(src.parent),
                execution_timeout=120,
                progress_bar=False,
            )
            return
        except TimeoutError:
            if attempt == 2:
                raise


@pytest.fixture(scope="session")
def fixture_book(tmp_path_factory: pytest.TempPathFactory) -> FixtureBook:
    """A four-chapter book whose runs at `smoke` are: 01 ok, 02 stale (its source was edited after
    the run), 03 failed (notebook kept as runs/smoke/03_broken.failed.ipynb), 04 missing."""
    from papermill.exceptions import PapermillExecutionError

    root = tmp_path_factory.mktemp("fixture_book")
    (root / "chapters").mkdir()
    (root / "book.yml").write_text(BOOK_YML)
    for slug, body in CHAPTERS.items():
        (root / "chapters" / f"{slug}.py").write_text(HEADER + textwrap.dedent(body))
    book = FixtureBook(root=root, runs=root / "runs")
    with pytest.MonkeyPatch.context() as mp:
        book.env(mp)
        for slug in ("01_plots", "02_results"):
            out = book.runs / book.preset / slug / f"{slug}.ipynb"
            _execute(root / "chapters" / f"{slug}.py", out, book.preset)
        failed = book.runs / book.preset / "03_broken.failed.ipynb"
        with pytest.raises(PapermillExecutionError):
            _execute(root / "chapters" / "03_broken.py", failed, book.preset)
    # Edit chapter 2 after its run: its page must say the run is stale.
    with open(root / "chapters" / "02_results.py", "a") as f:
        f.write("\n# %% [markdown]\n# A paragraph written after the run.\n")
    return book


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every chapter of the real book executed once at smoke into a temp runs/ (in order: later
    chapters read earlier ones' artifacts); NANOBOOK_RUNS points there while it is in use."""
    from nanolib.config import load_book
    from nanolib.execute import execute_chapter

    book = load_book(REPO / "book.yml")
    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NANOBOOK_RUNS", str(runs))
        for ch in book.chapters:
            execute_chapter(ch.slug, "smoke", book=book)
    return runs


class RangeServer:
    """Serves the files of a folder on 127.0.0.1 with HTTP Range support, logging every GET
    ({path, range, sent}); it can cut the next responses short or ignore Range headers.

    With hub=True it answers like a Hugging Face endpoint (HF_ENDPOINT): the folder's files are
    the files of any repo at any revision (`/datasets/<owner>/<repo>/resolve/<rev>/<file>`), and
    HEAD gives the commit, ETag (sha256) and size huggingface_hub asks for. Every request's path
    and Authorization header is kept in `auth`."""

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, root: Path, hub: bool = False):
        self.root = root
        self.hub = hub
        self.log: list[dict] = []
        self.heads: list[str] = []  # paths of HEAD requests
        self.auth: list[tuple[str, str | None]] = []  # (path, Authorization) of each request
        self.cut_next = 0  # the next n responses stop halfway through the body
        self.ignore_range = False  # answer a Range request with the whole file (200)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _file(self) -> Path | None:
                server.auth.append((self.path, self.headers.get("Authorization")))
                name = self.path.split("?")[0].lstrip("/")
                if server.hub:
                    m = re.fullmatch(r"(?:datasets/)?[^/]+/[^/]+/resolve/[^/]+/(.+)", name)
                    name = m.group(1) if m else ""
                path = server.root / name
                if name and path.is_file():
                    return path
                self.send_response(404)
                if server.hub:
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Repo-Commit", server.COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None

            def do_HEAD(self):
                server.heads.append(self.path)
                path = self._file()
                if path is None:
                    return
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
                self.send_header("X-Repo-Commit", server.COMMIT)
                self.end_headers()

            def do_GET(self):
                entry = {"path": self.path, "range": self.headers.get("Range"), "sent": 0}
                server.log.append(entry)
                path = self._file()
                if path is None:
                    return
                body = path.read_bytes()
                start, status = 0, 200
                m = re.fullmatch(r"bytes=(\d+)-", entry["range"] or "")
                if m and not server.ignore_range:
                    start, status = int(m.group(1)), 206
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                chunk = body[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(chunk)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if server.cut_next:
                    server.cut_next -= 1
                    chunk = chunk[: len(chunk) // 2]
                    self.close_connection = True
                # recorded before writing: the client may finish reading before this thread runs on
                entry["sent"] = len(chunk)
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def ranges(self) -> list[str | None]:
        """The Range header of each GET so far (None: a plain GET)."""
        return [e["range"] for e in self.log]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def range_server() -> Iterator[Callable[..., RangeServer]]:
    """A factory: range_server(folder, hub=False) serves that folder until the test ends."""
    started: list[RangeServer] = []

    def start(root: Path, hub: bool = False) -> RangeServer:
        started.append(RangeServer(root, hub=hub))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 512-id tokenizer trained on the first 300,000 characters of the shipped corpus."""
    from nanolib.data import iter_texts
    from nanolib.tokenizer import Tokenizer

    d = tmp_path_factory.mktemp("tok") / "tokenizer"
    Tokenizer.train(iter_texts("tiny", "train", max_chars=300_000), 512).save(d)
    return d


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a test module (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    results must not depend on how busy the machine is, torchrun's ranks use one thread too, and
    tiny shapes lose more to a second thread than they gain."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def book_copy(tmp_path, monkeypatch):
    """A copy of book.yml and the chapters that a test may break, with empty runs/ and data."""
    shutil.copy(REPO / "book.yml", tmp_path / "book.yml")
    shutil.copytree(REPO / "chapters", tmp_path / "chapters")
    monkeypatch.setenv("NANOBOOK_ROOT", str(tmp_path))
    monkeypatch.setenv("NANOBOOK_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("NANOBOOK_DATA", str(tmp_path / "data_cache"))
    return tmp_path
