"""Training throughput bench: whole training steps side by side — eager vs compiled, Muon's
matrices one by one vs batched, fp32 vs bf16 autocast.

Run: `.venv/bin/python bench/train_throughput.py [--models tiny wide] [--rounds 8] [--bf16]`.
A model is the shape chapter 3 trains at a book.yml preset (`tiny`, `d12`, …) or `wide`
(depth 4, d_model 256, seq 512, 4 rows: big enough that Muon's share shows). Each is fed random
tokens and timed over whole optimizer steps (forward, backward, Muon + AdamW) in every setup,
one step of each in turn, medians over the rounds (`nanolib.throughput.compare`): a load that
comes and goes on a shared machine slows every setup alike. On a CPU the d12 shape runs one row
per micro-batch (it checks the code path, not speed). Prints tokens/s, achieved FLOP/s, MFU
(where the device has a published peak), the first two steps' time (that is where compilation
happens) and each setup's speed ÷ today's eager step (eager model, per-matrix Muon). The last
line is the headline: the `tiny` step with batched, compiled Muon and a compiled model ÷ eager.
"""

from __future__ import annotations

import argparse

import torch

from nanolib.config import load_book
from nanolib.device import device_name, peak_flops
from nanolib.model import config_for_depth, flops_per_token, scaling_params
from nanolib.throughput import Setup, compare
from nanolib.train import plan, recipe_for, vocab_size_for

EAGER = Setup(compile_model=False, batched=False)  # the step as the book ran it before
FAST = Setup(compile_model=True, batched=True, compile_optimizer=True)


def model_for(name: str, device: str) -> tuple[object, int]:
    """The model config and rows per step of a preset's chapter-3 shape, or of `wide`."""
    book = load_book()
    if name == "wide":
        return config_for_depth(4, vocab_size_for(book, "tiny"), 512, 64, 64), 4
    cfg = recipe_for(book, name)
    if device == "cpu" and cfg.seq_len > 512:
        cfg.device_batch_size = 1
    cfg.batch_tokens = cfg.device_batch_size * cfg.seq_len
    return plan(cfg, vocab_size_for(book, name)).model, cfg.device_batch_size


def setups(bf16: bool, cpu: bool) -> list[Setup]:
    """The setups compared: eager/compiled × per-matrix/batched, and bf16 ones if asked."""
    out = [
        EAGER,
        Setup(compile_model=False, batched=True),
        Setup(compile_model=True, batched=False),
        Setup(compile_model=True, batched=True),
        FAST,
    ]
    if bf16 and cpu:
        out += [Setup(batched=True, bf16=True), Setup(True, True, True, bf16=True)]
    return out


def main() -> None:
    """Print the table and the headline ratio."""
    ap = argparse.ArgumentParser(description=__doc__)
    cpu_default, gpu_default = ["tiny", "wide"], ["tiny", "d12"]
    ap.add_argument("--models", nargs="+", help=f"presets or wide (CPU: {cpu_default})")
    ap.add_argument("--rounds", type=int, default=8, help="timed steps per setup (medians)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", action="store_true", help="also bf16 autocast on a CPU")
    ap.add_argument("--threads", type=int, help="torch threads on a CPU (default: torch's)")
    args = ap.parse_args()
    device, cpu = args.device, args.device == "cpu"
    models = args.models or (cpu_default if cpu else gpu_default)
    if cpu and args.threads:
        torch.set_num_threads(args.threads)
    if device == "cuda":
        torch.set_float32_matmul_precision("high")
    dtype = torch.float32 if cpu else torch.bfloat16
    peak = peak_flops(device_name(device), dtype)
    threads = f", {torch.get_num_threads()} threads" if cpu else ""
    print(f"device: {device_name(device)}{threads}; peak {peak or 'unknown'} FLOP/s at {dtype}")
    print(
        f"{'model':<6} {'N':>7} {'rows×seq':>9} {'setup':<44} {'tokens/s':>9} {'FLOP/s':>9} "
        f"{'MFU':>6} {'warm-up':>8} {'÷ eager':>7}"
    )
    headline = None
    for name in models:
        config, rows = model_for(name, device)
        results = compare(config, rows, device, setups(args.bf16, cpu), args.rounds)
        base = results[EAGER]["tokens_per_s"]
        n = scaling_params(config, "all")
        for setup, r in results.items():
            flops = r["tokens_per_s"] * flops_per_token(config)
            mfu = f"{flops / peak:.1%}" if peak else "—"
            print(
                f"{name:<6} {n / 1e6:>6.2f}M {rows:>4}×{config.seq_len:<4} {setup.label:<44} "
                f"{r['tokens_per_s']:>9,.0f} {flops:>9.2e} {mfu:>6} {r['warmup_s']:>7.1f}s "
                f"{r['tokens_per_s'] / base:>6.2f}×"
            )
        if name == "tiny":
            headline = results[FAST]["tokens_per_s"] / base
    if headline is not None:
        print(f"tiny step, batched Muon + compile ÷ eager: {headline:.1f}×")


if __name__ == "__main__":
    main()
