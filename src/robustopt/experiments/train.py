"""``robustopt train``: train a registry model on a dataset into a run folder, and the named recipes."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from robustopt import data as datasets, distributed, models
from robustopt.data import formats as data_formats
from robustopt._checks import check_count, check_eps, check_input_shape
from robustopt._device import resolve_device
from robustopt._io import atomic_write_json
from robustopt._lock import holding
from robustopt._progress import format_seconds
from robustopt.experiments._inputs import quiet
from robustopt.runs import RUN_FILE, refuse_restart, refuse_resume_of_nothing, resume_point
from robustopt.training import TrainConfig, TrainResult, fit
from robustopt.training.config import resolve_config
from robustopt.training.methods import grad_evals_per_example

__all__ = ["train_run", "TrainPreset", "TRAIN_PRESETS"]


@holding(lambda a: a["out"], "train")  # one process per run folder, created folders removed on failure
def train_run(
    out: str | Path,
    *,
    data: str = "mnist",
    model: str = "madry-mnist",
    test_data: str | None = None,
    image_size: int | None = None,
    skip_bad: bool = False,
    train_size: int | None = None,
    resume: bool = False,
    root: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    config: TrainConfig | None = None,
    **overrides: Any,
) -> Path:
    """Train registry model ``model`` on dataset ``data`` into the run folder ``out``.

    Args:
        out: run folder (created).
        data: dataset name for ``ro.data.load`` (its training split), or a data SPEC (``folder:PATH``,
            ``npz:PATH``: all of its images, streamed batch by batch in an order drawn from ``seed``,
            so that the held-out validation split has every class).
        model: model name for ``ro.models.create``.
        test_data: with a data SPEC, the SPEC of the test images that ``robustopt eval``, ``sweep`` and
            ``report`` attack (required: the training images are no test set); recorded in run.json.
        image_size / skip_bad: folder SPEC options (see ``ro.data.load``), for both SPECs.
        train_size: use only the first N training images (None: all).
        resume: continue the interrupted run in ``out``, which must hold one (its config.json or a checkpoint);
            without it, ``out`` must hold no training checkpoint.
        root: data root.
        progress: show progress bars.
        echo: prints what the run does (None: nothing): where a resumed run continues from,
            a one-line plan with its cost in image-gradient evaluations, and at the end the run
            folder, the final validation accuracies, the time and the next command.
        config: the training configuration (default: ``TrainConfig()``).
        **overrides: ``TrainConfig`` fields that replace those of ``config`` (method, norm, eps, epochs, ...).

    Returns:
        The run folder.

    Raises:
        ValueError: a model built for other images than ``data``'s, a bad configuration
            (e.g. epochs < 1, an eps beyond the [0, 1] box, a device this machine lacks) or a bad ``train_size``.
        TypeError: ``overrides`` names a field TrainConfig does not have.
        FileExistsError: ``out`` holds a training checkpoint and ``resume`` is False.
        FileNotFoundError: ``resume`` is True and ``out`` holds no training.
    """
    out = Path(out)
    options = data_formats.spec_options(image_size, skip_bad)
    if data_formats.is_spec(data):  # recorded with absolute paths: the run works from any folder
        data, test_data = data_formats.absolute(data), _test_spec(test_data)
        info = datasets.spec_info(data, **options)
        _check_same_images(info, datasets.spec_info(test_data, **options))
    elif test_data is not None or options:
        raise ValueError("--test-data, --image-size and --skip-bad apply to folder: and npz: data only; a registry "
                         f"dataset ({data}) brings its own test split.")
    else:
        info = datasets.info(data)
    _check_model_fits_data(model, info)
    cfg = resolve_config(config, overrides)
    check_eps(cfg.threat(), info.shape)  # before anything is printed or loaded (fit warns above the usual)
    if resolve_device(cfg.device).type != "cuda" and cfg.amp:
        raise ValueError(f"--amp (amp=True) needs a CUDA device, got --device {cfg.device}; leave --amp out on a CPU.")
    (refuse_resume_of_nothing if resume else refuse_restart)(out)
    if train_size is not None:
        check_count("train_size (--train-size)", train_size)
    train_data, n = _training_data(data, options, cfg.seed, root, train_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the seed covers the initial weights too
        norm_layer = {"mean": info.mean, "std": info.std} if info.mean else {}
        net = models.create(model, num_classes=info.num_classes, **norm_layer)
    run_info = {"data": data, "model": model, "train_size": train_size, "norm": cfg.norm, "eps": cfg.eps,
                "method": cfg.method, "seed": cfg.seed}
    if test_data is not None:
        run_info.update(test_data=test_data, data_options=options)
    say = echo if echo is not None and distributed.setup().is_main else quiet
    done = 0  # epochs already trained
    if resume:
        message, done = resume_point(out, cfg.epochs)
        say(message)
    if done < cfg.epochs:
        say(_train_plan(model, data, cfg, n, out, done))
    out.mkdir(parents=True, exist_ok=True)
    result = fit(net, train_data, config=cfg, out=out, resume=resume, progress=progress)
    if distributed.setup().is_main:  # under torchrun, rank 0 writes
        atomic_write_json(out / RUN_FILE, run_info)
    for line in _train_summary(result, out, cfg):
        say(line)
    return out


def _check_model_fits_data(model: str, info: datasets.DatasetInfo) -> None:
    """Refuse a registry model built for other images than the dataset's, naming the models that fit."""
    fitting = [m for m in models.names() if models.default_config(m).input_size == info.shape]
    config = models.default_config(model)
    hint = f" Models for these images: {', '.join(fitting) or 'none registered'} (robustopt models list)."
    if data_formats.is_spec(info.name):
        hint += " Or resize folder images with --image-size."
    check_input_shape(f"model {model}" + (f" (built for {config.dataset})" if config.dataset else ""),
                      config.input_size, info.name, info.shape, hint)


def _test_spec(test_data: str | None) -> str:
    """The test SPEC of training on a data SPEC, absolute; refuse none or a registry name."""
    if test_data is None:
        raise ValueError("training on folder: or npz: data needs --test-data SPEC (test_data=): the images "
                         "robustopt eval, sweep and report attack, e.g. --test-data folder:DATA/val. The training "
                         "images are no test set.")
    if not data_formats.is_spec(test_data):
        raise ValueError(f"--test-data must be a folder: or npz: SPEC like --data, got {test_data!r}.")
    return data_formats.absolute(test_data)


def _check_same_images(train: datasets.DatasetInfo, test: datasets.DatasetInfo) -> None:
    """Refuse test images of another shape or other classes than the training images."""
    if train.shape != test.shape or train.classes != test.classes:
        raise ValueError(f"the test images {test.name} ({'x'.join(map(str, test.shape))}, classes "
                         f"{', '.join(test.classes)}) do not match the training images {train.name} "
                         f"({'x'.join(map(str, train.shape))}, classes {', '.join(train.classes)}); pass test "
                         "images of the same size and the same class folders (or the same labels).")


def _training_data(data: str, options: dict[str, Any], seed: int, root: str | Path | None,
                   train_size: int | None) -> tuple[tuple[torch.Tensor, torch.Tensor] | data_formats.Streamed, int]:
    """The first ``train_size`` training images (all when None) and their number.

    A registry dataset's training split comes as tensors; a data SPEC streamed, in an order drawn
    from ``seed`` (folders list their classes one after the other; the validation split is the end
    of this order).

    Raises:
        ValueError: ``train_size`` exceeds the training images.
    """
    if data_formats.is_spec(data):
        ds = datasets.load(data, **options)
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
        n, cut = len(ds), lambda k: data_formats.Streamed(ds, indices=order[:k].tolist())
    else:
        x, y = datasets.load(data, split="train", root=root)
        n, cut = len(x), lambda k: (x[:k], y[:k])
    if train_size is None:
        return cut(n), n
    if train_size > n:  # else run.json would record a size the run did not train on
        raise ValueError(f"train_size (--train-size) {train_size:,} exceeds the {n:,} training images of "
                         f"{data}; pass at most {n:,}, or leave it out for all of them.")
    return cut(train_size), train_size


def _train_plan(model: str, data: str, cfg: TrainConfig, n: int, out: Path, done: int = 0) -> str:
    """One line: what ``train_run`` will do (the epochs after ``done``) and its cost in image-gradient evaluations."""
    n_val = cfg.validation_size(n)
    n_train = n - n_val
    steps = math.ceil(n_train / cfg.batch_size)
    what = f"{cfg.method} training of {model} on {data}"
    if cfg.method != "natural":
        what += f" at {cfg.threat()}"
    left = cfg.epochs - done
    epochs = f"{left} epoch{'s' * (left != 1)}" + (f" (epochs {done + 1}-{cfg.epochs})" if done else "")
    if cfg.finish_method:
        what += f", its last {cfg.finish_epochs} epoch{'s' * (cfg.finish_epochs != 1)} {cfg.finish_method}"
    per_epoch = [grad_evals_per_example(cfg.method_at(e), cfg) for e in range(done, cfg.epochs)]
    val_steps = cfg.val_attack_steps if cfg.eps > 0 else 0
    if None in per_epoch:
        unknown = next(cfg.method_at(e) for e, c in zip(range(done, cfg.epochs), per_epoch) if c is None)
        cost = f"cost unknown (method {unknown!r} declares no grad_evals)"
    else:
        per = sorted(set(per_epoch), key=per_epoch.index)
        training = (f"{left} x {n_train:,} x {per[0]}" if len(per) == 1 else
                    " + ".join(f"{per_epoch.count(c)} x {n_train:,} x {c}" for c in per))
        total = n_train * sum(per_epoch) + left * n_val * val_steps
        cost = (f"about {_count(total)} image-gradient evaluations ({training} for training"
                + (f" + {left} x {n_val:,} x {val_steps} for validation" if n_val and val_steps else "") + ")")
    return (f"plan: {what}: {epochs} of {n_train:,} images ({steps:,} steps of batch {cfg.batch_size}"
            f"{f'; {n_val:,} more held out for validation' if n_val else ''}); {cost}; run folder {out}")


def _count(n: int) -> str:
    return f"{n:,}" if n < 10**7 else f"{n:.2e}"


def _train_summary(result: TrainResult, out: Path, cfg: TrainConfig) -> list[str]:
    """Where the run was saved, its final validation accuracies, the time, and the command to run next."""
    history = result.history
    lines = [f"saved: {out} ({len(history)} epoch{'s' * (len(history) != 1)}, "
             f"{format_seconds(result.seconds)} in this call)"]
    if result.stopped:
        lines.append(f"stopped early ({result.stopped}) after epoch {len(history)} of {cfg.epochs}; "
                     "the saved weights are the restored ones (see log.jsonl).")
    last = history[-1] if history else {}
    if last.get("val_clean_acc") is None:
        lines.append("final validation accuracy: none (no validation split, val_size=0)")
    else:
        robust = last.get("val_robust_acc")
        robust = ("not measured (val_attack_steps=0)" if robust is None else
                  f"{100 * robust:.1f}% (PGD-{cfg.val_attack_steps} at {cfg.threat()})")
        lines.append(f"final validation accuracy: clean {100 * last['val_clean_acc']:.1f}%, robust {robust}")
    lines.append(f"next: robustopt eval {shlex.quote(str(out))}   "
                 "(the paper's attack table; --suite standard for the AutoAttack-grade worst case)")
    return lines


@dataclass(frozen=True)
class TrainPreset:
    """A named recipe of ``robustopt train --preset NAME``: the dataset, the model and the configuration.

    Args:
        data: dataset name.
        model: registry model name.
        config: the training configuration; options given explicitly override its fields.
        summary: one line for ``robustopt train --help``.
    """

    data: str
    model: str
    config: TrainConfig
    summary: str


# `robustopt train --preset NAME` (explicit options override the recipe's fields).
TRAIN_PRESETS: dict[str, TrainPreset] = {
    # Fast-AT (Wong, Rice & Kolter 2020): preact-resnet18, 15 epochs of FGSM-RS (step 1.25 eps), SGD with
    # the one-cycle LR 0 -> 0.2 at 40% of the epochs -> 0, batch 128, crop-flip, mixed precision: a GPU recipe.
    "fast-at-cifar10": TrainPreset(
        data="cifar10", model="preact-resnet18",
        config=TrainConfig(method="fgsm-rs", norm="linf", eps=8 / 255, epochs=15, batch_size=128, optimizer="sgd",
                           lr=0.2, momentum=0.9, weight_decay=5e-4, lr_schedule="piecewise", augment="crop-flip",
                           amp=True, device="cuda"),
        summary="Fast-AT, preact-resnet18, 15 epochs of FGSM-RS, AMP on CUDA"),
}
