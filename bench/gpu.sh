#!/usr/bin/env bash
# The GPU checks, as one script for a lent CUDA machine (bench/README.md, "On a GPU").
#
# Runs, each stage under its own time limit so that one failure does not cost the others:
#   1. the tests that need CUDA (device/dtype preservation of every attack, AMP training);
#   2. PGD throughput on the GPU: the trained full-MNIST model A against the limit and the peers
#      (strength rows), then random-init madry-mnist and preact-resnet18 (CIFAR-10 shapes);
#   3. robustopt's standard suite against pyautoattack on model A, first 1,000 test images;
#   4. the whole test suite, with CUDA visible.
# Everything is logged to OUT/gpu.log; result tables go to OUT/*.{json,md}.
#
# Expects, next to the tree: PYTHONPATH with src/ and the peers (see bench/README.md), the MNIST
# test files under DATA/mnist. Environment: OUT (required), DATA (default .gpu/data),
# DEVICE (default cuda), QUICK=1 for a dry run of the script itself (tiny settings, any device).
set -u -o pipefail
: "${OUT:?set OUT to the output folder}"
DATA=${DATA:-.gpu/data}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOG="$OUT/gpu.log"
mkdir -p "$OUT"

stage() {  # stage NAME SECONDS CMD...: run CMD with a time limit, log its status, never abort the script
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s) $(date -u +%T)" | tee -a "$LOG"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0))s" | tee -a "$LOG"
}

if [ "$QUICK" = 1 ]; then
    STEPS=2 BATCHES=8 REPS=1 N=16 AA_VERSION=fast
else
    STEPS=10,40 BATCHES=100,500 REPS=3 N=1000 AA_VERSION=standard
fi

{
    date -u
    nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
    $PY -c "import torch, robustopt; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
} 2>&1 | tee -a "$LOG"

stage cuda-tests 90 $PY -m pytest -q -p no:cacheprovider tests -k "cuda or amp"
stage throughput-model-A 120 $PY bench/throughput.py --device "$DEVICE" --models strength \
    --run bench/results/full-mnist/A --root "$DATA" --steps $STEPS --batch-sizes $BATCHES --reps $REPS \
    --out "$OUT/throughput-$DEVICE-mnist-A"
stage throughput-random-init 150 env -u ROBUSTOPT_DATA $PY bench/throughput.py --device "$DEVICE" \
    --models madry-mnist,preact-resnet18 --steps $STEPS --batch-sizes $BATCHES --reps $REPS \
    --out "$OUT/throughput-$DEVICE-random-init"
stage standard-vs-autoattack 240 $PY bench/compare_autoattack.py --device "$DEVICE" \
    --run bench/results/full-mnist/A --root "$DATA" --n $N --norm linf --eps 0.3 --version $AA_VERSION \
    --batch-size $N --seed 0 --diagnose --out "$OUT/standard-vs-autoattack-$DEVICE-mnist-A"
rm -f "$OUT"/*-side.pt  # the saved sides: not needed once the report is written
[ "$QUICK" = 1 ] || stage all-tests 200 $PY -m pytest -q -p no:cacheprovider -x tests
