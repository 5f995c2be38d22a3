#!/usr/bin/env bash
# Robust accuracy against training cost (image-gradient evaluations) for each training method,
# on full MNIST at eps 0.3 with the fast small CNN (the per-method curves of docs/results.md).
# Every run logs, per epoch, the cumulative image-gradient evaluations and the PGD-10 robust
# accuracy on 1,000 held-out *training* images; bench/training_curves.py tabulates and plots them.
# Usage: ROBUSTOPT_DATA=../shared/data bash bench/train_efficiency.sh [RUNS_DIR] [MODEL]
set -euo pipefail
RUNS=${1:-runs/efficiency}
MODEL=${2:-small-cnn}
RO=${RO:-.venv/bin/robustopt}
COMMON="--data mnist --model $MODEL --eps 0.3 --batch-size 100 --optimizer adam --lr 1e-3 --seed 0 --resume"
# Adversarial methods ramp eps over the first 3 epochs (from 0.3/3); at full eps from the start
# small networks stay at chance.
$RO train $COMMON --method natural --epochs 3 --out "$RUNS/natural"
$RO train $COMMON --method pgd --steps 40 --step-size 0.01 --epochs 5 --eps-warmup-epochs 3 --out "$RUNS/pgd-40"
$RO train $COMMON --method pgd --steps 5 --step-size 0.1 --epochs 5 --eps-warmup-epochs 3 --out "$RUNS/pgd-5"
$RO train $COMMON --method fgsm-rs --epochs 10 --eps-warmup-epochs 3 --out "$RUNS/fgsm-rs"
$RO train $COMMON --method free --replay 4 --epochs 5 --eps-warmup-epochs 3 --out "$RUNS/free-4"
$RO train $COMMON --method trades --beta 6 --steps 5 --step-size 0.1 --epochs 5 --eps-warmup-epochs 3 --out "$RUNS/trades-5"
# Final models: the fast worst-case suite (APGD-CE, APGD-T) on the first 1,000 test images.
for run in natural pgd-40 pgd-5 fgsm-rs free-4 trades-5; do
    $RO eval "$RUNS/$run" --suite fast --n 1000
done
.venv/bin/python bench/training_curves.py "$RUNS"/* --out "bench/results/train-efficiency/$MODEL"
