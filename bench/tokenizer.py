"""Tokenizer bench: rustbpe training and tiktoken encoding vs HF `tokenizers`, side by side.

Run: `.venv/bin/python bench/tokenizer.py [--source tiny] [--vocab 4096 32768]`. Prints seconds,
MB/s and the ratio (ours ÷ HF for throughput, HF ÷ ours for time: > 1 means we are faster).
"""

from __future__ import annotations

import argparse
import os
import time

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from nanolib.data import iter_texts
from nanolib.tokenizer import SPECIAL_TOKENS, Tokenizer


def best_of(n: int, fn):
    """Run fn n times; return (fastest seconds, last result)."""
    best, out = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def train_hf(texts: list[str], vocab_size: int) -> HFTokenizer:
    """HF byte-level BPE with a comparable setup (byte alphabet, same special tokens)."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def main() -> None:
    """Print the side-by-side table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", default="tiny")
    ap.add_argument("--vocab", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    train = list(iter_texts(args.source, "train"))
    val = list(iter_texts(args.source, "val"))
    train_mb = sum(len(t.encode()) for t in train) / 1e6
    val_mb = sum(len(t.encode()) for t in val) / 1e6
    val_joined = "".join(val)
    threads = os.cpu_count() or 1
    print(f"corpus {args.source!r}: train {train_mb:.1f} MB, val {val_mb:.2f} MB, {threads} cores")
    print(f"{'vocab':>7} {'what':<28} {'ours':>10} {'HF':>10} {'ours vs HF':>11}")
    for v in args.vocab:
        t_ours, ours = best_of(args.repeats, lambda v=v: Tokenizer.train(train, v))
        t_hf, hf = best_of(args.repeats, lambda v=v: train_hf(train, v))
        print(f"{v:>7} {'train (s)':<28} {t_ours:>10.2f} {t_hf:>10.2f} {t_hf / t_ours:>10.2f}×")

        e1, _ = best_of(args.repeats, lambda o=ours: o.encode(val_joined))
        h1, _ = best_of(args.repeats, lambda h=hf: h.encode(val_joined))
        print(
            f"{v:>7} {'encode 1 thread (MB/s)':<28} {val_mb / e1:>10.1f} {val_mb / h1:>10.1f} "
            f"{h1 / e1:>10.2f}×"
        )
        eb, _ = best_of(args.repeats, lambda o=ours: o.encode_batch(val))
        hb, _ = best_of(args.repeats, lambda h=hf: h.encode_batch(val))
        print(
            f"{v:>7} {f'encode batch, {threads} thr (MB/s)':<28} {val_mb / eb:>10.1f} "
            f"{val_mb / hb:>10.1f} {hb / eb:>10.2f}×"
        )
        n_ours = len(ours.encode(val_joined))
        n_hf = len(hf.encode(val_joined).ids)
        print(
            f"{v:>7} {'val bytes/token':<28} {val_mb * 1e6 / n_ours:>10.3f} "
            f"{val_mb * 1e6 / n_hf:>10.3f}"
        )


if __name__ == "__main__":
    main()
