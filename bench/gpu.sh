#!/usr/bin/env bash
# The GPU checks, as one script for a lent CUDA machine (bench/README.md, "On a GPU").
#
# CHECKS=cifar10 (default; under 14 minutes of device time), each stage under its own time limit so
# that one failure does not cost the others:
#   1. the tests that need CUDA (device/dtype preservation of every attack, AMP training);
#   2. the Fast-AT preset: `robustopt train --preset fast-at-cifar10` (preact-resnet18, 15 epochs of
#      FGSM-RS, one-cycle LR, AMP) on the full CIFAR-10 training split;
#   3. the standard suite (APGD-CE, APGD-T, FAB-T, Square) on its first 1,000 test images.
#   4. the training-step levers on the device: bench/step_speed.py (every variant, compiled ones included)
#      and a short `robustopt train` of the CPU recipe with its flags (--fold-bn, --ema, --label-smoothing, a
#      PGD-2 finish).
# CHECKS=mnist, the checks of the MNIST work:
#   1. the CUDA tests; 2. PGD throughput on the GPU: the trained full-MNIST model A against the limit
#   and the peers (strength rows), then random-init madry-mnist and preact-resnet18 (CIFAR-10 shapes);
#   3. robustopt's standard suite against pyautoattack on model A, first 1,000 test images;
#   4. the whole test suite, with CUDA visible.
# Everything is logged to OUT/gpu.log; result tables go to OUT/*.{json,md}.
#
# Expects, next to the tree: PYTHONPATH with src/ and the peers (see bench/README.md), the dataset
# files under DATA (DATA/cifar10/cifar-10-batches-bin or DATA/mnist). Environment: OUT (required),
# DATA (default .gpu/data), DEVICE (default cuda), CHECKS (cifar10 | mnist), QUICK=1 for a dry run
# of the script itself (tiny settings, any device).
set -u -o pipefail
: "${OUT:?set OUT to the output folder}"
DATA=${DATA:-.gpu/data}
DEVICE=${DEVICE:-cuda}
CHECKS=${CHECKS:-cifar10}
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

if [ "$CHECKS" = cifar10 ]; then
    if [ "$QUICK" = 1 ]; then FAST_AT="--train-size 512 --epochs 1 --model resnet9"; else FAST_AT=""; fi
    [ "$DEVICE" = cuda ] || FAST_AT="$FAST_AT --no-amp"  # AMP is a CUDA feature
    stage fast-at 330 $PY -m robustopt train --preset fast-at-cifar10 --device "$DEVICE" --root "$DATA" \
        $FAST_AT --out "$OUT/fast-at"
    stage fast-at-standard 150 $PY -m robustopt eval "$OUT/fast-at" --suite $AA_VERSION --n $N \
        --device "$DEVICE" --root "$DATA" --batch-size 500
    if [ "$QUICK" = 1 ]; then STEP_SPEED="--quick"; FOLD_SIZE=512; else STEP_SPEED="--threads 16"; FOLD_SIZE=10000; fi
    stage step-speed 180 $PY bench/step_speed.py --device "$DEVICE" --root "$DATA" $STEP_SPEED \
        --out "$OUT/step-speed-$DEVICE"
    stage recipe-flags-train 120 $PY -m robustopt train --data cifar10 --model resnet9 --method n-fgsm --eps 8/255 \
        --augment crop-flip --optimizer sgd --lr 0.1 --batch-size 128 --epochs 2 --train-size $FOLD_SIZE --fold-bn \
        --ema 0.998 --label-smoothing 0.1 --finish-method pgd --finish-epochs 1 --steps 2 --step-size 4/255 \
        --device "$DEVICE" --root "$DATA" --out "$OUT/recipe-flags"
    exit 0
fi

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
