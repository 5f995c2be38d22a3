"""Your own images: an ImageFolder tree or an ``.npz`` of arrays, read example by example.

A data SPEC names them: ``folder:PATH`` (one sub-folder per class, PNG or JPEG files,
read with Pillow) or ``npz:PATH`` (arrays ``x``, uint8
or float, NCHW or NHWC, and ``y``). Both open as map-style :class:`torch.utils.data.Dataset`
objects whose items are ``(image, label)``: a float32 (C, H, W) tensor in [0, 1] and an int.
Nothing is read before it is asked for, so memory stays bounded by what the caller holds:
:class:`Streamed` gives evaluation random access to batches of such a dataset, and an
uncompressed ``.npz`` is memory-mapped.

Example:
    >>> ds = open_dataset("folder:photos/val", image_size=64)
    >>> x, y = ds[0]; ds.path(0)           # (3, 64, 64) in [0, 1], its label, "photos/val/cat/001.png"
"""

from __future__ import annotations

import copy
import os
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler

from robustopt.threat import check_images

__all__ = ["SPEC_KINDS", "IMAGE_SUFFIXES", "is_spec", "spec_options", "absolute", "open_dataset", "ImageFolder", "ArrayFile", "Streamed",
           "streamed", "first"]

SPEC_KINDS = ("folder", "npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def is_spec(name: object) -> bool:
    """Whether ``name`` is a data SPEC such as ``folder:PATH`` or ``npz:PATH`` (not a registry name)."""
    return isinstance(name, str) and name.partition(":")[0] in SPEC_KINDS and ":" in name


def spec_options(image_size: int | None = None, skip_bad: bool = False) -> dict[str, Any]:
    """The options of a folder SPEC that were given, as ``load`` takes them and run.json records them."""
    return {k: v for k, v in (("image_size", image_size), ("skip_bad", skip_bad)) if v}


def absolute(spec: str) -> str:
    """A data SPEC with its path made absolute (``~`` expanded), so that it names the same files from any folder."""
    kind, _, path = spec.partition(":")
    return f"{kind}:{Path(path).expanduser().absolute()}"


def open_dataset(spec: str, *, image_size: int | None = None, skip_bad: bool = False) -> "ImageFolder | ArrayFile":
    """Open a data SPEC as a dataset of ``(image, label)`` items.

    Args:
        spec: ``folder:PATH`` or ``npz:PATH``.
        image_size: folder only: resize each image's short side to this and center-crop a square.
        skip_bad: folder only: leave out files that cannot be read as images (checked once, here),
            instead of failing on the first one; ``ImageFolder.skipped`` lists them.

    Raises:
        ValueError: an unknown kind, a missing or empty folder, a class folder without images,
            arrays that do not fit together, or options that do not apply to the kind.
    """
    kind, sep, path = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or kind not in SPEC_KINDS or not path:
        raise ValueError(f"data spec {spec!r} is not folder:PATH or npz:PATH.")
    if kind == "folder":
        return ImageFolder(path, image_size=image_size, skip_bad=skip_bad)
    if image_size is not None or skip_bad:
        raise ValueError("--image-size and --skip-bad apply to folder: data only.")
    return ArrayFile(path)


class ImageFolder(Dataset):
    """An ImageFolder tree: ``ROOT/CLASS/*.png|jpg|jpeg``, classes in sorted order, labels 0..C-1.

    Images are decoded when an item is read, converted to RGB (or to grayscale when the
    first image is grayscale), optionally resized (short side) and center-cropped to
    ``image_size``. Without ``image_size`` all images must have the first one's size.

    Attributes:
        root: the folder. classes: the class names. files: one path per example.
        targets: the labels (int64 tensor). skipped: files left out by ``skip_bad``.
    """

    def __init__(self, root: str | os.PathLike[str], *, image_size: int | None = None,
                 skip_bad: bool = False) -> None:
        self.root = Path(root)
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise ValueError(f"image_size (--image-size) must be a positive integer, got {image_size!r}.")
        self.image_size = image_size
        if not self.root.is_dir():
            raise ValueError(f"no folder {self.root}: pass a folder with one sub-folder of images per class.")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise ValueError(f"{self.root} has no class sub-folders: put the images of class NAME in {self.root}/NAME/.")
        files, labels = [], []
        for label, name in enumerate(self.classes):
            found = sorted(p for p in (self.root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"class folder {self.root / name} holds no .png or .jpg images; "
                                 "remove it or add its images.")
            files += found
            labels += [label] * len(found)
        self.skipped: list[Path] = []
        if skip_bad:
            ok = [_readable(f) for f in files]
            self.skipped = [f for f, good in zip(files, ok) if not good]
            files, labels = [f for f, good in zip(files, ok) if good], [c for c, good in zip(labels, ok) if good]
            if not files:
                raise ValueError(f"no readable image in {self.root} ({len(self.skipped)} skipped).")
        self.files = files
        self.targets = torch.tensor(labels, dtype=torch.int64)
        self._mode = _mode(files[0])  # grayscale when the first image is
        first = self._read(0)
        self.shape = tuple(first.shape)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self._read(i), int(self.targets[i])

    def path(self, i: int) -> str:
        """The file of example ``i``."""
        return str(self.files[i])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _read(self, i: int) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        path = self.files[i]
        try:
            with Image.open(path) as im:
                im = im.convert(self._mode)
                if self.image_size is not None:
                    im = _resize_crop(im, self.image_size)
                arr = np.asarray(im, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            raise ValueError(f"cannot read image {path} ({type(err).__name__}: {_first_line(err)}); "
                             "replace or delete it, or pass --skip-bad (skip_bad=True) to leave it out.") from None
        x = torch.from_numpy(arr.copy()).reshape(arr.shape[0], arr.shape[1], -1).permute(2, 0, 1)
        if hasattr(self, "shape") and tuple(x.shape) != self.shape:
            raise ValueError(f"image {path} is {x.shape[2]}x{x.shape[1]} ({x.shape[0]} channels), the first image "
                             f"is {self.shape[2]}x{self.shape[1]} ({self.shape[0]}): pass --image-size "
                             "(image_size=) to resize them all.")
        return x.float().div_(255.0)


class ArrayFile(Dataset):
    """Arrays ``x`` (N images, uint8 in 0..255 or float in [0, 1], NCHW or NHWC) and ``y`` (N labels) of an ``.npz``.

    A member stored uncompressed (``np.savez``) is memory-mapped, so only the examples read
    are in memory; a compressed one (``np.savez_compressed``) is loaded whole.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.file = Path(path)
        if not self.file.is_file():
            raise ValueError(f"no file {self.file}: pass an .npz with arrays x (images) and y (labels).")
        try:
            x, y = _npz_member(self.file, "x"), np.asarray(_npz_member(self.file, "y"))
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            raise ValueError(f"{self.file} is not a readable .npz ({_first_line(err)}); write it with "
                             "np.savez(path, x=images, y=labels).") from None
        if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{self.file}: x has shape {x.shape} and y {y.shape}; expected x (N, C, H, W) or "
                             "(N, H, W, C) and y (N,) with the same N.")
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise ValueError(f"{self.file}: y must hold class indices 0..C-1 (integers), got {y.dtype}.")
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{self.file}: x must be uint8 (0..255) or float ([0, 1]), got {x.dtype}.")
        self.channels_last = x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4)
        self.x, self.targets = x, torch.from_numpy(y.astype(np.int64))
        n, *rest = x.shape
        self.shape = (rest[2], rest[0], rest[1]) if self.channels_last else tuple(rest)
        self.num_classes = int(y.max()) + 1 if len(y) else 0
        self.classes = tuple(str(i) for i in range(self.num_classes))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        a = np.array(self.x[i])
        x = torch.from_numpy(a).permute(2, 0, 1) if self.channels_last else torch.from_numpy(a)
        x = x.float().div_(255.0) if a.dtype == np.uint8 else x.float()
        return x, int(self.targets[i])

    def path(self, i: int) -> str:
        """Where example ``i`` comes from: ``FILE[i]``."""
        return f"{self.file}[{i}]"


class Streamed:
    """Random access to batches of a map-style dataset, read when indexed: what ``evaluate`` streams.

    It stands in for the image tensor ``x``: ``len``, ``shape``, ``device`` and ``x[idx]`` (a
    1-D index tensor or a slice) stacking the items read from the dataset, checked to lie in
    [0, 1], on ``device``. Only the batch asked for is in memory.

    Args:
        dataset: items ``(image, label, ...)`` with float images (C, H, W).
        device: where the batches go.
        indices: the examples used, in order (default: all).
    """

    def __init__(self, dataset: Dataset, device: str | torch.device = "cpu",
                 indices: Sequence[int] | None = None) -> None:
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError("streamed data needs a map-style dataset (len() and dataset[i]).")
        self.dataset, self.device = dataset, torch.device(device)
        self.indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
        if not self.indices:
            raise ValueError("data holds no examples: pass a dataset with at least one (image, label) item.")
        first = dataset[self.indices[0]][0]
        if not isinstance(first, torch.Tensor):
            raise TypeError(f"each item of the dataset must be (image tensor, label), got {type(first).__name__}.")
        self.shape = torch.Size((len(self.indices), *first.shape))
        self.dtype = first.dtype
        self._last: tuple[list[int], torch.Tensor] | None = None  # the batch read last (attacked, then checked)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, idx: Any) -> torch.Tensor:
        picks = self.indices[idx] if isinstance(idx, slice) else [self.indices[int(i)] for i in idx]
        if self._last is not None and self._last[0] == picks:
            return self._last[1]
        x = torch.stack([self.dataset[i][0] for i in picks]).to(self.device) if picks else torch.empty(
            0, *self.shape[1:], device=self.device)
        check_images(x, name=f"the images {self._where(picks)}")
        self._last = (picks, x)
        return x

    def subset(self, start: int, stop: int) -> Streamed:
        """The examples ``start:stop`` of this one, still read when indexed (a view: the dataset is shared)."""
        view = copy.copy(self)
        view.indices = self.indices[start:stop]
        view.shape = torch.Size((len(view.indices), *self.shape[1:]))
        view._last = None
        return view

    def labels(self) -> torch.Tensor:
        """All labels (int64, on ``device``), from ``dataset.targets`` when it has them, else item by item."""
        targets = getattr(self.dataset, "targets", None)
        if targets is not None:
            return torch.as_tensor(np.asarray(targets)[self.indices], dtype=torch.int64, device=self.device)
        return torch.tensor([int(self.dataset[i][1]) for i in self.indices], dtype=torch.int64, device=self.device)

    def paths(self) -> list[str] | None:
        """The file of each example, when the dataset knows them (``dataset.path(i)``)."""
        path = getattr(self.dataset, "path", None)
        return [path(i) for i in self.indices] if callable(path) else None

    def sample(self, count: int = 16) -> torch.Tensor:
        """The first ``count`` images (what fingerprints identify the data by)."""
        return self[slice(0, min(count, len(self)))]

    def _where(self, picks: list[int]) -> str:
        path = getattr(self.dataset, "path", None)
        return f"of {path(picks[0])} ..." if callable(path) and picks else f"from index {picks[0] if picks else 0}"


def streamed(data: Any, device: str | torch.device = "cpu") -> Streamed | None:
    """``data`` as :class:`Streamed` when it can be read batch by batch in order, else None.

    A :class:`Streamed`, a map-style Dataset and a DataLoader over one that reads it in order
    (no shuffling, no custom sampler) qualify; tensors and other iterables do not.
    """
    if isinstance(data, Streamed):
        return data
    if isinstance(data, DataLoader):
        ordered = isinstance(data.sampler, SequentialSampler) or data.batch_sampler is None
        return Streamed(data.dataset, device) if ordered and not isinstance(data.dataset, IterableDataset) else None
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset) and hasattr(data, "__len__"):
        return Streamed(data, device)
    return None


def first(dataset: Dataset, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` examples (all when None) of a dataset as ``(x, y)`` tensors."""
    count = len(dataset) if n is None else min(n, len(dataset))
    if count == 0:
        raise ValueError("the dataset holds no examples.")
    stream = Streamed(dataset, indices=range(count))
    x = torch.empty(stream.shape, dtype=stream.dtype)
    for i in range(0, count, 256):  # batch by batch into one tensor: no list of items beside it
        x[i : i + 256] = stream[slice(i, i + 256)]
    return x, stream.labels()


# --- helpers ---------------------------------------------------------------------------------


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0]


def _mode(path: Path) -> str:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return "L" if im.mode in ("L", "1", "I;16", "I") else "RGB"
    except Exception:
        return "RGB"


def _readable(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:
        return False


def _resize_crop(im: Any, size: int) -> Any:
    from PIL import Image

    w, h = im.size
    scale = size / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


def _npz_member(path: Path, name: str) -> np.ndarray:
    """Array ``name`` of an .npz: memory-mapped when stored uncompressed, else loaded."""
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(f"{name}.npy")
        except KeyError:
            raise ValueError(f"it has no array {name!r} (arrays: {', '.join(n[:-4] for n in zf.namelist())})") from None
        if info.compress_type != zipfile.ZIP_STORED:
            with zf.open(info) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        f.seek(start)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject:
            raise ValueError(f"array {name!r} holds Python objects; store numbers only")
        offset = f.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
