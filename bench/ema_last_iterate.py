"""The last iterate of a weight-averaged run (``robustopt train --ema``) as a run folder of its own.

A run with ``--ema`` saves the average as its model; the weights it trained (the last iterate)
stay in the checkpoint's tensors, to resume. Averaging changes no step of the training (it draws no
random number), so those weights are exactly what the same run without ``--ema`` ends with: one
training gives both recipes. This writes them to OUT as a finished run folder that ``robustopt
eval`` and ``bench/training_curves.py`` read. OUT's ``config.json`` is the run's with ``ema_decay``
0 (the recipe those weights come from); its ``log.jsonl`` keeps the training cost per epoch and
drops the validation accuracies, which were measured on the average.

    .venv/bin/python bench/ema_last_iterate.py runs/cifar10-15/ema runs/cifar10-15/n-fgsm
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

if not __package__:  # run as `python bench/ema_last_iterate.py`: import bench/ as a package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.harness import log, parser  # noqa: E402
from robustopt import checkpoint  # noqa: E402
from robustopt.runs import CHECKPOINT_NAME, CONFIG_NAME, LOG_NAME, RUN_FILE, check_run, read_config, read_log  # noqa: E402
from robustopt.training.state import trained_weights  # noqa: E402

VALIDATION = ("val_clean_acc", "val_robust_acc")


def write_last_iterate(run: Path, out: Path) -> Path:
    """Write the trained weights of the weight-averaged ``run`` to the run folder ``out``; returns ``out``.

    Raises:
        ValueError: ``run`` has no weight average, or ``out`` already holds a run.
    """
    run = check_run(run)
    config = read_config(run)
    if not config.get("ema_decay"):
        raise ValueError(f"{run} was trained without --ema: its model is already the last iterate.")
    if (out / RUN_FILE).exists():
        raise ValueError(f"{out} already holds a run; remove it or pick another folder.")
    model, meta = checkpoint.load(run / CHECKPOINT_NAME)
    model.load_state_dict(trained_weights(checkpoint.load_tensors(run / CHECKPOINT_NAME)))
    out.mkdir(parents=True, exist_ok=True)
    config["ema_decay"] = 0.0
    checkpoint.save(out / CHECKPOINT_NAME, model, config=config,
                    extra={"last_iterate_of": str(run), "epoch": (meta.get("extra") or {}).get("epoch")})
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    epochs = [{k: (None if k in VALIDATION else v) for k, v in row.items()} for row in read_log(run) or []]
    (out / LOG_NAME).write_text("".join(json.dumps(row) + "\n" for row in epochs))
    shutil.copyfile(run / RUN_FILE, out / RUN_FILE)  # last: it marks the folder as a finished run
    return out


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("run", type=Path, help="a finished run trained with --ema")
    p.add_argument("out", type=Path, help="the new run folder for its last iterate")
    args = p.parse_args(argv)
    try:
        log(f"written: {write_last_iterate(args.run, args.out)}")
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
