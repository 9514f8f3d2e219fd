"""Files: atomic writes, JSON reading, one sha256, directory swaps, and resumable downloads.

Every file the book writes goes through `atomic_write` (a temp sibling, then one rename), so a
reader sees the old content or the new, never half of either; `replace_dir`/`atomic_dir` do the
same for a whole folder. `download_file` fetches a URL into place the same way, resuming a
`.part` file and retrying; it serves only files no library fetches for us (the CORE bundle on S3):
Hugging Face-hosted files go through `huggingface_hub`. This module imports nothing else of nanolib.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHUNK = 1 << 20  # bytes per read while hashing or downloading


class DownloadError(RuntimeError):
    """A file could not be downloaded after a few attempts; the message names the URL."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temp sibling of path, then rename it over path in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file so that readers see the old or the new content, never half of it."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Atomically write JSON (indented, sorted keys)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> dict:
    """Read a JSON file, naming the file if it is corrupt."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt JSON ({e}); delete it and re-run what made it") from None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def replace_dir(new: Path, final: Path) -> None:
    """Swap a finished directory into place, keeping the old one until the swap has happened."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}-{time.time_ns()}"
        os.replace(final, old)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp sibling directory; on success it replaces `final` in one rename step."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)


# ------------------------------------------------------------------------------------------------
# downloading

_RETRYABLE = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    socket.timeout,
    TimeoutError,
)


def _fetch_once(url: str, part: Path, bar: Any, lock: threading.Lock, timeout: float) -> None:
    """One attempt: stream url into part, continuing from the bytes part already has."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "nanobook"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the part file is already whole
            return
        raise
    with response:
        if offset and response.status != 206:  # the server ignored the range: start over
            offset = 0
        content_range = response.headers.get("Content-Range") or ""
        if offset and not content_range.startswith(f"bytes {offset}-"):
            part.unlink()
            raise http.client.HTTPException(f"bad Content-Range {content_range!r} for {url}")
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else None
        with lock:
            bar.total = (bar.total or 0) + (int(length) if length is not None else 0)
            bar.refresh()
        with open(part, "ab" if offset else "wb") as f:
            while block := response.read(CHUNK):
                f.write(block)
                with lock:
                    bar.update(len(block))
    if expected is not None and part.stat().st_size != expected:
        raise http.client.IncompleteRead(b"", expected - part.stat().st_size)


def download_file(
    url: str,
    path: Path,
    check: Callable[[Path], None],
    *,
    bar: Any,
    lock: threading.Lock | None = None,
    attempts: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> Path:
    """Download url to path: resume a `.part` file, retry with backoff, check, rename atomically.

    `check(part)` raises ValueError when the file arrived whole but is bad; it is then fetched
    again from the start. A failure after every attempt is a DownloadError naming the url.
    """
    part = path.with_name(path.name + ".part")
    lock = lock or threading.Lock()
    error: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            _fetch_once(url, part, bar, lock, timeout)
            check(part)
            os.replace(part, path)
            return path
        except urllib.error.HTTPError as e:
            error = e
            if e.code < 500 and e.code not in (408, 429):  # 404 and friends will not heal
                break
        except ValueError as e:  # whole but bad: fetch it again from the start
            error = e
            part.unlink(missing_ok=True)
        except _RETRYABLE as e:  # keep the part file: the next attempt resumes it
            error = e
    raise DownloadError(
        f"could not download {url} to {path} after {attempt + 1} attempt(s): {error}. "
        f"Check the network and re-run; a partial {part.name} is resumed."
    )


def file_manifest(root: str | Path, skip: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """{relative path: {"bytes", "sha256"}} of every file below root (names in skip left out)."""
    root = Path(root)
    return {
        str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def check_file_manifest(root: str | Path, recorded: dict[str, dict[str, Any]]) -> str | None:
    """The first way root's files differ from a recorded file_manifest (missing, cut, changed)."""
    root = Path(root)
    for name, want in sorted(recorded.items()):
        path = root / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want["bytes"]:
            return f"{name} holds {path.stat().st_size:,} bytes, {want['bytes']:,} were recorded"
        if sha256_file(path) != want["sha256"]:
            return f"{name} differs from its recorded sha256"
    return None
