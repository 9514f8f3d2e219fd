"""nanolib.data.TokenLoader: BOS-first packed rows, rank sharding and an exact saved position."""
# ruff: noqa: E402  (the offline switches must be set before datasets is imported)

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import dataclasses
import shutil
from itertools import islice

import pytest
import torch

from nanolib import data
from nanolib.config import book_root
from nanolib.data import CorruptShardError, TokenLoader, iter_texts
from nanolib.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return Tokenizer.load(tokenizer_dir)


def rows(loader, n_batches):
    """The first n_batches batches of a loader as a list of full rows (inputs + last target)."""
    out = []
    for x, y in islice(loader, n_batches):
        out += torch.cat([x, y[:, -1:]], dim=1).tolist()
    return out


def test_rows_start_with_bos_and_targets_are_shifted_inputs(tok):
    loader = TokenLoader(tok, "tiny", "val", batch_size=8, seq_len=64)
    for x, y in islice(loader, 20):
        assert x.shape == y.shape == (8, 64) and x.dtype == torch.long
        assert (x[:, 0] == tok.bos_id).all()
        assert torch.equal(x[:, 1:], y[:, :-1])


def test_packing_carries_document_remainders(tok):
    """Without the BOS tokens, the rows are the documents' tokens laid end to end, none lost."""
    docs = list(iter_texts("tiny", "val"))
    stream = [t for ids in tok.encode_batch(docs) for t in ids]
    loader = TokenLoader(tok, "tiny", "val", batch_size=16, seq_len=32, infinite=False)
    packed = [t for row in rows(loader, 10**9) for t in row if t != tok.bos_id]
    assert len(stream) - len(packed) < 33  # only the last, partial row is dropped
    assert packed == stream[: len(packed)]
    bos_per_row = [
        row.count(tok.bos_id) for row in rows(TokenLoader(tok, "tiny", "val", 16, 32), 5)
    ]
    assert min(bos_per_row) >= 1


def test_two_ranks_are_disjoint_and_interleave_to_the_one_process_stream(tok):
    one = rows(TokenLoader(tok, "tiny", "val", batch_size=4, seq_len=64), 10)
    r0 = rows(TokenLoader(tok, "tiny", "val", batch_size=4, seq_len=64, world_size=2), 5)
    r1 = rows(TokenLoader(tok, "tiny", "val", batch_size=4, seq_len=64, rank=1, world_size=2), 5)
    assert r0 == one[0::2] and r1 == one[1::2]
    assert not {tuple(r) for r in r0} & {tuple(r) for r in r1}


@pytest.mark.parametrize("world_size", [1, 2])
def test_saved_position_resumes_exactly_across_epochs(tok, world_size):
    def make():
        return TokenLoader(tok, "tiny", "val", 64, 128, rank=world_size - 1, world_size=world_size)

    loader = make()
    it = iter(loader)
    list(islice(it, 3))
    state = loader.state_dict()
    expected = rows(it, 40)  # the val split is ≈ 30 batches of these: this crosses an epoch
    assert loader.state_dict()["epoch"] >= 1
    again = make()
    again.load_state_dict(state)
    assert rows(again, 40) == expected


def test_epoch_counter_and_finite_stream(tok):
    finite = TokenLoader(tok, "tiny", "val", batch_size=64, seq_len=128, infinite=False)
    n = sum(len(x) for x, _ in finite)
    assert finite.state_dict()["epoch"] == 0 and n > 0
    looping = TokenLoader(tok, "tiny", "val", batch_size=64, seq_len=128)
    list(islice(looping, n // 64 + 2))
    assert looping.state_dict()["epoch"] == 1


def test_bad_arguments(tok):
    with pytest.raises(ValueError, match="rank 2 must be in 0..1"):
        TokenLoader(tok, "tiny", "val", 4, 64, rank=2, world_size=2)
    with pytest.raises(ValueError, match="valid splits"):
        TokenLoader(tok, "tiny", "test", 4, 64)


def test_corrupt_shard_fails_with_the_fix(tok, tmp_path, monkeypatch):
    corpus = tmp_path / "data" / "corpus"
    shutil.copytree(book_root() / "data" / "corpus", corpus)
    monkeypatch.setenv("NANOBOOK_ROOT", str(tmp_path))
    shard = corpus / "train-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CorruptShardError, match="git checkout data/corpus"):
        next(iter(TokenLoader(tok, "tiny", "train", 4, 64)))


def test_download_source_is_fetched_shard_by_shard(tok, tmp_path, monkeypatch, range_server):
    """A download source (the GPU presets' FineWeb-Edu) from a local hub: lazily, in order."""
    from huggingface_hub import constants

    remote = tmp_path / "remote"
    remote.mkdir()
    corpus = book_root() / "data" / "corpus"
    for i, name in enumerate(["train-00000", "train-00001", "val-00000"]):
        shutil.copy(corpus / f"{name}.parquet", remote / f"shard_{i:05d}.parquet")
    server = range_server(remote, hub=True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read at import: patched here
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    source = dataclasses.replace(data.SOURCES["fineweb-edu"], num_shards=3)
    monkeypatch.setitem(data.SOURCES, "fineweb-edu", source)
    monkeypatch.setenv("NANOBOOK_DATA", str(tmp_path / "cache"))
    web = rows(TokenLoader(tok, "fineweb-edu", "val", 8, 64), 3)
    assert web == rows(TokenLoader(tok, "tiny", "val", 8, 64), 3)
    cache = tmp_path / "cache" / "fineweb-edu"
    assert sorted(p.name for p in cache.glob("*.parquet")) == ["shard_00002.parquet"]
    list(islice(TokenLoader(tok, "fineweb-edu", "train", 8, 64), 1))
    assert len(list(cache.glob("*.parquet"))) == 2  # only the first train shard so far
    fetched = [e["path"].rsplit("/", 1)[-1] for e in server.log if "/resolve/" in e["path"]]
    assert fetched == ["shard_00002.parquet", "shard_00000.parquet"]
