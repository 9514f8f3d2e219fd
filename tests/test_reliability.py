"""Runs that cannot corrupt each other or outlive their parent, one-line failures, honest status.

These start real `nanobook` processes on a two-chapter book of their own: chapter 01 waits for a
gate file (and starts a grandchild in its own session, as torchrun's launcher does), chapter 02
fails on purpose.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from nanolib.config import load_book
from nanolib.execute import execute_chapter
from nanolib.procs import AlreadyRunningError, Owner, write_owner
from nanolib.runs import partial_dir, run_state

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

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
title: The Process Book
render_preset: smoke
cell_timeout_s: 120
chapters:
  - file: chapters/01_wait.py
    title: A chapter that waits for its gate
    params:
      label: a
      fail: false
  - file: chapters/02_fail.py
    title: A chapter that fails
presets:
  smoke:
    description: Seconds.
    device: cpu
  tiny:
    description: The CPU book.
    device: cpu
"""

WAIT = """
# %% tags=["parameters"]
preset = "tiny"
label = None
fail = None
run_dir = None

# %%
import os
import subprocess
import sys
import time
from pathlib import Path

from nanolib.runs import start_chapter

run = start_chapter("01_wait", preset, globals())
run.log(event="start", label=run.p.label)

# %%
# a grandchild in a session of its own, like a torchrun launcher
sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                           start_new_session=True)
run.path("kernel.pid").write_text(f"{os.getpid()} {sleeper.pid}")
gate = Path(run.book.root) / "gate"
deadline = time.time() + 120
while not gate.exists() and time.time() < deadline:
    time.sleep(0.05)
sleeper.kill()
run.log(event="end", label=run.p.label)
if run.p.fail:
    raise RuntimeError("made to fail")

# %%
run.finish(headline={"label": run.p.label})
"""

FAIL = """
# %% tags=["parameters"]
preset = "tiny"
run_dir = None

# %%
from nanolib.runs import start_chapter

run = start_chapter("02_fail", preset, globals())

# %%
def deep(n):
    return deep(n - 1) if n else 1 / 0

deep(30)
"""


@pytest.fixture
def book(tmp_path, monkeypatch) -> Path:
    """A fresh copy of the process book, with NANOBOOK_ROOT and NANOBOOK_RUNS pointing at it."""
    (tmp_path / "chapters").mkdir()
    (tmp_path / "book.yml").write_text(BOOK_YML)
    for slug, body in {"01_wait": WAIT, "02_fail": FAIL}.items():
        (tmp_path / "chapters" / f"{slug}.py").write_text(HEADER + textwrap.dedent(body))
    monkeypatch.setenv("NANOBOOK_ROOT", str(tmp_path))
    monkeypatch.setenv("NANOBOOK_RUNS", str(tmp_path / "runs"))
    return tmp_path


def nanobook(*args: str) -> subprocess.Popen:
    """`nanobook ARGS` as a real process (environment inherited: the test's book)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "nanolib.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def wait_for(path: Path, timeout_s: float = 90) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {timeout_s} s")


def started_chapter(book: Path, *extra: str) -> tuple[subprocess.Popen, list[int]]:
    """Start chapter 01 and wait until its kernel runs; return the CLI and the pids below it."""
    cli = nanobook("run", "01", "--preset", "smoke", "--force", *extra)
    kernel, sleeper = map(int, wait_for(partial_dir("01_wait", "smoke") / "kernel.pid").split())
    below = {p.pid for p in psutil.Process(cli.pid).children(recursive=True)}
    assert kernel in below  # the kernel is a descendant (in a session of its own)
    return cli, sorted(below | {kernel, sleeper})


def all_gone(pids: list[int], timeout_s: float = 20) -> list[int]:
    """The pids still alive (not zombies) after waiting up to timeout_s."""
    deadline = time.time() + timeout_s
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.1)


def test_second_run_is_refused_naming_the_first(book):
    first, _ = started_chapter(book, "-p", "label", "first")
    second = nanobook("run", "01", "--preset", "smoke", "--force", "-p", "label", "second")
    out, err = second.communicate(timeout=60)
    assert second.returncode == 3, err
    assert len(err.strip().splitlines()) == 1, err
    assert f"pid {first.pid}" in err and "already running" in err
    (book / "gate").touch()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    run = book / "runs/smoke/01_wait"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["params"]["label"] == "first" and manifest["status"] == "ok"
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert events == [{"event": "start", "label": "first"}, {"event": "end", "label": "first"}]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_to_cli_stops_papermill_kernel_and_grandchildren(book, sig):
    cli, pids = started_chapter(book)
    cli.send_signal(sig)
    out, err = cli.communicate(timeout=180)  # a loaded 2-core machine once took over 60 s
    assert cli.returncode == 128 + sig, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"stopped by {'Ctrl-C' if sig == signal.SIGINT else sig.name}" in lines[0]
    assert "code cell 3 ('# a grandchild" in lines[0] and "resumes it" in lines[0]
    assert all_gone(pids) == []
    log = book / "runs/smoke/01_wait.failed.log"
    assert log.exists() and "stopped by SIGTERM" in log.read_text()  # as forwarded
    assert run_state(load_book(), "01", "smoke").status == "failed"  # interrupted first run


def test_sigkill_to_cli_stops_the_chapter_and_a_new_run_takes_over(book):
    cli, pids = started_chapter(book)
    cli.kill()
    cli.wait()
    assert all_gone(pids) == []  # the chapter's process dies with its parent, and takes its tree
    (book / "gate").touch()
    again = nanobook("run", "01", "--preset", "smoke")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert run_state(load_book(), "01", "smoke").status == "ok"


def test_a_live_process_in_the_work_folder_is_not_shared(book):
    work = partial_dir("01_wait", "smoke")
    work.mkdir(parents=True)
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_owner(
            work / "owner.json", Owner(orphan.pid, psutil.Process(orphan.pid).create_time())
        )
        with pytest.raises(AlreadyRunningError, match=f"pid {orphan.pid}.*kill {orphan.pid}"):
            execute_chapter("01", "smoke", force=True)
    finally:
        orphan.kill()
        orphan.wait()


def test_chapter_failure_is_one_line_with_the_traceback_in_a_log(book):
    cli = nanobook("run", "02", "--preset", "smoke")
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert "code cell 3 ('def deep(n):')" in line and "ZeroDivisionError" in line
    assert "02_fail.failed.ipynb" in line and "02_fail.failed.log" in line
    assert "`nanobook run 02 --preset smoke`" in line
    log = (book / "runs/smoke/02_fail.failed.log").read_text()
    assert "Traceback" in log and "deep(n - 1)" in log
    # the first run failed: status says so (not "missing")
    status = nanobook("status", "--preset", "smoke")
    out, err = status.communicate(timeout=60)
    row = next(line for line in out.splitlines() if line.startswith("02"))
    assert " failed" in row and "missing" not in row


# Loaded by every Python process of a run (PYTHONPATH): any connection or name lookup outside
# this machine is recorded and refused.
NO_NETWORK = """
import os, socket

_log = os.environ["NANOBOOK_TEST_NET_LOG"]
with open(_log + ".loaded", "a") as f:
    f.write(f"{os.getpid()}\\n")
_LOCAL = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0"}


def _refuse(what):
    with open(_log, "a") as f:
        f.write(f"{os.getpid()} {what}\\n")
    raise OSError(f"network disabled by the test: {what}")


def _local(sock, address):
    return sock.family == socket.AF_UNIX or (isinstance(address, tuple) and address[0] in _LOCAL)


_connect, _connect_ex, _getaddrinfo = (
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo)


def connect(self, address):
    return _connect(self, address) if _local(self, address) else _refuse(f"connect {address!r}")


def connect_ex(self, address):
    return _connect_ex(self, address) if _local(self, address) else _refuse(f"connect {address!r}")


def getaddrinfo(host, *args, **kwargs):
    if host in _LOCAL:
        return _getaddrinfo(host, *args, **kwargs)
    return _refuse(f"getaddrinfo {host!r}")


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = (
    connect, connect_ex, getaddrinfo)
"""


def test_smoke_chapters_make_no_network_attempt(tmp_path):
    """Chapters 01 and 02 at smoke, with none of the HF offline switches set, try no connection."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(NO_NETWORK)
    log = tmp_path / "net.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "NANOBOOK_"))}
    env.update(
        PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{ROOT}",
        NANOBOOK_RUNS=str(tmp_path / "runs"),
        NANOBOOK_TEST_NET_LOG=str(log),
        HF_HOME=str(tmp_path / "hf"),  # a fresh cache, as a new user has
    )
    cli = subprocess.run(
        [sys.executable, "-m", "nanolib.cli", "run", "01", "02", "--preset", "smoke"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stderr
    loaded = set(Path(f"{log}.loaded").read_text().split())
    assert len(loaded) >= 5  # nanobook, and a chapter process and a kernel per chapter
    assert not log.exists(), log.read_text()
    # chapter 02 records the tokenizer it read, as chapter 01 recorded it
    made = json.loads((tmp_path / "runs/smoke/01_tokenizer/manifest.json").read_text())
    read = json.loads((tmp_path / "runs/smoke/02_model/manifest.json").read_text())
    assert read["consumed"] == {
        "tokenizer": {"chapter": "01_tokenizer", "hash": made["artifacts"]["tokenizer"]}
    }


def test_a_tokenizer_smaller_than_asked_fails_the_chapter(tmp_path):
    env = dict(os.environ, NANOBOOK_RUNS=str(tmp_path / "runs"), PYTHONPATH=str(ROOT))
    env.pop("NANOBOOK_ROOT", None)
    cli = subprocess.run(
        [sys.executable, "-m", "nanolib.cli", "run", "01", "--preset", "smoke"]
        + ["-p", "max_chars", "200"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 1
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and "asked for a 512-id tokenizer, but 200 characters" in lines[0]
    assert not (tmp_path / "runs/smoke/01_tokenizer").exists()


def papermill(book: Path, out: Path, *params: str) -> subprocess.Popen:
    """Plain papermill (no nanobook) on chapter 01 of the process book."""
    import jupytext
    import nbformat

    nb = book / "chapters/01_wait.ipynb"
    if not nb.exists():
        nbformat.write(jupytext.read(book / "chapters/01_wait.py"), nb)
    args = [a for kv in zip(params[::2], params[1::2]) for a in ("-p", *kv)]
    return subprocess.Popen(
        [sys.executable, "-m", "papermill", str(nb), str(out), "-p", "preset", "smoke", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=book / "chapters",
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_plain_papermill_cannot_break_a_good_run(book, tmp_path):
    (book / "gate").touch()
    good = nanobook("run", "01", "--preset", "smoke")
    assert good.wait(timeout=120) == 0, good.stderr.read()
    run = book / "runs/smoke/01_wait"
    before = snapshot(run)
    assert run_state(load_book(), "01", "smoke").status == "ok"

    failing = papermill(book, tmp_path / "failed.ipynb", "fail", "True", "label", "bad")
    out, err = failing.communicate(timeout=120)
    assert failing.returncode != 0 and "made to fail" in err
    assert snapshot(run) == before  # the good run, its manifest included, is untouched
    assert run_state(load_book(), "01", "smoke").status == "ok"

    passing = papermill(book, tmp_path / "passed.ipynb", "label", "b")
    out, err = passing.communicate(timeout=120)
    assert passing.returncode == 0, err
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["params"]["label"] == "b" and manifest["executed_by"] == "notebook"
    assert not partial_dir("01_wait", "smoke").exists()  # swapped in at run.finish()
    st = run_state(load_book(), "01", "smoke")
    assert st.status == "stale" and 'parameters overridden: label="b"' in st.reasons


def test_plain_papermill_holds_the_same_lock(book, tmp_path):
    nb_run = papermill(book, tmp_path / "out.ipynb")
    kernel, _ = map(int, wait_for(partial_dir("01_wait", "smoke") / "kernel.pid").split())
    cli = nanobook("run", "01", "--preset", "smoke", "--force")
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 3 and f"pid {kernel}, a notebook kernel" in err, err
    (book / "gate").touch()
    out, err = nb_run.communicate(timeout=120)
    assert nb_run.returncode == 0, err
    assert run_state(load_book(), "01", "smoke").manifest["status"] == "ok"
