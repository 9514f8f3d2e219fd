"""Process lifetime: one run per (chapter, preset) at a time, children that die with their parent,
and whole process trees stopped together (a kernel in its own session, torchrun's ranks)."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class AlreadyRunningError(RuntimeError):
    """Another process holds the lock of this (chapter, preset); the message names its pid."""


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """A Popen preexec_fn: the child gets `sig` when the process that started it dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)


def descendants(pid: int) -> list[psutil.Process]:
    """Every live process below pid (children, grandchildren …), whatever session they are in."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop_processes(procs: list[psutil.Process], grace_s: float = 5.0) -> None:
    """SIGTERM each process, then SIGKILL those still alive after grace_s seconds."""
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)


def stop_tree(pid: int, grace_s: float = 5.0, include_root: bool = True) -> None:
    """Stop pid and everything below it; the tree is listed before anything is signalled, so a
    grandchild whose parent dies first (and is re-parented to init) is stopped too."""
    procs = descendants(pid)
    if include_root:
        try:
            procs.insert(0, psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    stop_processes(procs, grace_s)
    stop_processes(descendants(pid), grace_s)  # anything started meanwhile


@dataclass(frozen=True)
class Owner:
    """A process identified by pid and start time, so a recycled pid is not mistaken for it."""

    pid: int
    create_time: float

    @classmethod
    def current(cls) -> Owner:
        """This process."""
        return cls(os.getpid(), psutil.Process().create_time())

    def alive(self) -> bool:
        """Is this very process still running (not a zombie, not a newer one with its pid)?"""
        try:
            p = psutil.Process(self.pid)
            return (
                abs(p.create_time() - self.create_time) < 1.0 and p.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.NoSuchProcess:
            return False


def write_owner(path: Path, owner: Owner, **extra: object) -> None:
    """Record which process owns a work folder (a small JSON pid file)."""
    path.write_text(json.dumps({"pid": owner.pid, "create_time": owner.create_time, **extra}))


def read_owner(path: Path) -> tuple[Owner, dict] | None:
    """The owner recorded in a pid file and the rest of the record; None if absent or unreadable."""
    try:
        raw = json.loads(path.read_text())
        return Owner(int(raw["pid"]), float(raw["create_time"])), raw
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RunLock:
    """An exclusive, non-blocking flock on a file; released when every holder of its fd exits,
    so a child given the fd (pass_fds) keeps the lock while it lives."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self.fd: int | None = None

    def acquire(self, holder: str) -> RunLock:
        """Take the lock or raise AlreadyRunningError naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise AlreadyRunningError(self._refusal()) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "holder": holder}).encode())
        os.set_inheritable(fd, True)
        self.fd = fd
        return self

    def _refusal(self) -> str:
        try:
            raw = json.loads(self.path.read_text())
            who = f"pid {raw['pid']}, {raw.get('holder', 'another process')}"
        except (OSError, ValueError, KeyError, TypeError):
            who = "another process"
        return (
            f"{self.what} is already running ({who}); wait for it to finish or stop it "
            f"before starting another"
        )

    def release(self) -> None:
        """Drop the lock (children that inherited the fd keep holding it until they exit)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Interrupted(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGINT arrived; handled like Ctrl-C, remembering which signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_on_signals(*signums: int) -> dict[int, Any]:
    """Turn these signals into Interrupted in the main thread (the first one only: a second
    signal during the cleanup it starts is ignored); return the handlers they replace."""

    def handler(signum: int, _frame: object) -> None:
        for s in signums:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    return {s: signal.signal(s, handler) for s in signums}
