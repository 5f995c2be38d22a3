"""What the pipelines read from a run folder: its model on a device, its dataset's entry and test images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from robustopt import data as datasets, distributed
from robustopt._checks import check_count
from robustopt._device import resolve_device
from robustopt.data import formats as data_formats
from robustopt.runs import RUN_FILE, load_run

__all__ = ["attack_setup", "data_info", "load_test_images", "quiet"]


def quiet(_: str) -> None:
    """The echo of ranks other than 0 under torchrun, and of callers that want no lines."""


def attack_setup(run: str | Path, weights: str, device: str) -> tuple[
        Path, distributed.Context, torch.device, nn.Module, dict[str, Any]]:
    """For ``eval_run`` and ``sweep_run``: the run folder, the distributed context, the device, the model on it
    and ``run.json``. Under torchrun every rank attacks its share of the batches and rank 0 writes.

    Raises:
        ValueError: ``run.json`` lacks the data or the threat model of a trained run.
    """
    ctx = distributed.setup()
    dev = ctx.device(resolve_device(device))
    model, info = load_run(run, weights)
    missing = [k for k in ("data", "norm", "eps") if k not in info]
    if missing:
        raise ValueError(f"{Path(run) / RUN_FILE} has no {', '.join(missing)}: it does not describe a trained run; "
                         "train it again (robustopt train --out RUN).")
    return Path(run), ctx, dev, model.to(dev), info


def data_info(info: dict[str, Any]) -> datasets.DatasetInfo:
    """The dataset entry of a run's ``run.json``: a registry dataset, or a data SPEC with its options."""
    if data_formats.is_spec(info["data"]):
        return datasets.spec_info(test_spec(info), **info.get("data_options", {}))
    return datasets.info(info["data"])


def test_spec(info: dict[str, Any]) -> str:
    """The test images of a run on a data SPEC: its ``test_data`` (a training run), else its ``data`` (an evaluation)."""
    return info.get("test_data") or info["data"]


def load_test_images(info: dict[str, Any], limit: int | None, root: str | Path | None, echo: Callable[[str], None],
                stream: torch.device | None = None) -> tuple[torch.Tensor | data_formats.Streamed, torch.Tensor]:
    """The first ``limit`` (>= 1) test images of a run's data, all when None; says so when there are fewer.

    A data SPEC comes as tensors too, or with ``stream`` (a device) as a ``Streamed`` that reads
    each batch when it is attacked, and the labels on that device.
    """
    data = info["data"]
    if limit is not None:
        check_count("limit (--n)", limit)
    if data_formats.is_spec(data):
        data = test_spec(info)
        ds = datasets.load(data, **info.get("data_options", {}))
        if limit is not None and limit > len(ds):
            echo(f"note: --n {limit:,} is more than the {len(ds):,} images of {data}: all {len(ds):,} are used.")
        if stream is None:
            return data_formats.first(ds, limit)
        x = data_formats.Streamed(ds, stream, indices=range(len(ds) if limit is None else min(limit, len(ds))))
        return x, x.labels()
    x, y = datasets.load(data, split="test", root=root)
    if limit is not None and limit > len(x):
        echo(f"note: --n {limit:,} is more than the {len(x):,} test images of {data}: all {len(x):,} are used.")
    return (x, y) if limit is None else (x[:limit], y[:limit])
