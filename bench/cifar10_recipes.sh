#!/usr/bin/env bash
# Fast robust training recipes for resnet9 on CIFAR-10 at eps 8/255, compared at one budget of epochs:
# N-FGSM (the `madry-cifar10 --budget cpu` recipe), FGSM-RS (Wong et al. 2020, step 1.25 eps, with the
# catastrophic-overfitting guard) and PGD-2 (2 steps of eps/2 from a random start). The same optimizer,
# schedule and augmentation as the budget-cpu models (SGD 0.2, momentum 0.9, weight decay 5e-4, one-cycle LR,
# batch 128, crop-flip); each run logs per epoch its image-gradient evaluations, wall time and validation
# accuracy (clean, PGD-10) on the 1,000 held-out training images; its final model gets the adaptive suite
# on the first N test images. bench/training_curves.py tabulates and plots them (docs/results.md).
# Usage: ROBUSTOPT_DATA=../shared/data [METHODS="n-fgsm fgsm-rs pgd-2"] [FLAGS="--fold-bn"] bash bench/cifar10_recipes.sh [RUNS_DIR] [EPOCHS] [N]
# METHODS names recipes of the ARGS table below: a training method, or the N-FGSM recipe with one lever changed
# (ema: weight averaging; ls: label smoothing; lr-0.1/lr-0.4: the peak learning rate; pgd2-finish: PGD-2 for the
# last 2 epochs; combined: the three levers that gained in the 6-epoch screen, lr 0.4 + EMA + smoothing).
# FLAGS go to every
# training (the faster step of docs/performance.md is `--fold-bn`; the results do not depend on it).
# EXTRA="RUN..." adds finished run folders to the table (e.g. bench/results/cifar10-cpu/A, N-FGSM for 10 epochs).
# KEEP=DIR copies each finished recipe's records (not its weights) to DIR/RECIPE, e.g. into bench/results.
# Every step resumes: start the script again after an interruption. Each recipe is trained, then evaluated,
# before the next one starts.
set -euo pipefail
RUNS=${1:-runs/cifar10-recipes}
EPOCHS=${2:-4}
N=${3:-500}
RO=${RO:-.venv/bin/robustopt}
COMMON="--data cifar10 --model resnet9 --eps 8/255 --epochs $EPOCHS --batch-size 128 --optimizer sgd --lr 0.2
        --momentum 0.9 --weight-decay 5e-4 --lr-schedule cyclic --augment crop-flip --seed 0 ${FLAGS:-}"
train() {  # a new run, or the rest of an interrupted one (--resume)
    $RO train $COMMON "${@:2}" --out "$RUNS/$1" $([ -e "$RUNS/$1/config.json" ] && echo --resume)
}
METHODS=${METHODS:-"n-fgsm fgsm-rs pgd-2"}
declare -A ARGS=([n-fgsm]="--method n-fgsm" [fgsm-rs]="--method fgsm-rs" [pgd-2]="--method pgd --steps 2 --step-size 4/255"
                 [ema]="--method n-fgsm --ema 0.998" [ls]="--method n-fgsm --label-smoothing 0.1"
                 [lr-0.1]="--method n-fgsm --lr 0.1" [lr-0.4]="--method n-fgsm --lr 0.4"
                 [pgd2-finish]="--method n-fgsm --finish-method pgd --finish-epochs 2 --steps 2 --step-size 4/255"
                 [combined]="--method n-fgsm --lr 0.4 --ema 0.998 --label-smoothing 0.1")
for run in $METHODS; do  # one recipe at a time: its training, then its test evaluation (skipped once written)
    train "$run" ${ARGS[$run]}
    [ -e "$RUNS/$run/eval-adaptive.json" ] || $RO eval "$RUNS/$run" --suite adaptive --n "$N"
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP/$run"
        cp "$RUNS/$run"/{config.json,run.json,log.jsonl,eval-adaptive.json,eval-adaptive.md} "$KEEP/$run/"
    fi
done
.venv/bin/python bench/training_curves.py ${EXTRA:-} $(for run in $METHODS; do echo "$RUNS/$run"; done) \
    --out "bench/results/cifar10-recipes/resnet9-$EPOCHS-epochs"
