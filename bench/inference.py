"""Inference bench: greedy decoding with the KV cache (nanolib.engine) and without (GPT.generate).

Run: `.venv/bin/python bench/inference.py [--new-tokens 256] [--prompts 32 448] [--threads N]`.
Two models with random weights (speed does not depend on them): chapter 3's shape at the `tiny`
preset (book.yml) and a depth-4, d_model-256 model (the seq-512 shape). Each row is one batch-1
greedy decode of `--new-tokens` tokens after a random prompt: time to first token (TTFT: the
prompt's forward pass and the first token) and decode tokens/s after it (the other tokens ÷
their time), with the cache and without it, then the ratio; and the engine's aggregate tokens/s
at batch 8 (sampled rows sharing one prefilled prompt).

A 448-token prompt plus 256 new tokens needs 704 positions, so the models are built with
seq_len = max(their shape's, longest prompt + new tokens): the engine refuses to run past
seq_len, and GPT.generate would crop its context there (computing something else). The weights
do not depend on seq_len. The load average is printed: on a shared machine the figures move
with it, and with more torch threads than idle cores a batch-1 decode step (≈150 small ops)
spends most of its time with one thread waiting for the other; `--threads 1` avoids that.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from nanolib.config import load_book
from nanolib.device import device_name, sync
from nanolib.engine import Engine
from nanolib.model import GPT, GPTConfig, config_for_depth, param_counts


def shapes(seq_len: int) -> dict[str, GPTConfig]:
    """The two model shapes, each with at least seq_len positions."""
    book = load_book()
    p = book.resolve("03_pretraining", "tiny")
    vocab = book.resolve("01_tokenizer", "tiny")["vocab_size"]
    tiny = config_for_depth(
        p["depth"], vocab, max(p["seq_len"], seq_len), p["aspect_ratio"], p["head_dim"]
    )
    d256 = GPTConfig(vocab_size=4096, seq_len=max(512, seq_len), n_layer=4, d_model=256, n_head=4)
    return {"tiny": tiny, "d256": d256}


def timed_naive(model: GPT, prompt: torch.Tensor, new: int, device: str) -> tuple[float, float]:
    """TTFT and decode tokens/s of GPT.generate (the whole context recomputed every token)."""
    sync(device)
    t0 = time.perf_counter()
    model.generate(prompt, 1, temperature=0)
    sync(device)
    ttft = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.generate(prompt, new, temperature=0)
    sync(device)
    total = time.perf_counter() - t0
    return ttft, (new - 1) / max(total - ttft, 1e-9)


def timed_engine(
    engine: Engine, prompt: list[int], new: int, device: str, rows: int = 1
) -> tuple[float, float]:
    """TTFT and decode tokens/s (all rows together) of the engine, timed off its stream."""
    kw = {"max_tokens": new, "stop_tokens": [], "seed": 0}
    kw["temperature"] = 0.0 if rows == 1 else 1.0
    sync(device)
    t0 = time.perf_counter()
    steps = engine.stream(prompt, num_samples=rows, **kw)
    next(steps)
    sync(device)
    ttft = time.perf_counter() - t0
    n = sum(1 for _ in steps)
    sync(device)
    total = time.perf_counter() - t0
    assert n == new - 1
    return ttft, rows * (new - 1) / max(total - ttft, 1e-9)


def main() -> None:
    """Print the table, the ratios and the closing line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompts", type=int, nargs="+", default=[32, 448])
    ap.add_argument("--batch", type=int, default=8, help="rows of the aggregate measurement")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, new, long_prompt = args.device, args.new_tokens, max(args.prompts)
    threads = f", {torch.get_num_threads()} threads" if device == "cpu" else ""
    load = "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    print(f"device: {device_name(device)}{threads}, fp32; {load}; {os.cpu_count()} cores")
    if device == "cpu" and os.getloadavg()[0] > (os.cpu_count() or 1):
        print("the machine is busy with other work: these figures are lower bounds")
    head = f"{'model':<6} {'params':>7} {'prompt':>6} {'method':<9} {'TTFT ms':>8}"
    print(f"{head} {'decode tok/s':>12} {'cache ÷ no-cache':>16}")
    speedup: dict[tuple[str, int], float] = {}
    decode: dict[tuple[str, int], float] = {}
    for name, config in shapes(long_prompt + new).items():
        torch.manual_seed(0)
        with torch.device(device):
            model = GPT(config).eval()
        engine = Engine(model)
        params = f"{param_counts(config)['total'] / 1e6:.1f}M"
        timed_engine(engine, list(range(8)), 8, device)  # warm-up: allocator, kernels, caches
        for plen in args.prompts:
            prompt = torch.randint(0, config.vocab_size, (1, plen), device=device)
            ttft_n, tps_n = timed_naive(model, prompt, new, device)
            ttft_c, tps_c = timed_engine(engine, prompt[0].tolist(), new, device)
            speedup[name, plen], decode[name, plen] = tps_c / tps_n, tps_c
            row = f"{name:<6} {params:>7} {plen:>6}"
            print(f"{row} {'no-cache':<9} {ttft_n * 1e3:>8.1f} {tps_n:>12,.0f}")
            ratio = f"{tps_c / tps_n:>15.1f}×"
            print(f"{row} {'kv-cache':<9} {ttft_c * 1e3:>8.1f} {tps_c:>12,.0f} {ratio}")
        ttft_b, tps_b = timed_engine(engine, list(range(long_prompt)), new, device, args.batch)
        print(
            f"{name:<6} {params:>7} {long_prompt:>6} {f'batch {args.batch}':<9} "
            f"{ttft_b * 1e3:>8.1f} {tps_b:>12,.0f}   (all rows, sampled)"
        )
    print("load average {:.1f} {:.1f} {:.1f} after the runs".format(*os.getloadavg()))
    rates = ", ".join(f"{decode['d256', p]:,.0f} after {p}" for p in args.prompts)
    print(f"d256 batch-1 kv-cache decode tokens/s: {rates} (target ≥ 500 on 2 cores)")
    print(f"d256 speed-up target at the {long_prompt}-token prompt: ≥ 5×")
    ratio = speedup["d256", long_prompt]
    print(f"kv-cache speed-up at the {long_prompt}-token prompt: {ratio:.1f}×")


if __name__ == "__main__":
    main()
