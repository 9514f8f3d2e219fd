#!/usr/bin/env bash
# GPU smoke check, well under 8 minutes on one H100/H200: chapter 01 and a short d12 run of
# chapter 03 (the d12 model and batch, STEPS steps instead of ≈2,500), then the throughput bench;
# prints tokens/s and MFU of both.
#
#   bash bench/gpu_smoke.sh            # STEPS=30, DATA=tiny
#   STEPS=60 DATA=fineweb-edu bash bench/gpu_smoke.sh
#
# DATA=tiny (the default) trains on the shipped corpus, so nothing is downloaded: the GPU box may
# be offline. Its runs go to $NANOBOOK_RUNS (default /tmp/nanobook-gpu-smoke), not to runs/, so a
# real d12 run is never replaced by this short one. Python: .venv if present, else a python3
# that already has nanolib's dependencies, else `make .venv/.installed` (needs the network).
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-30}
DATA=${DATA:-tiny}
export NANOBOOK_RUNS=${NANOBOOK_RUNS:-/tmp/nanobook-gpu-smoke}
export PYTHONUNBUFFERED=1 PYTORCH_ALLOC_CONF=expandable_segments:True
if [ "$DATA" = tiny ]; then
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
fi

if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
elif python3 -c "import datasets, jupytext, papermill, plotly, rustbpe, tiktoken, torch" 2>/dev/null; then
  PY=python3
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  make .venv/.installed
  PY=.venv/bin/python
fi
"$PY" - <<'EOF'
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible to torch: this script needs one"
print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
EOF

t0=$SECONDS
echo "== chapter 01 at d12 (data=$DATA, two vocabularies in the sweep)"
"$PY" -m nanolib.cli run 01 --preset d12 --force -p data "$DATA" \
  -p max_chars 100000000 -p sweep_vocab_sizes "[8192, 32768]" -p sweep_max_chars 5000000
echo "== chapter 03 at d12, $STEPS steps (data=$DATA)"
"$PY" -m nanolib.cli run 03 --preset d12 --force -p data "$DATA" -p num_steps "$STEPS" \
  -p warmup_steps 5 -p eval_every 10 -p eval_tokens 1048576 -p checkpoint_every 0 \
  -p bigram_max_tokens 2000000
"$PY" - <<'EOF'
import json, os
from pathlib import Path
d = Path(os.environ["NANOBOOK_RUNS"]) / "d12" / "03_pretraining"
s = json.loads((d / "checkpoint" / "summary.json").read_text())
h = json.loads((d / "manifest.json").read_text())["headline"]
mfu = f"{s['mfu']:.1%}" if s["mfu"] else "n/a"
print(f"chapter 03 d12: {s['tokens_per_s']:,.0f} tokens/s, MFU {mfu} on {s['device']}, "
      f"{s['step']} steps in {s['wall_s']:.0f} s; val bpb {s['val_bpb']:.4f} "
      f"(bigram {h['bigram_bpb']:.4f})")
EOF
echo "== chapters done in $((SECONDS - t0)) s; throughput bench"
"$PY" bench/train_throughput.py --models tiny d12 --steps 5
echo "== gpu smoke done in $((SECONDS - t0)) s"
