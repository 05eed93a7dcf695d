#!/usr/bin/env bash
# One prepared run on a CUDA machine: synthetic data, `edge` and `paper` training on CUDA (mixed
# precision), and the torch CUDA FP16 latency table. Each step reports and the next still runs.
#   OUT=runs/gpu bash benchmarks/gpu_check.sh
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu}
PAPER_EPOCHS=${PAPER_EPOCHS:-1}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
step() { local name=$1; shift; local t0=$SECONDS; echo "== $name"; "$@"; echo "== $name: exit $? in $((SECONDS - t0)) s"; }
step synth python3 -m train.data_cli synth --out "$OUT/data" --seed 0 --workers 12 --json
step edge-cuda python3 -m train.train_cli --data "$OUT/data" --out "$OUT/edge" --device cuda --threads 8 --json
step paper-cuda python3 -m train.train_cli --data "$OUT/data" --out "$OUT/paper" --preset paper --device cuda \
  --threads 8 --epochs "$PAPER_EPOCHS" --pretrained none --json
step torch-fp16 python3 benchmarks/bench_torch.py --device cuda --frames 30
