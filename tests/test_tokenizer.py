"""nanolib.tokenizer: training, serving, special tokens, round trips, save/load."""

import json
from pathlib import Path

import pytest
import rustbpe

from nanolib.tokenizer import (
    GPT2_SPLIT,
    SPECIAL_TOKENS,
    Tokenizer,
    bytes_per_token,
)

# Varied enough text for a few hundred merges, without reading anything outside the repo.
TEXT = "".join(p.read_text() for p in sorted(Path(__file__).parent.parent.glob("nanolib/*.py")))
AWKWARD = [
    "",
    " ",
    "naïve café",
    "日本語のテキスト",
    "👩‍👩‍👧 family",
    "a\r\nb\tc",
    "\x00\x7f",
    "ｆｕｌｌ",
]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train([TEXT], 400)


def test_vocab_and_specials(tok):
    assert tok.vocab_size == 400
    n = 400 - len(SPECIAL_TOKENS)
    assert [tok.special_id(s) for s in SPECIAL_TOKENS] == list(range(n, 400))
    assert tok.bos_id == n
    assert tok.encode("hi", prepend="<|bos|>")[0] == tok.bos_id
    assert tok.bos_id not in tok.encode("<|bos|>")
    with pytest.raises(KeyError, match="unknown special token"):
        tok.special_id("<|eos|>")


def test_ids_match_rustbpe(tok):
    ref = rustbpe.Tokenizer()
    ref.train_from_iterator(iter([TEXT]), 400 - len(SPECIAL_TOKENS))
    assert tok.encode(TEXT) == ref.encode(TEXT)


@pytest.mark.parametrize("text", AWKWARD)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode_bytes(tok.encode(text)) == text.encode("utf-8")


def test_invalid_utf8_decodes_to_replacement(tok):
    ids = tok.encode("é")
    first_byte = [i for i in range(256) if tok.id_to_bytes(i) == b"\xc3"]
    assert tok.decode(first_byte) == "\ufffd"
    assert tok.decode_bytes(ids) == "é".encode()


def test_batch_encode(tok):
    texts = ["one", "two three", ""]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert all(ids[0] == tok.bos_id for ids in tok.encode_batch(texts, prepend="<|bos|>"))


def test_token_bytes_sum_to_text_bytes(tok):
    lengths = tok.token_bytes()
    assert sum(lengths[i] for i in tok.encode(TEXT)) == len(TEXT.encode())
    assert all(lengths[tok.special_id(s)] == 0 for s in SPECIAL_TOKENS)


def test_too_little_text_warns():
    with pytest.warns(UserWarning, match="ran out of pairs"):
        t = Tokenizer.train(["abab abab"], 400)
    assert t.vocab_size < 400


def test_compression_grows_with_vocab():
    small = Tokenizer.train([TEXT], 300)
    large = Tokenizer.train([TEXT], 600)
    assert 1.0 < bytes_per_token(small, [TEXT]) < bytes_per_token(large, [TEXT])


def test_split_pattern_is_kept():
    t = Tokenizer.train([TEXT], 300, pattern=GPT2_SPLIT)
    assert t.pattern == GPT2_SPLIT


@pytest.mark.parametrize("bad", [0, 255, 264, "4096", 300.0])
def test_bad_vocab_size(bad):
    with pytest.raises(ValueError, match="vocab_size must be an int"):
        Tokenizer.train([TEXT], bad)


def test_save_load(tok, tmp_path):
    d = tok.save(tmp_path / "tokenizer")
    again = Tokenizer.load(d)
    assert again.encode(TEXT) == tok.encode(TEXT)
    assert again.vocab_size == tok.vocab_size and again.pattern == tok.pattern
    tok.save(d)  # saving over an existing tokenizer replaces it whole
    assert Tokenizer.load(d).encode(TEXT) == tok.encode(TEXT)


def test_load_missing_and_corrupt(tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="run chapter 01"):
        Tokenizer.load(tmp_path / "nothing")
    d = tok.save(tmp_path / "tokenizer")
    (d / "tokenizer.tiktoken").write_text("not base64 and no rank\n")
    with pytest.raises(ValueError, match="corrupt tokenizer .* re-run the chapter that made it"):
        Tokenizer.load(d)


def cut_at_a_line(path, keep: float = 0.8) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: int(len(lines) * keep)]))


def test_a_cut_or_edited_tokenizer_fails_naming_the_command(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("NANOBOOK_RUNS", str(tmp_path / "runs"))
    d = tok.save(tmp_path / "runs/smoke/01_tokenizer/tokenizer")
    ranks = d / "tokenizer.tiktoken"
    good = ranks.read_bytes()
    cut_at_a_line(ranks)  # still well-formed lines: only the recorded size tells
    fix = r"re-run `nanobook run 01 --preset smoke --force`"
    with pytest.raises(ValueError, match=rf"tokenizer.tiktoken holds [\d,]+ bytes.*{fix}"):
        Tokenizer.load(d)
    edited = bytearray(good)
    edited[10:12] = edited[11:9:-1]  # same size, two bytes swapped
    ranks.write_bytes(bytes(edited))
    with pytest.raises(ValueError, match=f"differs from the sha256 tokenizer.json recorded.*{fix}"):
        Tokenizer.load(d)


def test_a_cut_tokenizer_without_recorded_hashes_fails_on_its_vocab_size(tok, tmp_path):
    d = tok.save(tmp_path / "tokenizer")
    meta = json.loads((d / "tokenizer.json").read_text())
    del meta["ranks_bytes"], meta["ranks_sha256"]  # as saved before hashes were recorded
    (d / "tokenizer.json").write_text(json.dumps(meta))
    cut_at_a_line(d / "tokenizer.tiktoken")
    with pytest.raises(
        ValueError, match=f"gives [\\d,]+ ids, tokenizer.json recorded {tok.vocab_size}"
    ):
        Tokenizer.load(d)
