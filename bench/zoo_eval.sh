#!/usr/bin/env bash
# Evaluate zoo entries in place with the adaptive suite (1,000 MNIST / 500 CIFAR-10 test images); resumable.
# Then `python bench/zoo_build.py cards` makes their cards and docs/zoo.md.
# Usage: ROBUSTOPT_DATA=../shared/data OMP_NUM_THREADS=1 bash bench/zoo_eval.sh NAME [NAME ...]
set -euo pipefail
RO=${RO:-.venv/bin/robustopt}
for name in "$@"; do
    # randomized entries: the suite switches to EOT (20 draws per gradient), so 200 points
    case $name in cifar10-*) n=500 ;; *-noise) n=200 ;; *) n=1000 ;; esac
    [ -f "zoo/$name/eval-adaptive.json" ] || $RO eval "zoo:$name" --suite adaptive --n $n --out "zoo/$name"
done
