"""Datasets: MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100, SVHN and the shipped offline subset mnist-mini.

Images come back as float32 tensors in [0, 1], NCHW; labels as int64. Nothing is
normalized here: models carry the dataset's ``mean``/``std`` (see :func:`info`)
in their own Normalize layer.

Example:
    >>> x, y = load("mnist", split="test")   # x: (10000, 1, 28, 28) in [0, 1]; y: (10000,) int64

Where the files live. The root is the ``root`` argument, else ``$ROBUSTOPT_DATA``,
else a user cache folder (``pooch.os_cache("robustopt")``). Under it::

    ROOT/mnist/{train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
                t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz}
    ROOT/fashion-mnist/   the same four names (when ROOT lacks them, the folder
                          /usr/share/datasets/fashion-mnist of Debian's package
                          dataset-fashion-mnist is used if it holds them)
    ROOT/cifar10/cifar-10-batches-bin/{data_batch_1..5, test_batch}.bin
    ROOT/cifar100/cifar-100-binary/{train, test}.bin
    ROOT/svhn/{train, test}_32x32.mat

Missing files are downloaded from the official source (then mirrors) with pooch,
with a progress bar. pooch writes into a temporary file beside the target and
moves it into place only once its checksum matches, so a failed or interrupted
download leaves no partial file; the error then lists the exact paths to fill by
hand. CIFAR-10 comes as one archive that is unpacked into a temporary folder;
the ``.bin`` files are checked, moved into place, and the downloaded archive is
deleted. Nothing else is written to disk.

Verification. Every file is checked against the sha256 in the registry below
(size first, then the full hash) before it is read. The result is remembered
for the life of the process, keyed by (path, size, mtime), so a second load does
not re-hash 180 MB and a replaced file is checked again. Only files whose hash
is known are accepted: there is no switch to skip the check. To read other
files in these formats, call :func:`read_idx` or :func:`read_cifar_batch`
directly; they parse and validate the format but do not check hashes.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import io
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from robustopt import data_files, data_formats

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
    "status",
    "search_folders",
    "locate",
    "default_root",
    "read_idx",
    "read_cifar_batch",
    "spec_info",
]

ENV_VAR = "ROBUSTOPT_DATA"
HASH_LIMIT = 64 * 2**20  # bytes: `data list` hashes a dataset's files up to this total (MNIST 11 MB, CIFAR-10 180 MB)
SPLITS = ("train", "test")


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
        kind: "images", "labels", "batch" (CIFAR records) or "archive".
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
        layout: "idx" (gzip IDX files), "cifar-bin" or "npz" (shipped).
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
    layout: str = "idx"
    fallback_dirs: tuple[str, ...] = ()
    homepage: str = ""
    license: str = ""

    @property
    def shipped(self) -> bool:
        """True for a dataset stored inside the package (no download)."""
        return self.layout == "npz"

    def split_files(self, split: str) -> tuple[FileInfo, ...]:
        """The files that hold ``split``."""
        return tuple(f for f in self.files if f.split == split)

    def num_examples(self, split: str) -> int:
        """Number of examples in ``split`` ("train" or "test")."""
        return {"train": self.train_size, "test": self.test_size}[split]


# --- registry ---------------------------------------------------------------------------

_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
_DIGITS = tuple(str(i) for i in range(10))


def _idx_files(
    bases: tuple[str, ...], rows: list[tuple[str, str, str, int, str, str, tuple[tuple[int, str], ...]]]
) -> tuple[FileInfo, ...]:
    return tuple(
        FileInfo(name, split, kind, size, sha, md5, tuple(b + name for b in bases), alt)
        for name, split, kind, size, sha, md5, alt in rows
    )


_MNIST = DatasetInfo(
    name="mnist",
    num_classes=10,
    shape=(1, 28, 28),
    mean=(0.1307,),
    std=(0.3081,),
    # sha256/md5 of the official files (the md5 are the published ones).
    files=_idx_files(_MNIST_URLS, [
        ("train-images-idx3-ubyte.gz", "train", "images", 9912422,
         "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", "f68b3c2dcbeaaa9fbdd348bbdeb94873", ()),
        ("train-labels-idx1-ubyte.gz", "train", "labels", 28881,
         "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", "d53e105ee54ea40749a09fcbcd1e9432", ()),
        ("t10k-images-idx3-ubyte.gz", "test", "images", 1648877,
         "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", "9fb629c4189551a2d022fa330f9573f3", ()),
        ("t10k-labels-idx1-ubyte.gz", "test", "labels", 4542,
         "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", "ec29112dd5afa0611ce80d1b7f02629c", ()),
    ]),
    train_size=60000,
    test_size=10000,
    classes=_DIGITS,
    folder="mnist",
    homepage="http://yann.lecun.com/exdb/mnist/",
    license="CC BY-SA 3.0 (Yann LeCun, Corinna Cortes, Christopher J.C. Burges)",
)

_FASHION = DatasetInfo(
    name="fashion-mnist",
    num_classes=10,
    shape=(1, 28, 28),
    mean=(0.2860,),
    std=(0.3530,),
    # Official files: md5 as published in the zalandoresearch/fashion-mnist README;
    # sha256 of the files with those md5. Debian's dataset-fashion-mnist
    # (0.0~git20200523.55506a9-1) ships the same deflate streams with a rewritten
    # gzip header (no file name, new mtime), hence different bytes: also accepted.
    files=_idx_files(_FASHION_URLS, [
        ("train-images-idx3-ubyte.gz", "train", "images", 26421880,
         "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         ((26421856, "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),)),
        ("train-labels-idx1-ubyte.gz", "train", "labels", 29515,
         "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", "25c81989df183df01b3e8a0aad5dffbe",
         ((29491, "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),)),
        ("t10k-images-idx3-ubyte.gz", "test", "images", 4422102,
         "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", "bef4ecab320f06d8554ea6380940ec79",
         ((4422079, "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),)),
        ("t10k-labels-idx1-ubyte.gz", "test", "labels", 5148,
         "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", "bb300cfdad3c16e7a12a480ee83cd310",
         ((5125, "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),)),
    ]),
    train_size=60000,
    test_size=10000,
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    folder="fashion-mnist",
    fallback_dirs=("/usr/share/datasets/fashion-mnist",),
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    license="MIT (Zalando SE)",
)

_CIFAR_BINS = [
    ("data_batch_1.bin", "train", "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
     "5dd7e06a14cb22eb9f671a540d1b7c25"),
    ("data_batch_2.bin", "train", "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
     "5ea93a67294ea407fff1d09f752e9692"),
    ("data_batch_3.bin", "train", "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
     "942cd6a4bcdd0dd3c604fbe906cb4421"),
    ("data_batch_4.bin", "train", "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
     "ae636b3ba5c66a11e91e8cb52e771fcb"),
    ("data_batch_5.bin", "train", "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
     "53f37980c15c3d472c316c40844f3f0d"),
    ("test_batch.bin", "test", "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
     "803d5f7f4d78ea53de84dbe85f74fb6d"),
]

_CIFAR10 = DatasetInfo(
    name="cifar10",
    num_classes=10,
    shape=(3, 32, 32),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    # The official binary version: 10,000 records of 3073 bytes per file.
    files=tuple(
        FileInfo(f"cifar-10-batches-bin/{n}", split, "batch", 30730000, sha, md5) for n, split, sha, md5 in _CIFAR_BINS
    ),
    archive=FileInfo(
        "cifar-10-binary.tar.gz", "", "archive", None, None, "c32a1d4ab5d03f1284b67883e8d87530",
        ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
    ),
    train_size=50000,
    test_size=10000,
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    folder="cifar10",
    layout="cifar-bin",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    license="no formal license; cite Krizhevsky, 'Learning Multiple Layers of Features from Tiny Images', 2009",
)

_MNIST_MINI = DatasetInfo(
    name="mnist-mini",
    num_classes=10,
    shape=(1, 28, 28),
    mean=_MNIST.mean,  # same distribution as MNIST: models share the constants
    std=_MNIST.std,
    train_size=5000,
    test_size=1000,
    classes=_DIGITS,
    layout="npz",
    homepage=_MNIST.homepage,
    license=_MNIST.license + "; subset shipped in robustopt/assets (see MNIST-LICENSE.md)",
)

_CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)  # the fine labels, in label order

_CIFAR100 = DatasetInfo(
    name="cifar100",
    num_classes=100,
    shape=(3, 32, 32),
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    # The official binary version: records of 2 label bytes (coarse, fine) + 3072 pixel bytes. The
    # archive's md5 is the published one; the two files' md5 are those of the files in that archive.
    files=(
        FileInfo("cifar-100-binary/train.bin", "train", "batch", 153700000, None, "6172c7755cfe09b2fe270c85cebc1b15"),
        FileInfo("cifar-100-binary/test.bin", "test", "batch", 30740000, None, "4499cfba6c016c1be1438163640a0898"),
    ),
    archive=FileInfo(
        "cifar-100-binary.tar.gz", "", "archive", None, None, "03b5dce01913d631647c71ecec9e9cb8",
        ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",),
    ),
    train_size=50000,
    test_size=10000,
    classes=_CIFAR100_CLASSES,
    folder="cifar100",
    layout="cifar100-bin",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    license=_CIFAR10.license,
)

_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
_SVHN = DatasetInfo(
    name="svhn",
    num_classes=10,
    shape=(3, 32, 32),
    mean=(0.4377, 0.4438, 0.4728),
    std=(0.1980, 0.2010, 0.1970),
    # The cropped digits (format 2), MATLAB files; md5 as published with torchvision's SVHN.
    files=(
        FileInfo("train_32x32.mat", "train", "mat", 182040794, None, "e26dedcc434d2e4c54c9b2d4a06d8373",
                 (_SVHN_URL + "train_32x32.mat",)),
        FileInfo("test_32x32.mat", "test", "mat", 64275384, None, "eb5a983be6a315427106f1b164d9cef3",
                 (_SVHN_URL + "test_32x32.mat",)),
    ),
    train_size=73257,
    test_size=26032,
    classes=_DIGITS,
    folder="svhn",
    layout="svhn-mat",
    homepage=_SVHN_URL,
    license="non-commercial use only; cite Netzer et al., 'Reading Digits in Natural Images with Unsupervised "
            "Feature Learning', 2011",
)

_REGISTRY: dict[str, DatasetInfo] = {d.name: d for d in (_MNIST_MINI, _MNIST, _FASHION, _CIFAR10, _CIFAR100, _SVHN)}
_ALIASES = {"cifar-10": "cifar10", "cifar-100": "cifar100", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist"}
_MINI_ASSET = ("assets", "mnist-mini.npz")


# --- public API -------------------------------------------------------------------------


def names() -> list[str]:
    """Names of the known datasets, for ``robustopt data list``.

    Returns:
        The registry names, e.g. ``["mnist-mini", "mnist", "fashion-mnist", "cifar10"]``.
    """
    return list(_REGISTRY)


def info(name: str) -> DatasetInfo:
    """Registry entry of a dataset (classes, shape, mean/std, files).

    Args:
        name: dataset name; case, "_" vs "-" and a few aliases ("cifar-10") are accepted.

    Returns:
        The frozen :class:`DatasetInfo`.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: unknown name; the message lists the known names.
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string such as 'mnist', got {type(name).__name__}.")
    if data_formats.is_spec(name):
        return spec_info(name)
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, _ALIASES.get(key.replace("-", ""), key))
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, [*_REGISTRY, *_ALIASES], n=1, cutoff=0.6)
    hint = f" Did you mean {_ALIASES.get(close[0], close[0])!r}?" if close else ""
    raise ValueError(f"Unknown dataset {name!r}.{hint} Known datasets: {', '.join(_REGISTRY)}.")


def spec_info(spec: str, *, image_size: int | None = None, skip_bad: bool = False) -> DatasetInfo:
    """A :class:`DatasetInfo` for a data SPEC (``folder:PATH``, ``npz:PATH``): its classes, shape and size.

    Its one split is "test"; mean/std are empty (the model carries its own normalization).
    The options are those of :func:`load`.
    """
    ds = data_formats.open_dataset(spec, image_size=image_size, skip_bad=skip_bad)
    return DatasetInfo(name=spec, num_classes=ds.num_classes, shape=tuple(ds.shape), mean=(), std=(),
                       test_size=len(ds), classes=tuple(ds.classes), layout=spec.partition(":")[0] + "-spec")


def default_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``root`` if given, else ``$ROBUSTOPT_DATA``, else the user cache folder.

    Args:
        root: explicit root folder, or None.

    Returns:
        The root as an absolute path (it may not exist yet).
    """
    if root is None:
        env = os.environ.get(ENV_VAR, "").strip()
        root = env if env else _user_cache()
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike) or None, got {type(root).__name__}.")
    return Path(root).expanduser().absolute()


def _user_cache() -> Path:
    """The per-user cache folder used when neither ``root`` nor ``$ROBUSTOPT_DATA`` is set."""
    import pooch  # imported lazily: it pulls in requests

    return Path(pooch.os_cache("robustopt"))


def status(name: str, root: str | os.PathLike[str] | None = None) -> str:
    """Whether a dataset's official files are on disk, for ``robustopt data list``.

    Every file's size is compared with the official one; the checksums too when the
    dataset's files add up to at most ``HASH_LIMIT`` bytes (hashing CIFAR-10's 180 MB is
    left to :func:`fetch` and :func:`load`).

    Args:
        name: dataset name.
        root: data root (default: ``$ROBUSTOPT_DATA``, else the user cache).

    Returns:
        "shipped" (inside the package); "present" (every file of both splits is there,
        with the official size and checksum); "present (not verified)" (every file is
        there with the official size, its checksum not computed); "damaged" (a file is
        not the official one: ``robustopt data fetch NAME`` names it); or "missing" (at
        least one file is absent).
    """
    ds = info(name)
    if ds.shipped:
        return "shipped"
    folder = locate(name, root)
    if folder is None:
        return "missing"
    paths = {f: folder / f.path for f in ds.files}
    hashed = sum(p.stat().st_size for p in paths.values()) <= HASH_LIMIT
    try:
        for f, path in paths.items():
            (_verify if hashed else _check_size)(ds, f, path)
    except DatasetCorruptError:
        return "damaged"
    return "present" if hashed else "present (not verified)"


def search_folders(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders where a dataset's files are looked for, in order: ``ROOT/<folder>``, then system folders.

    Args:
        name: dataset name.
        root: data root (default: ``$ROBUSTOPT_DATA``, else the user cache).

    Returns:
        The folders; empty for a shipped dataset.
    """
    ds = info(name)
    return [] if ds.shipped else [default_root(root) / ds.folder, *map(Path, ds.fallback_dirs)]


def locate(name: str, root: str | os.PathLike[str] | None = None) -> Path | None:
    """The first of :func:`search_folders` that holds every file of the dataset, or None.

    Only checks that the files exist (no hashing; :func:`fetch` and :func:`load` verify them).
    """
    ds = info(name)
    return _find_folder(ds, ds.files, default_root(root))


def fetch(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Download what is missing of a dataset, verify every file, return its folder.

    Used by ``robustopt data fetch NAME``.

    Args:
        name: dataset name.
        root: data root (default: ``$ROBUSTOPT_DATA``, else the user cache).

    Returns:
        The folder that holds the dataset's files (``ROOT/<name>``, or the
        Debian folder for Fashion-MNIST, or the package's assets folder for
        "mnist-mini").

    Raises:
        DatasetNotFoundError: a download failed; the message lists the paths to fill by hand.
        DatasetCorruptError: a present file does not match its checksum.
    """
    ds = info(name)
    if ds.shipped:
        asset = resources.files("robustopt").joinpath(*_MINI_ASSET)
        return Path(str(asset)).parent
    folder, _ = _ensure_files(ds, ds.files, default_root(root), download=True)
    return folder


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
        name: "mnist", "fashion-mnist", "cifar10" (official binary version) or
            "mnist-mini" (5000 train / 1000 test real MNIST images shipped in the
            package; ``root`` and ``download`` are ignored for it). Or a data SPEC,
            ``folder:PATH`` (ImageFolder) or ``npz:PATH`` (arrays x, y): then a
            map-style ``torch.utils.data.Dataset`` of ``(image, label)`` comes back
            (see :mod:`robustopt.data_formats`), nothing is read yet, and ``split``,
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
    if data_formats.is_spec(name):
        return data_formats.open_dataset(name, image_size=image_size, skip_bad=skip_bad)  # type: ignore[return-value]
    if image_size is not None or skip_bad:
        raise ValueError("image_size (--image-size) and skip_bad (--skip-bad) apply to folder: data only.")
    ds = info(name)
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}; got {split!r}.")
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r}.")
    if ds.shipped:
        images, labels = _load_mini(split)
    else:
        _, paths = _ensure_files(ds, ds.split_files(split), default_root(root), download)
        images, labels = _READERS[ds.layout](ds, paths)
    _check_arrays(ds, split, images, labels)
    x = torch.from_numpy(images).reshape(-1, *ds.shape).to(torch.float32).div_(255.0).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


# --- file formats -----------------------------------------------------------------------

# IDX type codes (third magic byte) -> numpy dtype; multi-byte types are big-endian.
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MAX_BYTES = 1 << 34  # refuse absurd headers instead of allocating them


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse an IDX file (gzip-compressed or not), as used by MNIST and Fashion-MNIST.

    The header is big-endian: two zero bytes, a type code (0x08 = uint8), the
    number of dimensions, then one uint32 per dimension; the data follow
    row-major. The file must hold exactly that many bytes. No checksum is
    checked here.

    Args:
        path: the ``.gz`` or raw IDX file.

    Returns:
        A writable array with the file's shape, e.g. (60000, 28, 28) uint8, in native byte order.

    Raises:
        ValueError: not a valid IDX file (bad magic, truncated, trailing bytes, broken gzip).
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            is_gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw, mode="rb") if is_gz else raw
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_DTYPES or magic[3] == 0:
                raise ValueError(f"bad magic number {magic.hex() or '(empty file)'}, expected 0000TTNN "
                                 "(TT a type code such as 08, NN the number of dimensions)")
            dtype = np.dtype(_IDX_DTYPES[magic[2]])
            header = f.read(4 * magic[3])
            if len(header) < 4 * magic[3]:
                raise ValueError("truncated header")
            dims = struct.unpack(f">{magic[3]}I", header)
            nbytes = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
            if nbytes > _MAX_BYTES:
                raise ValueError(f"header announces an implausible shape {dims}")
            arr = np.empty(dims, dtype=dtype)
            buf = memoryview(arr.reshape(-1).view(np.uint8))
            filled = 0
            while filled < nbytes:
                n = f.readinto(buf[filled:])
                if not n:
                    break
                filled += n
            if filled != nbytes:
                raise ValueError(f"truncated: shape {dims} needs {nbytes} data bytes, found {filled}")
            if f.read(1):
                raise ValueError(f"trailing bytes after the {nbytes} data bytes of shape {dims}")
    except (OSError, EOFError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a valid IDX file: {err}. Delete it and fetch it again.") from err
    except ValueError as err:
        raise ValueError(f"{path} is not a valid IDX file: {err}. Delete it and fetch it again.") from None
    return arr.astype(dtype.newbyteorder("="), copy=False)


_CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one file of the CIFAR-10 binary version (records of 1 label + 3072 pixel bytes).

    No checksum is checked here.

    Args:
        path: e.g. ``ROOT/cifar10/cifar-10-batches-bin/test_batch.bin``.

    Returns:
        ``(images, labels)``: uint8 arrays of shape (N, 3, 32, 32) (R, G, B
        planes, each row-major) and (N,).

    Raises:
        ValueError: the size is not a multiple of 3073 bytes or a label is not in 0..9.
    """
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise ValueError(f"{path} is not a CIFAR-10 binary batch: {raw.size} bytes is not a positive "
                         f"multiple of the {_CIFAR_RECORD}-byte record. Delete it and fetch it again.")
    records = raw.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].copy()
    if labels.max() > 9:
        raise ValueError(f"{path} is not a CIFAR-10 binary batch: label {labels.max()} > 9. "
                         "Delete it and fetch it again.")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _load_idx_split(ds: DatasetInfo, paths: dict[FileInfo, Path]) -> tuple[np.ndarray, np.ndarray]:
    arrays = {}
    for f, p in paths.items():
        try:
            arrays[f.kind] = read_idx(p)
        except ValueError as err:
            raise _corrupt(ds, p, str(err)) from None
    return arrays["images"], arrays["labels"]


def _load_cifar_split(ds: DatasetInfo, paths: dict[FileInfo, Path]) -> tuple[np.ndarray, np.ndarray]:
    parts = []
    for p in paths.values():  # registry order: data_batch_1..5
        try:
            parts.append(read_cifar_batch(p))
        except ValueError as err:
            raise _corrupt(ds, p, str(err)) from None
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([im for im, _ in parts]), np.concatenate([lb for _, lb in parts])


def _load_each(read):  # noqa: ANN001, ANN202  (a parser of one file -> the loader of a split's files)
    def load_split(ds: DatasetInfo, paths: dict[FileInfo, Path]) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for p in paths.values():
            try:
                parts.append(read(p))
            except ValueError as err:
                raise _corrupt(ds, p, str(err)) from None
        return (np.concatenate([im for im, _ in parts]), np.concatenate([lb for _, lb in parts])) if len(parts) > 1 \
            else parts[0]

    return load_split


_READERS = {"idx": _load_idx_split, "cifar-bin": _load_cifar_split,
            "cifar100-bin": _load_each(data_files.read_cifar100_batch), "svhn-mat": _load_each(data_files.read_svhn_mat)}


def _load_mini(split: str) -> tuple[np.ndarray, np.ndarray]:
    asset = resources.files("robustopt").joinpath(*_MINI_ASSET)
    try:
        blob = asset.read_bytes()
    except FileNotFoundError:
        raise DatasetNotFoundError(
            f"The shipped file robustopt/{'/'.join(_MINI_ASSET)} is missing from the installed package "
            f"({asset}). Reinstall robustopt, or regenerate it with bench/make_mnist_mini.py --root DATA."
        ) from None
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        try:
            return npz[f"x_{split}"], npz[f"y_{split}"]
        except KeyError:
            raise DatasetCorruptError(
                f"{asset} lacks x_{split}/y_{split}: regenerate it with bench/make_mnist_mini.py."
            ) from None


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
        where = "the shipped mnist-mini.npz" if ds.shipped else f"the {split} files of {ds.name!r}"
        raise DatasetCorruptError(f"Unexpected content in {where}: {'; '.join(problems)}. "
                                  f"Delete the files and fetch them again (robustopt data fetch {ds.name}).")


# --- finding, verifying and downloading files --------------------------------------------

_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) that passed the hash check


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _check_size(ds: DatasetInfo, f: FileInfo, path: Path) -> None:
    """Check the size of ``path`` against the official size of ``f`` (and of its known repacks), when known."""
    accepted = [(f.size, f.sha256), *f.also_accept]
    size = path.stat().st_size
    if all(s is not None for s, _ in accepted) and size not in {s for s, _ in accepted}:
        raise _corrupt(ds, path, f"it has {size} bytes, the official file has {f.size} (interrupted copy?)")


def _verify(ds: DatasetInfo, f: FileInfo, path: Path) -> None:
    """Check ``path`` against the known size and hash of ``f`` (once per process)."""
    key = _cache_key(path)
    if key in _VERIFIED:
        return
    _check_size(ds, f, path)
    if f.sha256 is not None:
        accepted = [(f.size, f.sha256), *f.also_accept]
        digest, alg, expected = _sha256(path), "sha256", f.sha256
        ok = digest in {h for _, h in accepted}
    else:  # only an md5 is published
        with open(path, "rb") as fh:
            digest, alg, expected = hashlib.md5(fh.read(), usedforsecurity=False).hexdigest(), "md5", f.md5
        ok = digest == expected
    if not ok:
        raise _corrupt(ds, path, f"its {alg} is {digest}, the official file's is {expected}")
    _VERIFIED.add(key)


def _corrupt(ds: DatasetInfo, path: Path, why: str) -> DatasetCorruptError:
    return DatasetCorruptError(
        f"{path} is not the official file of {ds.name!r}: {why}. Delete it and fetch it again "
        f"(robustopt data fetch {ds.name}, or copy the official file there by hand)."
    )


def _find_folder(ds: DatasetInfo, files: tuple[FileInfo, ...], root: Path) -> Path | None:
    """The first of ROOT/<folder> and the fallback folders that holds every file, or None."""
    for folder in search_folders(ds.name, root):
        if all((folder / f.path).is_file() for f in files):
            return folder
    return None


def _ensure_files(
    ds: DatasetInfo, files: tuple[FileInfo, ...], root: Path, download: bool
) -> tuple[Path, dict[FileInfo, Path]]:
    """Locate (downloading if allowed) and verify ``files``; return the folder and the paths."""
    folder = _find_folder(ds, files, root)
    if folder is None:
        folder = root / ds.folder
        missing = [f for f in files if not (folder / f.path).is_file()]
        if not download:
            raise _not_found(ds, folder, missing, "Not downloaded because download=False.")
        _download(ds, folder, missing)
    paths = {f: folder / f.path for f in files}
    for f, p in paths.items():
        _verify(ds, f, p)
    return folder, paths


def _retrieve(f: FileInfo, dest: Path) -> list[str]:
    """Try each URL of ``f`` with pooch; return the error of each failed try (empty on success)."""
    import pooch

    existed = dest.exists()
    errors = []
    for url in f.urls:
        try:
            # pooch streams into a temporary file in dest's folder, checks the hash,
            # then moves it to dest; on any failure the temporary file is removed.
            pooch.retrieve(url, known_hash=f.known_hash, fname=dest.name, path=dest.parent, progressbar=True)
            return []
        except Exception as err:  # network, HTTP status, hash mismatch, permissions: try the next mirror
            errors.append(f"{url}: {type(err).__name__}: {err}")
    if not existed and dest.exists():  # belt and braces: never leave a file that failed
        dest.unlink()
    return errors


def _download(ds: DatasetInfo, folder: Path, missing: list[FileInfo]) -> None:
    """Download ``missing`` into ``folder``; raise DatasetNotFoundError listing what is still missing."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _not_found(ds, folder, missing, f"Cannot create {folder}: {err}.") from err
    try:
        if ds.archive is not None:
            _download_archive(ds, folder, missing)
            return
        for i, f in enumerate(missing):
            errors = _retrieve(f, folder / f.path)
            if errors:
                raise _not_found(ds, folder, missing[i:], "Download failed:\n    " + "\n    ".join(errors))
            _VERIFIED.add(_cache_key(folder / f.path))  # pooch checked the sha256
    except BaseException:
        for p in created:  # remove the folders made for this download if they stayed empty
            try:
                p.rmdir()
            except OSError:
                break
        raise


def _download_archive(ds: DatasetInfo, folder: Path, missing: list[FileInfo]) -> None:
    """Fetch the archive, unpack it into a temporary folder, move the verified members into place."""
    import pooch

    arch = ds.archive
    if arch is None:
        raise ValueError(f"{ds.name!r} has no archive to download.")
    arch_path = folder / arch.path
    had_archive = arch_path.is_file()  # placed by hand: use it, keep it
    tmp: Path | None = None
    try:
        errors = _retrieve(arch, arch_path)
        if errors:
            raise _not_found(ds, folder, missing, "Download failed:\n    " + "\n    ".join(errors))
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=folder))
        try:
            pooch.Untar(members=[f.path for f in missing], extract_dir=str(tmp))(str(arch_path), "download", None)
        except Exception as err:
            raise _not_found(ds, folder, missing, f"Unpacking {arch_path} failed: {err}.") from err
        for f in missing:
            src = tmp / f.path
            if not src.is_file():
                raise _not_found(ds, folder, missing, f"The archive {arch.path} does not contain {f.path}.")
            try:
                _verify(ds, f, src)
            except DatasetCorruptError as err:
                why = str(err).split(": ", 1)[1].split(". Delete")[0]
                raise _not_found(ds, folder, missing, f"The downloaded {arch.path} holds a {f.path} that is not "
                                 f"the official file ({why}); nothing was kept.") from None
        for f in missing:
            dest = folder / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / f.path, dest)
            _VERIFIED.add(_cache_key(dest))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if not had_archive:
            arch_path.unlink(missing_ok=True)


def _not_found(ds: DatasetInfo, folder: Path, missing: list[FileInfo], reason: str) -> DatasetNotFoundError:
    """The error for missing files: what is missing, why, and exactly where to put what."""
    lines = [f"Dataset {ds.name!r}: {len(missing)} file(s) missing under {folder}. {reason}"]
    if ds.archive is not None:
        lines.append(f"To install it by hand, download {ds.archive.urls[0]} (md5 {ds.archive.md5}) and unpack it "
                     f"in {folder} (tar xzf {ds.archive.path} -C {folder}), so that these files exist:")
        lines += [f"    {folder / f.path}" for f in missing]
    else:
        lines.append("To install it by hand, put the official files at exactly these paths:")
        lines += [f"    {folder / f.path}    <- {f.urls[0] if f.urls else '?'}  ({f.known_hash})" for f in missing]
    root = folder.parent if ds.folder else folder
    lines.append(f"Or use a data root that already holds them: pass root=... (CLI: --root) or set {ENV_VAR}=/path "
                 f"(current root: {root}; the files go in ROOT/{ds.folder}/).")
    if ds.fallback_dirs:
        lines.append(f"Also looked in: {', '.join(ds.fallback_dirs)} (Debian package dataset-{ds.name}).")
    lines.append(f"With internet access, `robustopt data fetch {ds.name}` downloads and verifies them.")
    return DatasetNotFoundError("\n".join(lines))
