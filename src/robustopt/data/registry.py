"""The dataset registry: what a dataset is (:class:`DatasetInfo`), and ``register_dataset`` to add one.

A dataset is one call: its constants (shape, classes, mean/std, sizes), its official files with
their checksums, and the reader that turns the verified files of a split into arrays. Nothing
else in robustopt names a dataset: the loader, ``robustopt data list|fetch``, the evaluation
and the report read the registered fields.

Example:
    >>> register_dataset("kmnist", reader=idx_reader, shape=(1, 28, 28), classes=KANA, mean=(0.19,),
    ...                  std=(0.35,), files=KMNIST_FILES, train_size=60000, test_size=10000)
    >>> info("kmnist").folder
    'kmnist'
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustopt._registry import Registry
from robustopt.data import formats

__all__ = ["DatasetInfo", "FileInfo", "Reader", "DatasetNotFoundError", "DatasetCorruptError", "DATASETS",
           "register_dataset", "info", "names", "spec_info", "corrupt"]

SPLITS = ("train", "test")
MADRY_TABLES = ("mnist", "cifar10")  # the datasets of Madry et al. (2018)'s Tables 1 and 2


class DatasetNotFoundError(FileNotFoundError):
    """Files of a dataset are missing (and were not, or could not be, downloaded)."""


class DatasetCorruptError(ValueError):
    """A dataset file exists but is not the official file (wrong checksum or format)."""


@dataclass(frozen=True)
class FileInfo:
    """One official file of a dataset.

    Attributes:
        path: location relative to the dataset folder, with "/" separators.
        split: "train" or "test"; "" for a download archive.
        kind: what the file holds, for its reader: "images", "labels", "batch" (records of
            label and pixels), "mat" (MATLAB arrays) or "archive".
        size: size in bytes of the official file (None if not known).
        sha256: hex sha256 of the official file (None: use ``md5``).
        md5: hex md5 published by the source.
        urls: official source first, then mirrors; empty for files that come
            out of :attr:`DatasetInfo.archive`.
        also_accept: (size, sha256) of known lossless repacks with the same
            content, e.g. Debian's copies whose gzip header was rewritten.
    """

    path: str
    split: str
    kind: str
    size: int | None
    sha256: str | None
    md5: str | None = None
    urls: tuple[str, ...] = ()
    also_accept: tuple[tuple[int, str], ...] = ()

    @property
    def known_hash(self) -> str:
        """The checksum in pooch's ``"alg:hex"`` form (sha256 when known)."""
        return f"sha256:{self.sha256}" if self.sha256 else f"md5:{self.md5}"


Reader = Callable[["DatasetInfo", str, Mapping[FileInfo, Path]], tuple[np.ndarray, np.ndarray]]
"""``reader(ds, split, paths) -> (images, labels)``: the files of one split (verified, in registry order;
empty for a shipped dataset) parsed into uint8 images (N x C x H x W, or any shape of that size) and
uint8 labels (N,). A file that cannot be parsed raises :class:`DatasetCorruptError` (see :func:`corrupt`)."""


@dataclass(frozen=True)
class DatasetInfo:
    """Registry entry of a dataset.

    Attributes:
        name: registry name, e.g. "mnist".
        num_classes: number of classes; labels are 0..num_classes-1.
        shape: (C, H, W) of one image.
        mean: per-channel mean of the training images, pixels in [0, 1].
        std: per-channel standard deviation, same convention.
        files: the official files, all splits.
        archive: the file to download when ``files`` come out of an archive.
        train_size: number of training examples.
        test_size: number of test examples.
        classes: class names in label order.
        folder: sub-folder of the data root ("" for a shipped dataset).
        reader: parses the files of a split (see :data:`Reader`); None for a data SPEC.
        asset: for a dataset shipped inside the package, its file relative to the
            ``robustopt`` package ("assets/mnist-mini.npz"); "" otherwise.
        madry_table: the table of Madry et al. (2018) that results on this dataset compare
            with, a key of ``robustopt.suites.MADRY_REFERENCE`` ("mnist": Table 1,
            "cifar10": Table 2), or "" for none.
        fallback_dirs: system folders used when the root lacks the files.
        homepage: official page.
        license: license or terms of use.
    """

    name: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: tuple[FileInfo, ...] = ()
    archive: FileInfo | None = None
    train_size: int = 0
    test_size: int = 0
    classes: tuple[str, ...] = ()
    folder: str = ""
    reader: Reader | None = field(default=None, repr=False)
    asset: str = ""
    madry_table: str = ""
    fallback_dirs: tuple[str, ...] = ()
    homepage: str = ""
    license: str = ""

    @property
    def shipped(self) -> bool:
        """True for a dataset stored inside the package (no download)."""
        return bool(self.asset)

    def split_files(self, split: str) -> tuple[FileInfo, ...]:
        """The files that hold ``split``."""
        return tuple(f for f in self.files if f.split == split)

    def num_examples(self, split: str) -> int:
        """Number of examples in ``split`` ("train" or "test")."""
        return {"train": self.train_size, "test": self.test_size}[split]


DATASETS: Registry[DatasetInfo] = Registry("dataset")
_ALIASES: dict[str, str] = {}  # other spellings (lower case, "-" for "_") -> registry name


def register_dataset(
    name: str,
    *,
    reader: Reader,
    shape: Sequence[int],
    classes: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    train_size: int,
    test_size: int,
    files: Sequence[FileInfo] = (),
    archive: FileInfo | None = None,
    folder: str | None = None,
    asset: str = "",
    madry_table: str = "",
    aliases: Sequence[str] = (),
    fallback_dirs: Sequence[str] = (),
    homepage: str = "",
    license: str = "",  # noqa: A002  (the field's name)
) -> DatasetInfo:
    """Add a dataset to the registry: ``ro.data.load(name)``, ``robustopt data list|fetch`` and ``--data`` know it.

    Args:
        name: registry name: lower case, "-" between words.
        reader: parses the verified files of one split into uint8 arrays (see :data:`Reader`);
            ``idx_reader`` and ``each_file(parse)`` cover the usual layouts.
        shape: (C, H, W) of one image.
        classes: class names in label order (their number is ``num_classes``).
        mean / std: per-channel statistics of the training images, pixels in [0, 1].
        train_size / test_size: number of examples of each split.
        files: the official files with their sizes and checksums (none for a shipped dataset).
        archive: the download whose members are ``files``, when they come as one archive.
        folder: sub-folder of the data root (default: ``name``; "" for a shipped dataset).
        asset: a file shipped inside the ``robustopt`` package instead of ``files``.
        madry_table: "mnist" or "cifar10" when Madry et al.'s table of that dataset applies.
        aliases: other spellings accepted by :func:`info` ("cifar-10").
        fallback_dirs: system folders searched after the root.
        homepage / license: shown to users.

    Returns:
        The registered :class:`DatasetInfo`.

    Raises:
        TypeError: ``reader`` is not callable.
        ValueError: a taken name or alias, neither ``files`` nor ``asset`` (or both), a file of
            another split, sizes and statistics that do not fit ``shape`` and ``classes``, or an
            unknown ``madry_table``.
    """
    if not callable(reader):
        raise TypeError(f"reader of dataset {name!r} must be callable (ds, split, paths) -> (images, labels).")
    files = tuple(files)
    if bool(files) == bool(asset):
        raise ValueError(f"dataset {name!r}: give either files=(FileInfo, ...) or asset='assets/FILE', not both.")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"dataset {name!r}: shape must be (C, H, W) of positive sizes, got {shape}.")
    if len(tuple(mean)) != shape[0] or len(tuple(std)) != shape[0]:
        raise ValueError(f"dataset {name!r}: mean and std need one value per channel ({shape[0]}).")
    if len(classes) < 2 or min(train_size, test_size) < 0:
        raise ValueError(f"dataset {name!r}: needs at least two classes and non-negative split sizes.")
    if madry_table not in ("", *MADRY_TABLES):
        raise ValueError(f"dataset {name!r}: madry_table must be one of {MADRY_TABLES} or '' (none), "
                         f"got {madry_table!r}.")
    bad = [f.path for f in files if f.split not in SPLITS]
    if bad:
        raise ValueError(f"dataset {name!r}: files {bad} have no split; set split='train' or 'test'.")
    keys = [_key(a) for a in aliases]
    taken = [k for k in keys if k in _ALIASES and _ALIASES[k] != name or k in DATASETS]
    if taken:
        raise ValueError(f"dataset {name!r}: the aliases {taken} are taken; choose other spellings.")
    ds = DatasetInfo(
        name=name, num_classes=len(classes), shape=shape, mean=tuple(mean), std=tuple(std), files=files,
        archive=archive, train_size=train_size, test_size=test_size, classes=tuple(classes),
        folder=("" if asset else name) if folder is None else folder, reader=reader, asset=asset,
        madry_table=madry_table, fallback_dirs=tuple(fallback_dirs), homepage=homepage, license=license)
    DATASETS.register(name, ds)
    _ALIASES.update(dict.fromkeys(keys, name))
    return ds


def names() -> list[str]:
    """Names of the known datasets, for ``robustopt data list``.

    Returns:
        The registry names, e.g. ``["mnist-mini", "mnist", "fashion-mnist", "cifar10"]``.
    """
    return DATASETS.names()


def info(name: str) -> DatasetInfo:
    """Registry entry of a dataset (classes, shape, mean/std, files).

    Args:
        name: dataset name; case, "_" vs "-" and a few aliases ("cifar-10") are accepted.
            A data SPEC (``folder:PATH``, ``npz:PATH``) gives :func:`spec_info`.

    Returns:
        The frozen :class:`DatasetInfo`.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: unknown name; the message lists the known names.
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string such as 'mnist', got {type(name).__name__}.")
    if formats.is_spec(name):
        return spec_info(name)
    key = _key(name)
    key = _ALIASES.get(key, _ALIASES.get(key.replace("-", ""), key))
    if key in DATASETS:
        return DATASETS[key]
    close = difflib.get_close_matches(key, [*DATASETS, *_ALIASES], n=1, cutoff=0.6)
    hint = f" Did you mean {_ALIASES.get(close[0], close[0])!r}?" if close else ""
    raise ValueError(f"Unknown dataset {name!r}.{hint} Known datasets: {', '.join(DATASETS)}.")


def spec_info(spec: str, *, image_size: int | None = None, skip_bad: bool = False) -> DatasetInfo:
    """A :class:`DatasetInfo` for a data SPEC (``folder:PATH``, ``npz:PATH``): its classes, shape and size.

    Its one split is "test"; mean/std are empty (the model carries its own normalization).
    The options are those of ``load``.
    """
    ds = formats.open_dataset(spec, image_size=image_size, skip_bad=skip_bad)
    return DatasetInfo(name=spec, num_classes=ds.num_classes, shape=tuple(ds.shape), mean=(), std=(),
                       test_size=len(ds), classes=tuple(ds.classes))


def corrupt(ds: DatasetInfo, path: Path, why: str) -> DatasetCorruptError:
    """The error for a file of ``ds`` at ``path`` that is not the official one, saying what to do."""
    return DatasetCorruptError(
        f"{path} is not the official file of {ds.name!r}: {why}. Delete it and fetch it again "
        f"(robustopt data fetch {ds.name}, or copy the official file there by hand)."
    )


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")
