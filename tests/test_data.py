"""nanolib.data: the shipped corpus, shard checks, iter_texts and the resumable downloader."""
# ruff: noqa: E402  (the offline switches must be set before datasets is imported)

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nanolib import data
from nanolib.config import book_root

CORPUS = book_root() / "data" / "corpus"


def _texts(path: Path) -> list[str]:
    return pq.read_table(path).column("text").to_pylist()


# ------------------------------------------------------------------------------------------------
# the shipped corpus


def test_shipped_shards_match_manifest():
    manifest = json.loads((CORPUS / "MANIFEST.json").read_text())
    assert sorted(manifest) == sorted(p.name for p in CORPUS.glob("*.parquet"))
    assert "val-00000.parquet" in manifest
    assert 2 <= sum(name.startswith("train-") for name in manifest) <= 4
    for name, entry in manifest.items():
        path = CORPUS / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], name
        assert path.stat().st_size == entry["bytes"], name
        table = pq.read_table(path)
        assert table.schema.names == ["text"]
        assert pa.types.is_string(table.schema.field("text").type)
        assert table.num_rows == entry["rows"]
        assert data.verify_shard(path) == entry["rows"]


def test_train_and_val_share_no_documents():
    train = [t for p in data.shard_paths("tiny", "train") for t in _texts(p)]
    val = [t for p in data.shard_paths("tiny", "val") for t in _texts(p)]
    assert not set(train) & set(val)
    assert 0.05 <= len(val) / (len(train) + len(val)) <= 0.10
    titles = lambda docs: {d.split("\n", 1)[0] for d in docs}  # noqa: E731  (a work's title)
    assert not titles(train) & titles(val), "val must hold out whole works"


def test_shard_paths_tiny():
    train = data.shard_paths("tiny", "train")
    assert [p.name for p in train] == [f"train-{i:05d}.parquet" for i in range(len(train))]
    assert data.shard_paths("tiny", "train", max_shards=1) == train[:1]
    assert [p.name for p in data.shard_paths("tiny", "val")] == ["val-00000.parquet"]


def test_iter_texts_max_chars_and_doc_cap():
    first = _texts(data.shard_paths("tiny", "val")[0])
    docs = list(data.iter_texts("tiny", "val", max_chars=50_000, doc_cap=1_000))
    assert sum(map(len, docs)) == 50_000
    assert all(len(d) <= 1_000 for d in docs)
    assert docs[:-1] == [t[:1_000] for t in first[: len(docs) - 1]]
    whole = list(data.iter_texts("tiny", "val", max_chars=25_000))
    assert sum(map(len, whole)) == 25_000
    assert whole[:-1] == first[: len(whole) - 1]
    assert list(data.iter_texts("tiny", "val", max_chars=0)) == []
    assert list(data.iter_texts("tiny", "val")) == first


def test_unknown_source_and_split_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid sources: tiny, fineweb-edu"):
        data.shard_paths("nope", "train")
    with pytest.raises(ValueError, match="valid sources"):
        list(data.iter_texts("nope", "train"))
    with pytest.raises(ValueError, match="valid splits: train, val"):
        data.shard_paths("tiny", "test")


# ------------------------------------------------------------------------------------------------
# damaged or missing shards


def _copy_corpus(root: Path) -> Path:
    dest = root / "data" / "corpus"
    shutil.copytree(CORPUS, dest)
    return dest


def test_truncated_shard_gives_a_clear_error(tmp_path):
    src = CORPUS / "val-00000.parquet"
    bad = tmp_path / "val-00000.parquet"
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(data.CorruptShardError, match=re.escape(str(bad))) as info:
        data.verify_shard(bad)
    assert "not a readable parquet file" in str(info.value)
    assert "delete it and re-run" in str(info.value)


def test_damaged_shipped_shard_fails_iter_texts_with_the_fix(tmp_path, monkeypatch):
    corpus = _copy_corpus(tmp_path)
    monkeypatch.setenv("NANOBOOK_ROOT", str(tmp_path))
    path = corpus / "val-00000.parquet"
    path.write_bytes(path.read_bytes()[:-100])  # truncated: the parquet footer is gone
    with pytest.raises(data.CorruptShardError, match=re.escape(str(path))) as info:
        next(data.iter_texts("tiny", "val"))
    assert "git checkout data/corpus" in str(info.value)

    raw = bytearray((CORPUS / "val-00000.parquet").read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # still parses as parquet, but fails MANIFEST.json's sha256
    path.write_bytes(bytes(raw))
    with pytest.raises(data.CorruptShardError, match="sha256"):
        data.verify_shard(path)


def test_missing_shipped_corpus_names_path_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOBOOK_ROOT", str(tmp_path))
    with pytest.raises(data.MissingShardsError) as info:
        data.shard_paths("tiny", "train")
    assert str(tmp_path / "data" / "corpus") in str(info.value)
    assert "prepare_corpus.py" in str(info.value)
    corpus = _copy_corpus(tmp_path)
    (corpus / "train-00001.parquet").unlink()
    with pytest.raises(data.MissingShardsError, match="train-00001.parquet"):
        data.shard_paths("tiny", "train")


def test_download_dir_follows_nanobook_data(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOBOOK_DATA", str(tmp_path))
    assert data.SOURCES["fineweb-edu"].directory() == tmp_path / "fineweb-edu"
    assert data.SOURCES["fineweb-edu"].indices("val") == [1822]
    assert data.SOURCES["fineweb-edu"].shard_name(7) == "shard_00007.parquet"


# ------------------------------------------------------------------------------------------------
# the downloader, against a local HTTP server with Range support (conftest.RangeServer)


def _make_shard(path: Path, seed: int, rows: int = 300) -> None:
    texts = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() * 8 for i in range(rows)]
    pq.write_table(pa.table({"text": texts}), path, compression="none")


@pytest.fixture
def server(tmp_path, range_server):
    root = tmp_path / "remote"
    root.mkdir()
    for i in range(2):
        _make_shard(root / f"shard_{i:05d}.parquet", seed=i)
    return range_server(root)


def _get(server, dest, indices=(0, 1), **kw):
    kw = {"base_url": server.url, "backoff": 0.0, "timeout": 10.0, **kw}
    return data.download_shards("fineweb-edu", list(indices), dest, **kw)


def test_download_fetches_verifies_and_skips(server, tmp_path):
    dest = tmp_path / "cache"
    paths = _get(server, dest, workers=2)
    assert [p.name for p in paths] == ["shard_00000.parquet", "shard_00001.parquet"]
    for p in paths:
        assert p.read_bytes() == (server.root / p.name).read_bytes()
    assert not list(dest.glob("*.part"))
    assert len(server.log) == 2
    _get(server, dest)  # already present and valid: nothing is requested
    assert len(server.log) == 2


def test_download_resumes_a_part_file(server, tmp_path):
    dest = tmp_path / "cache"
    dest.mkdir()
    full = (server.root / "shard_00000.parquet").read_bytes()
    have = len(full) // 3
    (dest / "shard_00000.parquet.part").write_bytes(full[:have])
    (path,) = _get(server, dest, indices=[0])
    assert path.read_bytes() == full
    assert server.log == [
        {"path": "/shard_00000.parquet", "range": f"bytes={have}-", "sent": len(full) - have}
    ]


def test_download_part_edge_cases(server, tmp_path):
    dest = tmp_path / "cache"
    dest.mkdir()
    full = (server.root / "shard_00000.parquet").read_bytes()
    part = dest / "shard_00000.parquet.part"
    part.write_bytes(full)  # the part is already whole: 416, then verified and renamed
    assert _get(server, dest, indices=[0])[0].read_bytes() == full
    assert server.log[-1]["sent"] == 0
    (dest / "shard_00000.parquet").unlink()
    part.write_bytes(full[:100])
    server.ignore_range = True  # a server without Range support: start over, no duplication
    assert _get(server, dest, indices=[0])[0].read_bytes() == full
    assert server.log[-1]["sent"] == len(full)


def test_download_resumes_after_a_dropped_connection(server, tmp_path):
    server.cut_next = 1
    (path,) = _get(server, tmp_path / "cache", indices=[1])
    full = (server.root / "shard_00001.parquet").read_bytes()
    assert path.read_bytes() == full
    first, second = server.log
    assert first["range"] is None and first["sent"] == len(full) // 2
    assert second["range"] == f"bytes={len(full) // 2}-"
    assert second["sent"] == len(full) - len(full) // 2


def test_download_replaces_a_corrupt_file(server, tmp_path):
    dest = tmp_path / "cache"
    dest.mkdir()
    full = (server.root / "shard_00000.parquet").read_bytes()
    (dest / "shard_00000.parquet").write_bytes(full[:-10])
    (path,) = _get(server, dest, indices=[0])
    assert path.read_bytes() == full
    assert [e["range"] for e in server.log] == [None]


def test_download_checks_sha256_and_gives_up(server, tmp_path):
    dest = tmp_path / "cache"
    bad = {"shard_00000.parquet": "0" * 64}
    with pytest.raises(data.DownloadError, match="sha256"):
        _get(server, dest, indices=[0], checksums=bad, attempts=2)
    assert len(server.log) == 2
    assert not (dest / "shard_00000.parquet").exists()
    good = {
        "shard_00000.parquet": hashlib.sha256(
            (server.root / "shard_00000.parquet").read_bytes()
        ).hexdigest()
    }
    _get(server, dest, indices=[0], checksums=good)


def test_download_404_fails_at_once(server, tmp_path):
    with pytest.raises(data.DownloadError, match="404"):
        _get(server, tmp_path / "cache", indices=[5], attempts=3)
    assert len(server.log) == 1


def test_iter_texts_downloads_lazily(server, tmp_path, monkeypatch):
    monkeypatch.setenv("NANOBOOK_DATA", str(tmp_path / "data"))
    fake = dataclasses.replace(data.SOURCES["fineweb-edu"], base_url=server.url, num_shards=2)
    monkeypatch.setitem(data.SOURCES, "fineweb-edu", fake)
    docs = list(data.iter_texts("fineweb-edu", "train", max_chars=1_000, doc_cap=100))
    assert [len(d) for d in docs] == [100] * 10
    assert docs[0] == _texts(server.root / "shard_00000.parquet")[0][:100]
    assert [e["path"] for e in server.log] == ["/shard_00000.parquet"]
    val = list(data.iter_texts("fineweb-edu", "val"))
    assert val == _texts(server.root / "shard_00001.parquet")
    assert data.shard_paths("fineweb-edu", "val") == [
        tmp_path / "data/fineweb-edu/shard_00001.parquet"
    ]
