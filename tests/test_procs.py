"""nanolib.procs: children that die with their parent, whole trees stopped, one run per lock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from nanolib.procs import AlreadyRunningError, Owner, RunLock, read_owner, stop_tree, write_owner

# A parent that starts a child in a session of its own (as train's torchrun launcher does),
# prints the child's pid, and waits to be killed.
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from nanolib.procs import die_with_parent
    kw = {"preexec_fn": die_with_parent} if sys.argv[1] == "yes" else {}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                             start_new_session=True, **kw)
    print(child.pid, flush=True)
    time.sleep(120)
    """
)


def gone(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("die", ["yes", "no"])
def test_a_child_dies_with_its_parent(die):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, die], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    try:
        assert gone(child, timeout_s=10 if die == "yes" else 1) == (die == "yes")
    finally:
        stop_tree(child, grace_s=1)


def test_stop_tree_reaches_a_grandchild_in_its_own_session():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, "no"], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    child = int(parent.stdout.readline())
    stop_tree(parent.pid, grace_s=2)
    parent.wait()
    assert gone(parent.pid) and gone(child)


def test_the_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    path = tmp_path / ".01_tokenizer.lock"
    with RunLock(path, "chapter 01 at preset 'smoke'").acquire("`nanobook run 01`"):
        with pytest.raises(AlreadyRunningError, match=rf"already running \(pid {os.getpid()}, "):
            RunLock(path, "chapter 01 at preset 'smoke'").acquire("another")
    RunLock(path, "x").acquire("again").release()  # free once released


def test_a_child_given_the_lock_keeps_it(tmp_path):
    path = tmp_path / ".lock"
    lock = RunLock(path, "chapter 01").acquire("parent")
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], pass_fds=(lock.fd,)
    )
    lock.release()
    try:
        with pytest.raises(AlreadyRunningError):
            RunLock(path, "chapter 01").acquire("second")
    finally:
        child.kill()
        child.wait()
    RunLock(path, "chapter 01").acquire("third").release()


def test_an_owner_with_a_recycled_pid_is_not_alive(tmp_path):
    me = Owner.current()
    assert me.alive()
    write_owner(tmp_path / "owner.json", Owner(me.pid, me.create_time - 100), params={"a": 1})
    owner, raw = read_owner(tmp_path / "owner.json")
    assert not owner.alive() and raw["params"] == {"a": 1}
    assert read_owner(tmp_path / "missing.json") is None
