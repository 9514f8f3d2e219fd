"""Training throughput bench: tokens/s and MFU of full training steps, eager vs torch.compile.

Run: `.venv/bin/python bench/train_throughput.py [--models tiny d12] [--steps 5]`. Each model is
the shape chapter 3 trains at that preset (book.yml), fed random tokens, and timed over whole
optimizer steps (forward, backward, Muon + AdamW) on whatever device is present: bf16 autocast
on CUDA, fp32 on CPU. On a CPU the d12 shape runs one row per micro-batch (it is there to check
the code path, not to be fast). Prints tokens/s, achieved FLOP/s, MFU (where the device has a
published peak in nanolib.device) and the ratio compiled ÷ eager (> 1: compile is faster). The
measurement is `nanolib.throughput.measure`, which the isoFLOP planner uses too.
"""

from __future__ import annotations

import argparse

import torch

from nanolib.config import load_book
from nanolib.device import device_name, peak_flops
from nanolib.throughput import measure
from nanolib.train import Plan, TrainConfig, plan, recipe_for, vocab_size_for


def model_for(preset: str, device: str) -> tuple[TrainConfig, Plan]:
    """The config and plan chapter 3 uses at a preset (one row per micro-batch on a CPU at d12)."""
    book = load_book()
    cfg = recipe_for(book, preset)
    if device == "cpu" and cfg.seq_len > 512:
        cfg.device_batch_size = 1
    cfg.batch_tokens = cfg.device_batch_size * cfg.seq_len
    return cfg, plan(cfg, vocab_size_for(book, preset))


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["tiny", "d12"], help="book.yml presets")
    ap.add_argument("--steps", type=int, default=5, help="timed optimizer steps per measurement")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-compile", action="store_true", help="measure eager mode only")
    args = ap.parse_args()
    device = args.device
    if device == "cuda":
        torch.set_float32_matmul_precision("high")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    peak = peak_flops(device_name(device), dtype)
    threads = f", {torch.get_num_threads()} threads" if device == "cpu" else ""
    print(f"device: {device_name(device)}{threads}; peak {peak or 'unknown'} FLOP/s at {dtype}")
    head = f"{'model':<6} {'N':>8} {'rows×seq':>9} {'mode':<8} {'tokens/s':>11} {'FLOP/s':>9}"
    print(f"{head} {'MFU':>6} {'warm-up s':>9}")
    modes = [False] if args.no_compile else [False, True]
    for preset in args.models:
        cfg, p = model_for(preset, device)
        results = {}
        for compiled in modes:
            r = measure(p.model, cfg.device_batch_size, device, args.steps, compiled)
            results[compiled] = r["tokens_per_s"]
            flops = r["tokens_per_s"] * p.flops_per_token
            mfu = f"{flops / peak:.1%}" if peak else "—"
            mode = "compile" if compiled else "eager"
            print(
                f"{preset:<6} {p.num_params / 1e6:>7.1f}M "
                f"{cfg.device_batch_size:>4}×{cfg.seq_len:<4} {mode:<8} "
                f"{r['tokens_per_s']:>11,.0f} {flops:>9.2e} {mfu:>6} {r['warmup_s']:>9.1f}"
            )
        if len(results) == 2:
            print(f"{preset:<6} compile ÷ eager tokens/s: {results[True] / results[False]:.2f}×")


if __name__ == "__main__":
    main()
