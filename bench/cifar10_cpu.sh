#!/usr/bin/env bash
# The paper's CIFAR-10 experiment (Table 2) on 2 CPU cores: `robustopt reproduce madry-cifar10 --budget cpu`,
# with its three trainings run side by side (one torch thread each) instead of one after another.
# Usage: ROBUSTOPT_DATA=../shared/data bash bench/cifar10_cpu.sh [OUT]   (results: docs/results.md)
#
# The runs go to OUT (default bench/results/cifar10-cpu, the committed runs of the 15-epoch preset;
# bench/results/cifar10-cpu-10-epochs holds the previous preset's). Every step resumes: start the script
# again after an interruption. STAGE=train stops after the trainings.
set -euo pipefail
OUT=${1:-bench/results/cifar10-cpu}
RO=${RO:-.venv/bin/robustopt}
REPRODUCE="$RO reproduce madry-cifar10 --budget cpu --out $OUT"
# A and A' (resnet9, 15 epochs of N-FGSM at 8/255, seeds 0 and 1), then A_nat (5 natural epochs).
OMP_NUM_THREADS=1 $REPRODUCE --only A &
OMP_NUM_THREADS=1 $REPRODUCE --only "A'" &
wait
$REPRODUCE --only A_nat
[ "${STAGE:-all}" = train ] && exit 0
# The madry suite on all 10,000 test images (white-box and transferred from A' and A_nat), the standard suite
# on the first 1,000, the L-inf sweep 0..16/255 on the first 1,000, the report: reuses the trained runs.
$REPRODUCE
