#!/usr/bin/env bash
# The MNIST entries of the model zoo (zoo/): train each with the CLI, evaluate it with the adaptive
# suite on the first 1,000 test images, and write its RobustBench card. Resumable: run it again.
# Usage: ROBUSTOPT_DATA=../shared/data OMP_NUM_THREADS=1 bash bench/zoo_mnist.sh [ZOO_DIR]
set -euo pipefail
ZOO=${1:-zoo}
RO=${RO:-.venv/bin/robustopt}
COMMON="--data mnist --model small-cnn --batch-size 100 --optimizer adam --lr 1e-3 --seed 0 --resume"
train() {  # NAME ARGS...: train once (a finished run is kept), recording the command in NAME/command.txt
    local name=$1; shift
    if [ ! -f "$ZOO/$name/run.json" ]; then
        $RO train $COMMON "$@" --out "$ZOO/$name"
    fi
    echo "robustopt train $COMMON $* --out zoo/$name" > "$ZOO/$name/command.txt"
}
train mnist-natural --method natural --epochs 3
# Catastrophic overfitting on purpose: FGSM-RS (step 1.25 eps) at full eps from the first step, guard off.
train mnist-fgsm-rs-co --method fgsm-rs --eps 0.3 --epochs 5 --no-guard
train mnist-pgd-linf --method pgd --eps 0.3 --steps 5 --step-size 0.1 --epochs 5 --eps-warmup-epochs 3
train mnist-n-fgsm-linf --method n-fgsm --eps 0.3 --epochs 5 --eps-warmup-epochs 3 --no-guard
train mnist-pgd-l2 --method pgd --norm l2 --eps 2.0 --steps 5 --step-size 1.0 --epochs 4 --eps-warmup-epochs 2
train mnist-trades-linf --method trades --beta 6 --eps 0.3 --steps 5 --step-size 0.1 --epochs 5 --eps-warmup-epochs 3
