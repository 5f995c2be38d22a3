#!/usr/bin/env bash
# The paper's MNIST experiment (Table 1) on full MNIST, at the budget a 2-core CPU affords.
# Usage: ROBUSTOPT_DATA=../shared/data bash bench/full_mnist.sh [RUNS_DIR]   (results: docs/results.md)
set -euo pipefail
RUNS=${1:-runs/full-mnist}
RO=${RO:-.venv/bin/robustopt}
COMMON="--data mnist --eps 0.3 --batch-size 100 --optimizer adam"
# A: the paper's model A, PGD adversarial training (5 steps of 0.1 from a random start; eps ramped 0.1, 0.2, 0.3
# over the first 3 epochs: at full eps from the start it stays at chance). The paper: 40 steps of 0.01, batch 50, 100k steps; we cannot afford that here.
$RO train $COMMON --model madry-mnist --method pgd --steps 5 --step-size 0.1 --lr 1e-3 --epochs "${EPOCHS_A:-5}" \
    --eps-warmup-epochs 3 --seed 0 --out "$RUNS/A" --resume
# A_nat: the same architecture, natural training. B: the paper's model B (Tramer et al. 2017), natural training.
$RO train $COMMON --model madry-mnist --method natural --lr 1e-3 --epochs 2 --seed 0 --out "$RUNS/A_nat" --resume
$RO train $COMMON --model tramer-b --method natural --lr 1e-3 --epochs 2 --seed 0 --out "$RUNS/B" --resume
# The madry suite on the first N test images (all 10,000 by default).
$RO eval "$RUNS/A" --suite madry --source B="$RUNS/B" --source A_nat="$RUNS/A_nat" --max-restarts "${MAX_RESTARTS:-20}" \
    --n "${EVAL_N:-10000}" --batch-size 500
