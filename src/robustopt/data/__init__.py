"""Datasets: MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100, SVHN, the shipped offline subset mnist-mini, your own.

Images come back as float32 tensors in [0, 1], NCHW; labels as int64. Nothing is
normalized here: models carry the dataset's ``mean``/``std`` (see :func:`info`)
in their own Normalize layer.

Example:
    >>> x, y = load("mnist", split="test")   # x: (10000, 1, 28, 28) in [0, 1]; y: (10000,) int64

The package, one job per module:

* :mod:`~robustopt.data.registry`: :class:`DatasetInfo` and :func:`register_dataset`, the one call
  that adds a dataset; :mod:`~robustopt.data.builtin` registers the datasets above.
* :mod:`~robustopt.data.files`: parsers of the official files (IDX, CIFAR binary, SVHN MAT-files)
  and the readers built on them. They check formats, not checksums.
* :mod:`~robustopt.data.download`: the data root (``root``, else ``$ROBUSTOPT_DATA``, else a user
  cache), checksum verification, downloads with pooch, and errors that say where to put files.
* :mod:`~robustopt.data.formats`: your own images, ``folder:PATH`` and ``npz:PATH``, read item by item.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from robustopt.data import builtin  # noqa: F401  (registers the built-in datasets)
from robustopt.data import formats
from robustopt.data.download import (ENV_VAR, HASH_LIMIT, default_root, ensure_files, fetch, locate, search_folders,
                                     status)
from robustopt.data.files import each_file, idx_reader, read_cifar_batch, read_idx
from robustopt.data.registry import (SPLITS, DatasetCorruptError, DatasetInfo, DatasetNotFoundError, FileInfo, info,
                                     names, register_dataset, spec_info)

__all__ = [
    "DatasetInfo",
    "FileInfo",
    "DatasetNotFoundError",
    "DatasetCorruptError",
    "ENV_VAR",
    "load",
    "fetch",
    "info",
    "names",
    "register_dataset",
    "status",
    "search_folders",
    "locate",
    "default_root",
    "read_idx",
    "read_cifar_batch",
    "idx_reader",
    "each_file",
    "spec_info",
]


def load(
    name: str,
    split: str = "test",
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    image_size: int | None = None,
    skip_bad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset split as tensors, or open your own images as a dataset read item by item.

    Args:
        name: a registered dataset (:func:`names`): "mnist", "fashion-mnist", "cifar10"
            (official binary version), "cifar100", "svhn", or "mnist-mini" (5000 train /
            1000 test real MNIST images shipped in the package; ``root`` and ``download``
            are ignored for it). Or a data SPEC,
            ``folder:PATH`` (ImageFolder) or ``npz:PATH`` (arrays x, y): then a
            map-style ``torch.utils.data.Dataset`` of ``(image, label)`` comes back
            (see :mod:`robustopt.data.formats`), nothing is read yet, and ``split``,
            ``root`` and ``download`` are ignored. Wrap it in a ``DataLoader`` or pass it
            to ``ro.evaluate`` as it is: it is read batch by batch.
        split: "train" or "test".
        root: data root (default: ``$ROBUSTOPT_DATA``, else the user cache).
        download: fetch missing files from the official source. With False,
            missing files raise at once without touching the network.
        image_size: folder SPEC only: resize (short side) and center-crop to this size.
        skip_bad: folder SPEC only: leave out unreadable images (``dataset.skipped``).

    Returns:
        ``(x, y)``: x float32 in [0, 1] of shape (N, C, H, W) (MNIST: N,1,28,28;
        CIFAR-10: N,3,32,32); y int64 of shape (N,).

    Raises:
        ValueError: unknown name or split.
        DatasetNotFoundError (a FileNotFoundError): files missing and not
            downloadable; the message says which files to put where.
        DatasetCorruptError (a ValueError): a file is not the official one.
    """
    if formats.is_spec(name):
        return formats.open_dataset(name, image_size=image_size, skip_bad=skip_bad)  # type: ignore[return-value]
    if image_size is not None or skip_bad:
        raise ValueError("image_size (--image-size) and skip_bad (--skip-bad) apply to folder: data only.")
    ds = info(name)
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}; got {split!r}.")
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r}.")
    paths = {} if ds.shipped else ensure_files(ds, ds.split_files(split), default_root(root), download)[1]
    images, labels = ds.reader(ds, split, paths)
    _check_arrays(ds, split, images, labels)
    x = torch.from_numpy(images).reshape(-1, *ds.shape).to(torch.float32).div_(255.0).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y




def _check_arrays(ds: DatasetInfo, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Shapes, dtypes and label range against the registry; anything else means a bad file."""
    n = ds.num_examples(split)
    problems = []
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        problems.append(f"dtypes {images.dtype}/{labels.dtype}, expected uint8/uint8")
    if tuple(images.shape[-2:]) != ds.shape[-2:] or images.size != n * int(np.prod(ds.shape)):
        problems.append(f"images of shape {tuple(images.shape)}, expected {n} x {ds.shape}")
    if labels.shape != (n,):
        problems.append(f"labels of shape {tuple(labels.shape)}, expected ({n},)")
    elif labels.size and int(labels.max()) >= ds.num_classes:
        problems.append(f"label {int(labels.max())} outside 0..{ds.num_classes - 1}")
    if problems:
        where = f"the shipped {ds.asset.rpartition('/')[2]}" if ds.shipped else f"the {split} files of {ds.name!r}"
        raise DatasetCorruptError(f"Unexpected content in {where}: {'; '.join(problems)}. "
                                  f"Delete the files and fetch them again (robustopt data fetch {ds.name}).")

