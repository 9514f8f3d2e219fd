"""Byte-level BPE: trained with rustbpe, served by tiktoken from the learned ranks."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import rustbpe
import tiktoken

from nanolib.files import replace_dir
from nanolib.runs import make_command, remake_hint

# GPT-2's pre-tokenisation split (Radford et al. 2019, the public `encoder.py`).
GPT2_SPLIT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# GPT-4's (`cl100k_base`): case-insensitive contractions, digits in groups of at most three,
# punctuation runs kept apart from letters. It is rustbpe's default pattern.
GPT4_SPLIT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
SPLIT_PATTERNS = {"gpt2": GPT2_SPLIT, "gpt4": GPT4_SPLIT}

SPECIAL_TOKENS = (
    "<|bos|>",  # starts every document; the only special token pretraining sees
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<|python_start|>",
    "<|python_end|>",
    "<|output_start|>",
    "<|output_end|>",
)
RANKS_FILE = "tokenizer.tiktoken"
META_FILE = "tokenizer.json"


class Tokenizer:
    """A trained byte-level BPE tokenizer with chat special tokens."""

    def __init__(self, mergeable_ranks: dict[bytes, int], pattern: str, name: str = "nanobook"):
        n = len(mergeable_ranks)
        if sorted(mergeable_ranks.values()) != list(range(n)):
            raise ValueError("mergeable ranks must be exactly 0..n-1")
        self.pattern = pattern
        self.mergeable_ranks = mergeable_ranks
        specials = {tok: n + i for i, tok in enumerate(SPECIAL_TOKENS)}
        self.enc = tiktoken.Encoding(
            name=name, pat_str=pattern, mergeable_ranks=mergeable_ranks, special_tokens=specials
        )

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        pattern: str = GPT4_SPLIT,
        buffer_size: int = 8192,
    ) -> Tokenizer:
        """Learn BPE merges with rustbpe; vocab_size counts the special tokens too."""
        minimum = 256 + len(SPECIAL_TOKENS)
        if not isinstance(vocab_size, int) or vocab_size < minimum:
            # rustbpe panics (not a Python Exception) below 256: check here first
            raise ValueError(
                f"vocab_size must be an int ≥ {minimum} (256 bytes + {len(SPECIAL_TOKENS)} "
                f"special tokens), got {vocab_size!r}"
            )
        trainer = rustbpe.Tokenizer()
        trainer.train_from_iterator(
            iter(texts),
            vocab_size - len(SPECIAL_TOKENS),
            buffer_size=buffer_size,
            pattern=pattern,
        )
        ranks = dict(trainer.get_mergeable_ranks())
        if len(ranks) + len(SPECIAL_TOKENS) < vocab_size:
            warnings.warn(
                f"the training text ran out of pairs to merge: vocab_size is "
                f"{len(ranks) + len(SPECIAL_TOKENS)}, not {vocab_size}; give it more text",
                stacklevel=2,
            )
        return cls(ranks, trainer.get_pattern())

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return self.enc.n_vocab

    @property
    def bos_id(self) -> int:
        """Id of `<|bos|>`."""
        return self.special_id("<|bos|>")

    def special_id(self, token: str) -> int:
        """Id of a special token such as `<|assistant_start|>`."""
        try:
            return self.enc._special_tokens[token]
        except KeyError:
            raise KeyError(f"unknown special token {token!r}; known: {SPECIAL_TOKENS}") from None

    def encode(self, text: str, prepend: int | str | None = None) -> list[int]:
        """Encode text as ordinary text (special-token strings inside it are not parsed)."""
        ids = self.enc.encode_ordinary(text)
        if prepend is not None:
            first = self.special_id(prepend) if isinstance(prepend, str) else prepend
            ids.insert(0, first)
        return ids

    def encode_batch(
        self, texts: Sequence[str], prepend: int | str | None = None, num_threads: int = 0
    ) -> list[list[int]]:
        """Encode many texts in parallel threads (0 = one per CPU core)."""
        threads = num_threads or os.cpu_count() or 1
        out = self.enc.encode_ordinary_batch(list(texts), num_threads=threads)
        if prepend is not None:
            first = self.special_id(prepend) if isinstance(prepend, str) else prepend
            out = [[first, *ids] for ids in out]
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Decode ids to text; bytes that are not valid UTF-8 become U+FFFD."""
        return self.enc.decode(list(ids), errors="replace")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Decode ids to the exact bytes they stand for."""
        return self.enc.decode_bytes(list(ids))

    def token_bytes(self) -> list[int]:
        """Byte length of every id (0 for special tokens): the denominator of bits per byte."""
        lengths = [0] * self.vocab_size
        for tok, rank in self.mergeable_ranks.items():
            lengths[rank] = len(tok)
        return lengths

    def id_to_bytes(self, i: int) -> bytes:
        """The raw bytes of one id (the special token's text for specials)."""
        return self.enc.decode_single_token_bytes(i)

    def save(self, directory: str | Path) -> Path:
        """Write the ranks (tiktoken's text format) and metadata atomically into a directory."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
        lines = (
            f"{base64.b64encode(tok).decode()} {rank}"
            for tok, rank in sorted(self.mergeable_ranks.items(), key=lambda kv: kv[1])
        )
        ranks = ("\n".join(lines) + "\n").encode()
        (tmp / RANKS_FILE).write_bytes(ranks)
        meta = {
            "pattern": self.pattern,
            "special_tokens": list(SPECIAL_TOKENS),
            "vocab_size": self.vocab_size,
            "ranks_bytes": len(ranks),  # checked on load: a cut or edited file is an error
            "ranks_sha256": hashlib.sha256(ranks).hexdigest(),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        replace_dir(tmp, directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Load a tokenizer saved by `save`, with a clear error if it is missing or corrupt."""
        directory = Path(directory)
        ranks_path, meta_path = directory / RANKS_FILE, directory / META_FILE
        if not ranks_path.exists() or not meta_path.exists():
            raise FileNotFoundError(
                f"no tokenizer at {directory} (expected {RANKS_FILE} and {META_FILE}); "
                f"run {make_command('tokenizer')} to train one"
            )
        try:
            meta = json.loads(meta_path.read_text())
            data = ranks_path.read_bytes()
            if "ranks_bytes" in meta and len(data) != meta["ranks_bytes"]:
                raise ValueError(
                    f"{RANKS_FILE} holds {len(data):,} bytes, {META_FILE} recorded "
                    f"{meta['ranks_bytes']:,}"
                )
            if "ranks_sha256" in meta and hashlib.sha256(data).hexdigest() != meta["ranks_sha256"]:
                raise ValueError(f"{RANKS_FILE} differs from the sha256 {META_FILE} recorded")
            ranks = {}
            for n, line in enumerate(data.decode().splitlines(), start=1):
                parts = line.split()
                if len(parts) != 2:
                    raise ValueError(f"{RANKS_FILE} line {n} is not '<base64> <rank>'")
                tok, rank = parts
                ranks[base64.b64decode(tok)] = int(rank)
            if list(meta["special_tokens"]) != list(SPECIAL_TOKENS):
                raise ValueError("its special tokens differ from this nanolib's")
            tokenizer = cls(ranks, meta["pattern"])
            if tokenizer.vocab_size != meta["vocab_size"]:
                raise ValueError(
                    f"{RANKS_FILE} gives {tokenizer.vocab_size:,} ids, {META_FILE} recorded "
                    f"{meta['vocab_size']:,}"
                )
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(
                f"corrupt tokenizer at {directory}: {e}; {remake_hint(directory)}"
            ) from None
        return tokenizer


def bytes_per_token(tokenizer: Tokenizer, texts: Sequence[str]) -> float:
    """Compression: UTF-8 bytes of the texts divided by the number of tokens they encode to."""
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
    return n_bytes / max(n_tokens, 1)
