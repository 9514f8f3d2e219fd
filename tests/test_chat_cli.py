"""`nanobook chat` in a terminal: one prompt, a piped conversation, a pseudo-terminal, errors."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nanolib.chat_cli import chat_loop
from nanolib.chat_session import Event
from nanolib.procs import Interrupted

from helpers import make_chat_runs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def chat_env(tmp_path_factory, tokenizer_dir) -> dict[str, str]:
    """The environment of a `nanobook` whose runs/ hold a smoke tokenizer and base model."""
    runs = tmp_path_factory.mktemp("chat") / "runs"
    make_chat_runs(runs, tokenizer_dir)
    return dict(os.environ, NANOBOOK_RUNS=str(runs), NANOBOOK_ROOT=str(ROOT), PYTHONPATH=str(ROOT))


def nanobook(env: dict, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nanolib.cli", "chat", "--preset", "smoke", *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def test_one_prompt_prints_the_reply_alone(chat_env):
    done = nanobook(chat_env, "-p", "Once upon a time", "--max-tokens", "6", "--temperature", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and done.stdout.count("\n") >= 1
    assert "chatting with the base model (chapter 03) with a plain prompt" in done.stderr
    again = nanobook(chat_env, "-p", "Once upon a time", "--max-tokens", "6", "--temperature", "0")
    assert again.stdout == done.stdout  # greedy: the same words


def test_a_missing_model_is_one_line_naming_the_run(chat_env, tmp_path):
    env = dict(chat_env, NANOBOOK_RUNS=str(tmp_path / "empty"))
    done = nanobook(env, "-p", "hi")
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "`nanobook run 03 --preset smoke`" in lines[0], done.stderr
    bad = nanobook(chat_env, "-p", "hi", "--temperature", "-1")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_a_piped_conversation_with_commands(chat_env):
    script = "Hello\n/help\n/clear\n/bogus\n\nAgain\n/quit\nnever read\n"
    done = nanobook(chat_env, "--max-tokens", "5", stdin=script)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("model> ") == 2  # two messages answered; nothing after /quit
    assert "(conversation cleared)" in out and "unknown command /bogus" in out
    assert out.count("commands: /clear") == 3  # the banner, /help and /bogus
    too_long = nanobook(chat_env, "--max-tokens", "5", stdin="word " * 300 + "\n")
    assert too_long.returncode == 0 and "a message may be at most" in too_long.stdout


def _read_until(fd: int, marker: bytes, timeout: float = 120.0) -> bytes:
    seen, end = b"", time.monotonic() + timeout
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        if not ready:
            raise TimeoutError(f"no {marker!r} after {timeout} s; saw {seen[-500:]!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    return seen


def test_a_terminal_session(chat_env):
    """In a pseudo-terminal: a prompt, a streamed reply, then Ctrl-D leaves with status 0."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanolib.cli", "chat", "--preset", "smoke", "--max-tokens", "8"],
        stdin=follower, stdout=follower, stderr=follower, env=chat_env, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    try:
        assert b"nanobook: chatting with" in _read_until(leader, b"you> ")
        os.write(leader, b"Hello there\n")
        assert b"model> " in _read_until(leader, b"you> ")
        os.write(leader, b"\x04")  # Ctrl-D: end of input
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)


class _Session:
    """A stand-in ChatSession: each reply says two words, or is interrupted after one."""

    def __init__(self, interrupt: BaseException | None = None) -> None:
        self.interrupt, self.cleared = interrupt, 0

    def clear(self) -> None:
        self.cleared += 1

    def reply(self, text, **knobs):
        yield Event("text", "one")
        if self.interrupt is not None:
            raise self.interrupt
        yield Event("python", "1+1")
        yield Event("output", "2")
        yield Event("text", " two\x1b[2J\x07")
        yield Event("end", info={"tokens": 4})


def test_ctrl_c_stops_a_reply_and_the_chat_goes_on():
    out = io.StringIO()
    session = _Session(KeyboardInterrupt())
    assert chat_loop(session, "banner", io.StringIO("hi\n/clear\nagain\n"), out) == 0
    assert out.getvalue().count("one [stopped]") == 2 and session.cleared == 1


def test_sigterm_during_a_reply_leaves():
    with pytest.raises(Interrupted):
        chat_loop(_Session(Interrupted(15)), "banner", io.StringIO("hi\n"), io.StringIO())


def test_tool_calls_show_in_brackets_and_control_characters_as_escapes():
    out = io.StringIO()
    chat_loop(_Session(), "banner", io.StringIO("hi\n"), out)
    assert "model> one[python: 1+1][= 2] two\\x1b[2J\\x07\n" in out.getvalue()  # shown, not obeyed
