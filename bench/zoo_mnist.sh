#!/usr/bin/env bash
# The MNIST entries of the model zoo (zoo/): train each with the CLI, evaluate it with the adaptive
# suite on the first 1,000 test images, and write its RobustBench card. Resumable: run it again.
# Usage: ROBUSTOPT_DATA=../shared/data OMP_NUM_THREADS=1 bash bench/zoo_mnist.sh [ZOO_DIR] [NAME ...]
# (only the entries NAME ...; run several such commands side by side for different entries)
set -euo pipefail
ZOO=${1:-zoo}
shift || true
ONLY=" $* "
RO=${RO:-.venv/bin/robustopt}
COMMON="--data mnist --model small-cnn --batch-size 100 --optimizer adam --lr 1e-3 --seed 0"
train() {  # NAME ARGS...: train once (a finished run is kept), recording the command in NAME/command.txt
    local name=$1; shift
    [ "$ONLY" = "  " ] || [[ "$ONLY" == *" $name "* ]] || return 0
    if [ ! -f "$ZOO/$name/run.json" ]; then  # --resume continues an interrupted training
        $RO train $COMMON "$@" --out "$ZOO/$name" $([ -f "$ZOO/$name/config.json" ] && echo --resume)
    fi
    echo "robustopt train $COMMON $* --out zoo/$name" > "$ZOO/$name/command.txt"
}
train mnist-natural --method natural --epochs 3
# Catastrophic overfitting on purpose: FGSM-RS (step 1.25 eps) at full eps from the first step, guard off.
train mnist-fgsm-rs-co --method fgsm-rs --eps 0.3 --epochs 5 --no-guard
# The robust entries: 3 epochs, eps ramped over the first 2 (at full eps from the start small networks stay at chance).
train mnist-pgd-linf --method pgd --eps 0.3 --steps 3 --step-size 0.15 --epochs 3 --eps-warmup-epochs 2
# N-FGSM with its guard (on by default): at full eps (noise and step reach 3 eps = 0.9) small-cnn falls to chance,
# and the guard keeps the last epoch before the collapse.
train mnist-n-fgsm-linf --method n-fgsm --eps 0.3 --epochs 3 --eps-warmup-epochs 2
train mnist-pgd-l2 --method pgd --norm l2 --eps 2.0 --steps 3 --step-size 1.5 --epochs 3 --eps-warmup-epochs 2
train mnist-trades-linf --method trades --beta 6 --eps 0.3 --steps 3 --step-size 0.15 --epochs 3 --eps-warmup-epochs 2
