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
import subprocess
import sys
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
# downloads through huggingface_hub, against a local endpoint (conftest.RangeServer, hub=True)

REPO_PATH = "/datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main"


def _make_shard(path: Path, seed: int, rows: int = 300) -> None:
    texts = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() * 8 for i in range(rows)]
    pq.write_table(pa.table({"text": texts}), path, compression="none")


@pytest.fixture
def server(tmp_path, range_server, monkeypatch):
    """A fake hub holding two shards; huggingface_hub online and pointed at it in this process
    (its settings are read from the environment at import: the subprocess test covers that)."""
    from huggingface_hub import constants

    root = tmp_path / "remote"
    root.mkdir()
    for i in range(2):
        _make_shard(root / f"shard_{i:05d}.parquet", seed=i)
    hub = range_server(root, hub=True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    return hub


def _get(dest, indices=(0, 1), **kw):
    return data.download_shards("fineweb-edu", list(indices), dest, **kw)


def _fetches(server) -> list[dict]:
    """The server's GETs of repo files (huggingface_hub may also ask an online hub for a registry
    of coding agents, once a day: not ours to count)."""
    return [e for e in server.log if "/resolve/" in e["path"]]


def _downloads(dest: Path) -> dict:
    return json.loads((dest / data.DOWNLOADS).read_text())


def test_download_fetches_records_and_reuses(server, tmp_path):
    dest = tmp_path / "cache"
    paths = _get(dest, workers=2)
    assert [p.name for p in paths] == ["shard_00000.parquet", "shard_00001.parquet"]
    for p in paths:
        assert p.read_bytes() == (server.root / p.name).read_bytes()
    assert sorted(e["path"] for e in _fetches(server)) == [f"{REPO_PATH}/{p.name}" for p in paths]
    recorded = _downloads(dest)
    for p in paths:
        body = p.read_bytes()
        assert recorded[p.name]["bytes"] == len(body)
        assert recorded[p.name]["sha256"] == hashlib.sha256(body).hexdigest()
        assert recorded[p.name]["repo"] == "karpathy/fineweb-edu-100b-shuffle"
    requests = len(_fetches(server)) + len(server.heads)
    assert _get(dest) == paths  # recorded and intact: reused without asking the hub
    assert len(_fetches(server)) + len(server.heads) == requests


def test_a_corrupt_recorded_shard_is_detected_and_fetched_again(server, tmp_path):
    dest = tmp_path / "cache"
    (path,) = _get(dest, indices=[0])
    full = path.read_bytes()
    raw = bytearray(full)
    raw[len(raw) // 2] ^= 0xFF  # same size, still parquet: only the recorded sha256 can tell
    path.write_bytes(bytes(raw))
    with pytest.raises(data.CorruptShardError, match="sha256 .* differs"):
        data.verify_shard(path)
    path.write_bytes(full[:-10])
    with pytest.raises(data.CorruptShardError, match="bytes, .* were recorded"):
        data.verify_shard(path)
    path.write_bytes(bytes(raw))
    gets = len(_fetches(server))
    assert _get(dest, indices=[0])[0].read_bytes() == full
    assert len(_fetches(server)) == gets + 1


def test_a_corrupt_shard_offline_names_the_damage(server, tmp_path, monkeypatch):
    from huggingface_hub import constants

    dest = tmp_path / "cache"
    (path,) = _get(dest, indices=[0])
    path.write_bytes(path.read_bytes()[:-10])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    requests = len(_fetches(server)) + len(server.heads)
    with pytest.raises(data.DownloadError, match="corrupt.*HF_HUB_OFFLINE") as info:
        _get(dest, indices=[0])
    assert "bytes" in str(info.value) and len(_fetches(server)) + len(server.heads) == requests


def test_download_survives_a_dropped_connection(server, tmp_path):
    server.cut_next = 1  # huggingface_hub retries, resuming from the last whole chunk it wrote
    (path,) = _get(tmp_path / "cache", indices=[1])
    full = (server.root / "shard_00001.parquet").read_bytes()
    assert path.read_bytes() == full
    assert len(_fetches(server)) == 2 and _fetches(server)[0]["sent"] == len(full) // 2
    assert _downloads(tmp_path / "cache")["shard_00001.parquet"]["bytes"] == len(full)


def test_download_checks_known_sha256_and_gives_up(server, tmp_path):
    dest = tmp_path / "cache"
    bad = {"shard_00000.parquet": "0" * 64}
    with pytest.raises(data.DownloadError, match="sha256"):
        _get(dest, indices=[0], checksums=bad, attempts=2)
    assert len(_fetches(server)) == 2
    assert not (dest / "shard_00000.parquet").exists()
    good = {"shard_00000.parquet": hashlib.sha256(
        (server.root / "shard_00000.parquet").read_bytes()).hexdigest()}  # fmt: skip
    _get(dest, indices=[0], checksums=good)


def test_a_missing_shard_fails_at_once_naming_it(server, tmp_path):
    with pytest.raises(data.DownloadError, match="shard_00005.parquet.*fineweb-edu-100b-shuffle"):
        _get(tmp_path / "cache", indices=[5])
    assert _fetches(server) == []  # the HEAD said 404: nothing was fetched


def test_iter_texts_downloads_lazily(server, tmp_path, monkeypatch):
    monkeypatch.setenv("NANOBOOK_DATA", str(tmp_path / "data"))
    fake = dataclasses.replace(data.SOURCES["fineweb-edu"], num_shards=2)
    monkeypatch.setitem(data.SOURCES, "fineweb-edu", fake)
    docs = list(data.iter_texts("fineweb-edu", "train", max_chars=1_000, doc_cap=100))
    assert [len(d) for d in docs] == [100] * 10
    assert docs[0] == _texts(server.root / "shard_00000.parquet")[0][:100]
    assert [e["path"] for e in _fetches(server)] == [f"{REPO_PATH}/shard_00000.parquet"]
    val = list(data.iter_texts("fineweb-edu", "val"))
    assert val == _texts(server.root / "shard_00001.parquet")
    assert data.shard_paths("fineweb-edu", "val") == [
        tmp_path / "data/fineweb-edu/shard_00001.parquet"
    ]


_DOWNLOAD = """
import sys
from nanolib import data
try:
    data.download_shards("fineweb-edu", [0], sys.argv[1])
except data.DownloadError as e:
    print("DownloadError:", e)
    sys.exit(3)
"""


def _download_in_a_fresh_process(dest: Path, **env: str) -> subprocess.CompletedProcess:
    """huggingface_hub reads HF_* when it is imported: a fresh interpreter sees the ones given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return subprocess.run([sys.executable, "-c", _DOWNLOAD, str(dest)], env={**clean, **env},
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_hf_endpoint_and_token_are_honoured(tmp_path, range_server):
    root = tmp_path / "remote"
    root.mkdir()
    _make_shard(root / "shard_00000.parquet", seed=0)
    hub = range_server(root, hub=True)
    dest = tmp_path / "cache"
    done = _download_in_a_fresh_process(dest, HF_ENDPOINT=hub.url, HF_TOKEN="hf_test_token")
    assert done.returncode == 0, done.stdout + done.stderr
    shard = "shard_00000.parquet"
    assert (dest / shard).read_bytes() == (root / shard).read_bytes()
    assert [e["path"] for e in _fetches(hub)] == [f"{REPO_PATH}/shard_00000.parquet"]
    assert {auth for path, auth in hub.auth if "/resolve/" in path} == {"Bearer hf_test_token"}
    assert "shard_00000.parquet" in _downloads(dest)


def test_offline_a_missing_shard_is_one_clear_error_and_no_request(tmp_path, range_server):
    hub = range_server(tmp_path, hub=True)
    dest = tmp_path / "cache"
    done = _download_in_a_fresh_process(dest, HF_HUB_OFFLINE="1", HF_ENDPOINT=hub.url)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "HF_HUB_OFFLINE" in done.stdout and "shard_00000.parquet is not in" in done.stdout
    assert "Traceback" not in done.stderr
    assert hub.log == [] and hub.heads == []
