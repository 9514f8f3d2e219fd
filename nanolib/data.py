"""Text sources: the shipped tiny corpus and FineWeb-Edu parquet shards, read with pyarrow.

Every source is a set of parquet shards with one `text` column, one document per row. The `tiny`
source ships in the repository (`data/corpus/`, written by `data/prepare_corpus.py`); a download
source (`fineweb-edu`) lives in a Hugging Face dataset repo and is fetched shard by shard with
`huggingface_hub.hf_hub_download` (which resumes, and honours HF_HUB_OFFLINE, HF_ENDPOINT and
HF_TOKEN) into a cache folder, where DOWNLOADS.json records each shard's size and sha256, checked
every time the shard is used again. Nothing here needs the network unless a shard is missing.
`TokenLoader` turns a source into the training stream: tokenised, packed rows that start at BOS,
shared between ranks, with a position a checkpoint can save.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from nanolib.config import book_root, data_cache
from nanolib.files import DownloadError as DownloadError  # re-exported: download_shards raises it
from nanolib.files import atomic_write_json, read_json, sha256_file

if TYPE_CHECKING:
    import torch

    from nanolib.tokenizer import Tokenizer

SPLITS = ("train", "val")
MANIFEST = "MANIFEST.json"  # a shipped corpus: {shard: {bytes, sha256, rows}}
DOWNLOADS = "DOWNLOADS.json"  # a download folder: {shard: {bytes, sha256, rows, repo, revision}}
SHIPPED_FIX = (
    "restore it with `git checkout data/corpus`, or rebuild the corpus with "
    "`python data/prepare_corpus.py --out data/corpus`"
)
DOWNLOAD_FIX = "delete it and re-run; it will be downloaded again"


class CorruptShardError(ValueError):
    """A shard is not a readable parquet file with a `text` column, or fails its checksum."""


class MissingShardsError(FileNotFoundError):
    """The shards of a shipped source are not where they should be."""


@dataclass(frozen=True)
class TextSource:
    """A named set of parquet text shards: shipped in the repo, or downloaded on demand."""

    name: str
    description: str
    shipped_dir: str | None = None  # shipped: folder relative to the book root
    hf_repo: str | None = None  # download: the Hugging Face dataset repo holding the shards
    revision: str = "main"  # download: branch, tag or commit of hf_repo
    num_shards: int = 0  # download: shards 0 … num_shards-1; the last one is the val shard
    shard_format: str = "shard_{index:05d}.parquet"
    checksums: dict[str, str] = field(default_factory=dict)  # file name -> sha256, where known
    chars_per_shard: int = 0  # download: characters of text in one shard (for planning)

    @property
    def shipped(self) -> bool:
        """True when the shards ship with the repository."""
        return self.shipped_dir is not None

    def directory(self) -> Path:
        """The shipped folder, or $NANOBOOK_DATA/<name> (default ~/.cache/nanobook/<name>)."""
        if self.shipped_dir is not None:
            return book_root() / self.shipped_dir
        return data_cache() / self.name

    def shard_name(self, index: int) -> str:
        """File name of a download source's shard number index."""
        return self.shard_format.format(index=index)

    def indices(self, split: str) -> list[int]:
        """Shard numbers of a download source's split: the last shard is val, the rest train."""
        _check_split(split)
        if split == "val":
            return [self.num_shards - 1]
        return list(range(self.num_shards - 1))


SOURCES: dict[str, TextSource] = {
    "tiny": TextSource(
        name="tiny",
        description="≈9.8 MB of public-domain English (Shakespeare, KJV Bible, Carroll, Milton), "
        "shipped in data/corpus/",
        shipped_dir="data/corpus",
    ),
    "fineweb-edu": TextSource(
        name="fineweb-edu",
        description="FineWeb-Edu 100B tokens, shuffled: 1,823 parquet shards on the Hugging Face "
        "hub (karpathy/fineweb-edu-100b-shuffle), the last one is val",
        hf_repo="karpathy/fineweb-edu-100b-shuffle",
        num_shards=1823,
        chars_per_shard=250_000_000,  # each shard closes at ≥ 250M characters (nanochat's repack)
    ),
}


def get_source(name: str) -> TextSource:
    """The registered source called name, or a ValueError listing the valid ones."""
    if name not in SOURCES:
        raise ValueError(f"unknown text source {name!r}; valid sources: {', '.join(SOURCES)}")
    return SOURCES[name]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


# ------------------------------------------------------------------------------------------------
# integrity


def _manifest_entry(path: Path) -> dict | None:
    """What the shipped MANIFEST.json or a download folder's DOWNLOADS.json records of a shard."""
    for name in (MANIFEST, DOWNLOADS):
        record = path.parent / name
        if record.exists():
            try:
                return json.loads(record.read_text(encoding="utf-8")).get(path.name)
            except (OSError, ValueError):
                return None
    return None


def _default_fix(path: Path) -> str:
    tiny = SOURCES["tiny"].directory().resolve()
    if path.resolve().parent == tiny or (path.parent / MANIFEST).exists():
        return SHIPPED_FIX
    return DOWNLOAD_FIX


def verify_shard(path: str | Path, sha256: str | None = None, fix: str | None = None) -> int:
    """Check a shard (parquet, `text` column, recorded size and sha256) and return its row count."""
    path = Path(path)
    fix = fix or _default_fix(path)
    entry = _manifest_entry(path)
    if sha256 is None and entry:
        sha256 = entry.get("sha256")

    def fail(reason: str) -> CorruptShardError:
        return CorruptShardError(f"shard {path} is corrupt: {reason}; {fix}")

    if not path.is_file():
        raise fail("the file is missing")
    size = path.stat().st_size
    if entry and "bytes" in entry and entry["bytes"] != size:
        raise fail(f"{size:,} bytes, {entry['bytes']:,} were recorded")
    try:
        meta = pq.ParquetFile(path).metadata
        schema = meta.schema.to_arrow_schema()
    except Exception as e:  # pyarrow raises several kinds (ArrowInvalid, OSError, …)
        raise fail(f"not a readable parquet file ({type(e).__name__}: {e})") from None
    if "text" not in schema.names:
        raise fail(f"no `text` column (columns: {', '.join(schema.names)})")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise fail(f"sha256 {got} differs from the expected {sha256}")
    if entry and "rows" in entry and entry["rows"] != meta.num_rows:
        raise fail(f"{meta.num_rows} rows, expected {entry['rows']}")
    return meta.num_rows


# ------------------------------------------------------------------------------------------------
# downloading


def _record_download(dest: Path, name: str, entry: dict) -> None:
    """Add one shard's entry to dest/DOWNLOADS.json (several ranks or threads may write at once)."""
    with open(dest / f".{DOWNLOADS}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = dest / DOWNLOADS
        recorded = read_json(record) if record.exists() else {}
        recorded[name] = entry
        atomic_write_json(record, recorded)


def _forget_download(dest: Path, name: str) -> None:
    """Drop a shard's entry from dest/DOWNLOADS.json (its file is being replaced)."""
    with open(dest / f".{DOWNLOADS}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = dest / DOWNLOADS
        if record.exists():
            recorded = read_json(record)
            if recorded.pop(name, None) is not None:
                atomic_write_json(record, recorded)


def _hub_download(src: TextSource, name: str, dest: Path, why: str, force: bool) -> Path:
    """One shard through huggingface_hub, its failures turned into one DownloadError."""
    from huggingface_hub import hf_hub_download, is_offline_mode
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    where = f"{name} of the Hugging Face dataset {src.hf_repo} (revision {src.revision})"
    try:
        got = hf_hub_download(
            src.hf_repo,
            name,
            repo_type="dataset",
            revision=src.revision,
            local_dir=dest,
            force_download=force,
        )
    except LocalEntryNotFoundError as e:
        if is_offline_mode():
            raise DownloadError(
                f"{why}: cannot download {where} into {dest} because HF_HUB_OFFLINE is set; "
                "unset it to download, or copy the shard there"
            ) from None
        raise DownloadError(f"could not download {where} into {dest}: {e}") from None
    except (HfHubHTTPError, OSError) as e:
        raise DownloadError(
            f"could not download {where} into {dest}: {type(e).__name__}: {e}. Check the network, "
            "HF_ENDPOINT and HF_TOKEN, and re-run; a partial download is resumed."
        ) from None
    return Path(got)


def _fetch_shard(src: TextSource, path: Path, sha256: str | None, attempts: int) -> Path:
    """Reuse a recorded shard that still checks out; otherwise download it, check and record it."""
    dest, name = path.parent, path.name
    why = f"{name} is not in {dest}"
    if path.exists():
        try:
            verify_shard(path, sha256=sha256, fix=DOWNLOAD_FIX)
            if _manifest_entry(path) is not None:
                return path
            why = f"{name} in {dest} has no recorded size and sha256"
        except CorruptShardError as e:
            why = str(e)
            path.unlink()
    _forget_download(dest, name)  # a stale entry must not judge the new file
    for attempt in range(attempts):
        _hub_download(src, name, dest, why, force=attempt > 0)
        try:
            rows = verify_shard(path, sha256=sha256, fix=DOWNLOAD_FIX)
            break
        except CorruptShardError as e:
            why = str(e)
            path.unlink(missing_ok=True)
    else:
        raise DownloadError(f"{name} from {src.hf_repo} failed its check {attempts} time(s): {why}")
    entry = {"bytes": path.stat().st_size, "sha256": sha256_file(path), "rows": rows}
    _record_download(dest, name, {**entry, "repo": src.hf_repo, "revision": src.revision})
    return path


def download_shards(
    source: str,
    indices: Sequence[int],
    dest: str | Path | None = None,
    workers: int = 4,
    *,
    checksums: dict[str, str] | None = None,
    attempts: int = 2,
) -> list[Path]:
    """The source's shards number indices in dest: reused when their record checks out, else
    downloaded from the Hugging Face hub (resumed, verified, recorded in DOWNLOADS.json)."""
    src = get_source(source)
    if src.hf_repo is None:
        raise ValueError(f"source {source!r} is shipped with the book, not downloaded")
    dest = Path(dest) if dest is not None else src.directory()
    dest.mkdir(parents=True, exist_ok=True)
    sums = {**src.checksums, **(checksums or {})}
    paths = [dest / src.shard_name(i) for i in indices]

    def fetch(p: Path) -> Path:
        return _fetch_shard(src, p, sums.get(p.name), attempts)

    if workers <= 1 or len(paths) <= 1:
        return [fetch(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [f.result() for f in [pool.submit(fetch, p) for p in paths]]


# ------------------------------------------------------------------------------------------------
# reading


def _shipped_paths(src: TextSource, split: str) -> list[Path]:
    folder = src.directory()
    fix = f"expected the shipped `{src.name}` corpus in {folder}; {SHIPPED_FIX}"
    manifest = folder / MANIFEST
    if manifest.exists():
        listed = json.loads(manifest.read_text("utf-8"))
        names = sorted(n for n in listed if n.startswith(f"{split}-"))
    else:
        names = sorted(p.name for p in folder.glob(f"{split}-*.parquet"))
    if not names:
        raise MissingShardsError(f"no {split} shards found: {fix}")
    missing = [folder / n for n in names if not (folder / n).is_file()]
    if missing:
        raise MissingShardsError(f"missing shard {missing[0]}: {fix}")
    return [folder / n for n in names]


def shard_paths(source: str, split: str, max_shards: int | None = None) -> list[Path]:
    """Local shard files of a split; a download source fetches missing ones (all, unless capped)."""
    src = get_source(source)
    _check_split(split)
    if src.shipped:
        return _shipped_paths(src, split)[:max_shards]
    return download_shards(source, src.indices(split)[:max_shards])


def _read_texts(paths: list[Path]) -> Iterator[str]:
    """The `text` column of local parquet files, one row group at a time, with pyarrow (HF
    `datasets` would send a download-count request for them, network nobody asked for)."""
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(columns=["text"], batch_size=1024):
            yield from batch.column(0).to_pylist()


def iter_texts(
    source: str, split: str, max_chars: int | None = None, doc_cap: int | None = None
) -> Iterator[str]:
    """Documents of a split in shard order, each cut to doc_cap chars, max_chars in all."""
    src = get_source(source)
    _check_split(split)
    if src.shipped:
        paths = _shipped_paths(src, split)
        for path in paths:
            verify_shard(path)
        batches: Iterator[Iterator[str]] = iter([_read_texts(paths)])
    else:  # shard by shard: a small max_chars must not download the whole data set

        def fetch_and_read(i: int) -> Iterator[str]:
            path = download_shards(source, [i])[0]  # verified on the way in
            return _read_texts([path])

        batches = (fetch_and_read(i) for i in src.indices(split))
    budget = max_chars
    for texts in batches:
        for text in texts:
            if budget is not None and budget <= 0:
                return
            if doc_cap is not None:
                text = text[:doc_cap]
            if budget is not None:
                text = text[:budget]
                budget -= len(text)
            yield text


# ------------------------------------------------------------------------------------------------
# tokenised, packed rows for training


def _local_shard(src: TextSource, split: str, k: int) -> Path:
    """The k-th shard of a split on local disk, verified; a download source fetches it first."""
    if src.shipped:
        path = _shipped_paths(src, split)[k]
        verify_shard(path)
        return path
    index = src.indices(split)[k]
    folder = src.directory()
    folder.mkdir(parents=True, exist_ok=True)
    # Several ranks on one node may want the same shard at once: one downloads, the rest wait.
    with open(folder / f".{src.shard_name(index)}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return download_shards(src.name, [index], dest=folder)[0]


@dataclass(frozen=True)
class _DocRef:
    """Where a document sits: epoch, shard (position in the split's list) and row in the shard."""

    epoch: int
    shard: int
    row: int


class TokenLoader:
    """Documents tokenised with BOS first and packed into rows of seq_len + 1 tokens.

    The stream is the split's documents in shard order, each as ``[BOS, *tokens]``, laid end to
    end and cut into rows of ``seq_len + 1`` tokens (inputs are a row's first ``seq_len`` tokens,
    targets its last ``seq_len``). Every row starts with BOS: a row that begins at a document
    start takes the document's own BOS; a row that begins inside a document (the remainder of one
    that did not fit in the previous row is *carried*, not cropped) gets a fresh BOS first. Carrying
    wastes nothing, which matters when documents are longer than a row (the tiny corpus: a median
    of ≈1,300 tokens against seq_len 256; cropping would throw most of it away).

    Rank r of world_size keeps global rows r, r + world_size, …, so ranks see disjoint rows and
    their union is the one-process stream. Each rank reads and tokenises the whole stream to find
    its rows: exact and simple, for the price of tokenising world_size times (tiktoken does
    ≈20 MB/s per thread, far more than a GPU consumes). The position (epoch, shard, row, token
    offset and the global row count) is a small dict: `state_dict()` after a batch and
    `load_state_dict()` before iterating resume the stream exactly. The train split repeats
    forever (`epoch` counts passes); `infinite=False` reads it once (the val split).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        source: str,
        split: str,
        batch_size: int,
        seq_len: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        infinite: bool = True,
        device: str = "cpu",
        doc_batch: int = 128,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in 0..{world_size - 1}")
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size={batch_size} and seq_len={seq_len} must be ≥ 1")
        self.src = get_source(source)
        _check_split(split)
        self.tokenizer, self.split = tokenizer, split
        self.batch_size, self.seq_len = batch_size, seq_len
        self.rank, self.world_size = rank, world_size
        self.infinite, self.device, self.doc_batch = infinite, device, doc_batch
        self.bos = tokenizer.bos_id
        # Every rank on a node tokenises: share the cores between them (tiktoken's threads).
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        self.threads = max(1, min(8, (os.cpu_count() or 1) // per_node))
        self.num_shards = (
            len(_shipped_paths(self.src, split))
            if self.src.shipped
            else len(self.src.indices(split))
        )
        self._state = {"epoch": 0, "shard": 0, "row": 0, "offset": 0, "rows": 0}

    def state_dict(self) -> dict[str, int]:
        """The position after the last batch yielded (before the first, where iteration starts)."""
        return dict(self._state)

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a position `state_dict()` returned; call before iterating."""
        self._state = {k: int(state[k]) for k in ("epoch", "shard", "row", "offset", "rows")}

    def _documents(self, start: _DocRef) -> Iterator[tuple[_DocRef, str]]:
        epoch, shard, row = start.epoch, start.shard, start.row
        while True:
            for k in range(shard, self.num_shards):
                pf = pq.ParquetFile(_local_shard(self.src, self.split, k))
                first = row if k == shard else 0
                seen = 0
                for g in range(pf.num_row_groups):
                    n = pf.metadata.row_group(g).num_rows
                    if seen + n <= first:  # skip whole row groups when resuming
                        seen += n
                        continue
                    texts = pf.read_row_group(g, columns=["text"]).column(0).to_pylist()
                    for i in range(max(first - seen, 0), n):
                        yield _DocRef(epoch, k, seen + i), texts[i]
                    seen += n
            if not self.infinite:
                return
            epoch, shard, row = epoch + 1, 0, 0

    def _tokenised(self, start: _DocRef) -> Iterator[tuple[_DocRef, list[int]]]:
        refs, texts = [], []
        for ref, text in self._documents(start):
            if not text:
                continue
            refs.append(ref)
            texts.append(text)
            if len(texts) == self.doc_batch:
                yield from zip(refs, self._encode(texts))
                refs, texts = [], []
        if texts:
            yield from zip(refs, self._encode(texts))

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer.encode_batch(texts, prepend=self.bos, num_threads=self.threads)

    def _rows(self) -> Iterator[tuple[list[int], dict[str, int]]]:
        """This rank's rows, each with the position just after it."""
        s = self._state
        start = _DocRef(s["epoch"], s["shard"], s["row"])
        offset, rows = s["offset"], s["rows"]
        width = self.seq_len + 1
        row: list[int] = []
        filled = 0
        for ref, ids in self._tokenised(start):
            pos = offset if ref == start else 0
            while pos < len(ids):
                keep = rows % self.world_size == self.rank
                if filled == 0 and pos > 0:  # a row that starts inside a document: BOS first
                    if keep:
                        row.append(self.bos)
                    filled = 1
                take = min(width - filled, len(ids) - pos)
                if keep:
                    row.extend(ids[pos : pos + take])
                filled += take
                pos += take
                if filled == width:
                    rows += 1
                    after = {"epoch": ref.epoch, "shard": ref.shard, "row": ref.row}
                    after.update(offset=pos, rows=rows)
                    if keep:
                        yield row, after
                    row, filled = [], 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (inputs, targets), each a (batch_size, seq_len) int64 tensor on the device."""
        import torch

        batch: list[list[int]] = []
        for row, after in self._rows():
            batch.append(row)
            if len(batch) == self.batch_size:
                self._state = after
                yield self._to_device(torch.tensor(batch, dtype=torch.long))
                batch = []
        if batch:  # only a finite stream ends: its last, smaller batch
            self._state = after
            yield self._to_device(torch.tensor(batch, dtype=torch.long))

    def _to_device(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.startswith("cuda"):
            rows = rows.pin_memory().to(self.device, non_blocking=True)
        return rows[:, :-1], rows[:, 1:]
