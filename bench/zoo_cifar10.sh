#!/usr/bin/env bash
# The trained CIFAR-10 entries of the model zoo (zoo/) that the CIFAR-10 reproduction does not provide:
# FGSM-RS, TRADES and PGD under L2 eps 0.5, each on resnet9 with the recipe of the `madry-cifar10 --budget cpu`
# models (SGD 0.2, momentum 0.9, weight decay 5e-4, one-cycle LR, batch 128, crop-flip, --fold-bn) for EPOCHS
# epochs (default 6, the recipe screen's budget: bench/cifar10_recipes.sh). Each entry is trained, then
# evaluated with the adaptive suite on the first 500 test images (bench/zoo_eval.sh), before the next starts.
# Resumable: run it again. Then `python bench/zoo_build.py cards` makes their cards and docs/zoo.md.
# Usage: ROBUSTOPT_DATA=../shared/data OMP_NUM_THREADS=1 bash bench/zoo_cifar10.sh [EPOCHS] [NAME ...]
set -euo pipefail
EPOCHS=${1:-6}
shift || true
ONLY=" $* "
RO=${RO:-.venv/bin/robustopt}
COMMON="--data cifar10 --model resnet9 --epochs $EPOCHS --batch-size 128 --optimizer sgd --lr 0.2 --momentum 0.9
        --weight-decay 5e-4 --lr-schedule cyclic --augment crop-flip --seed 0 --fold-bn"
entry() {  # NAME ARGS...: train once (a finished run is kept; --resume continues an interrupted one), then evaluate
    local name=$1; shift
    [ "$ONLY" = "  " ] || [[ "$ONLY" == *" $name "* ]] || return 0
    if [ ! -f "zoo/$name/run.json" ]; then
        $RO train $COMMON "$@" --out "zoo/$name" $([ -f "zoo/$name/config.json" ] && echo --resume)
    fi
    echo "robustopt train $(echo $COMMON) $* --out zoo/$name" > "zoo/$name/command.txt"
    .venv/bin/python bench/zoo_build.py setup > /dev/null  # its entry.json: `robustopt eval zoo:NAME` reads it
    bash bench/zoo_eval.sh "$name"
}
# FGSM-RS (Wong et al. 2020): random start, one step of 1.25 eps; the catastrophic-overfitting guard on (default).
entry cifar10-fgsm-rs-linf --method fgsm-rs --eps 8/255
# TRADES (Zhang et al. 2019), beta 6, its KL attack with 2 steps of eps/2.
entry cifar10-trades-linf --method trades --beta 6 --eps 8/255 --steps 2 --step-size 4/255
# PGD under L2 eps 0.5 (the field's usual CIFAR-10 L2 radius), 2 steps of eps/2 from a random start.
entry cifar10-pgd-l2 --method pgd --norm l2 --eps 0.5 --steps 2 --step-size 0.25
