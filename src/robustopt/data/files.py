"""Parsers of the official dataset files, and the readers that register them.

They parse and validate the format only; the loader checks each file's checksum before a
reader sees it (``ro.data.load("mnist")``). To read other files in these formats, call the
parsers directly.

* IDX (MNIST, Fashion-MNIST; gzip-compressed or not): a big-endian header, then the data.
* CIFAR-10 binary (``cifar-10-batches-bin/*.bin``): records of 3073 bytes, the label, then
  3072 pixel bytes (R, G and B planes, each row-major).
* CIFAR-100 binary (``cifar-100-binary/train.bin``, ``test.bin``): records of 3074 bytes, the
  coarse label, the fine label, then 3072 pixel bytes.
* SVHN (``train_32x32.mat``, ``test_32x32.mat``): MATLAB level-5 MAT-files holding ``X``
  (32 x 32 x 3 x N uint8, column-major) and ``y`` (N x 1, labels 1..10 where 10 is the digit 0).
  The reader here handles the subset of the format these files use (zlib-compressed numeric
  matrices), so SciPy is not needed.

A *reader* (``reader(ds, split, paths) -> (images, labels)``, see ``DatasetInfo.reader``) turns
the verified files of one split into arrays: :data:`idx_reader` (an images and a labels file),
:func:`each_file` (one parser per file, results concatenated in registry order) and
:data:`asset_reader` (an ``.npz`` shipped inside the package).

Example:
    >>> x, y = read_cifar_batch("ROOT/cifar10/cifar-10-batches-bin/test_batch.bin")  # (10000, 3, 32, 32), (10000,)
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path

import numpy as np

from robustopt.data.registry import DatasetCorruptError, DatasetInfo, DatasetNotFoundError, FileInfo, corrupt

__all__ = ["read_idx", "read_cifar_batch", "read_cifar100_batch", "read_svhn_mat", "read_mat", "idx_reader",
           "each_file", "asset_reader"]

Parser = Callable[[Path], tuple[np.ndarray, np.ndarray]]

# --- readers: the files of a split -> (images, labels) ----------------------------------------


def idx_reader(ds: DatasetInfo, split: str, paths: Mapping[FileInfo, Path]) -> tuple[np.ndarray, np.ndarray]:
    """Reader of an IDX layout: the split's file of kind "images" and its file of kind "labels"."""
    arrays = {}
    for f, p in paths.items():
        try:
            arrays[f.kind] = read_idx(p)
        except ValueError as err:
            raise corrupt(ds, p, str(err)) from None
    missing = {"images", "labels"} - set(arrays)
    if missing:
        raise ValueError(f"dataset {ds.name!r}: the {split} split has no file of kind {', '.join(sorted(missing))}; "
                         "an IDX dataset needs one 'images' and one 'labels' file per split.")
    return arrays["images"], arrays["labels"]


def each_file(parse: Parser) -> Callable[[DatasetInfo, str, Mapping[FileInfo, Path]], tuple[np.ndarray, np.ndarray]]:
    """The reader that parses every file of a split with ``parse`` and concatenates the results in registry order.

    Args:
        parse: one file's path -> ``(images, labels)``; raises ValueError for a file it cannot read.
    """

    def read(ds: DatasetInfo, split: str, paths: Mapping[FileInfo, Path]) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for p in paths.values():
            try:
                parts.append(parse(p))
            except ValueError as err:
                raise corrupt(ds, p, str(err)) from None
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([im for im, _ in parts]), np.concatenate([lb for _, lb in parts])

    read.__name__ = read.__qualname__ = f"each_file({getattr(parse, '__name__', 'parse')})"
    return read


def asset_reader(ds: DatasetInfo, split: str, paths: Mapping[FileInfo, Path]) -> tuple[np.ndarray, np.ndarray]:
    """Reader of a dataset shipped in the package: arrays ``x_SPLIT`` and ``y_SPLIT`` of the ``.npz`` ``ds.asset``."""
    asset = resources.files("robustopt").joinpath(*ds.asset.split("/"))
    try:
        blob = asset.read_bytes()
    except FileNotFoundError:
        raise DatasetNotFoundError(
            f"The shipped file robustopt/{ds.asset} is missing from the installed package "
            f"({asset}). Reinstall robustopt, or regenerate it with bench/make_mnist_mini.py --root DATA."
        ) from None
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        try:
            return npz[f"x_{split}"], npz[f"y_{split}"]
        except KeyError:
            raise DatasetCorruptError(
                f"{asset} lacks x_{split}/y_{split}: regenerate it with bench/make_mnist_mini.py."
            ) from None


# --- parsers: one file -> arrays -------------------------------------------------------------

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




_CIFAR100_RECORD = 2 + 3 * 32 * 32

# MAT-file level 5 data types (miINT8 ...) -> numpy dtypes (little-endian file).
_MI_DTYPES = {1: "i1", 2: "u1", 3: "<i2", 4: "<u2", 5: "<i4", 6: "<u4", 7: "<f4", 9: "<f8", 12: "<i8", 13: "<u8"}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
# Matrix classes (mxDOUBLE_CLASS ...) -> numpy dtypes.
_MX_DTYPES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}


def read_cifar100_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one file of the CIFAR-100 binary version.

    Returns:
        ``(images, labels)``: uint8 (N, 3, 32, 32) and the fine labels (N,) in 0..99.

    Raises:
        ValueError: the size is not a positive multiple of 3074 bytes, or a label is out of range.
    """
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR100_RECORD:
        raise ValueError(f"{path} is not a CIFAR-100 binary file: {raw.size} bytes is not a positive multiple "
                         f"of the {_CIFAR100_RECORD}-byte record. Delete it and fetch it again.")
    records = raw.reshape(-1, _CIFAR100_RECORD)
    coarse, fine = records[:, 0], records[:, 1].copy()
    if coarse.max() > 19 or fine.max() > 99:
        raise ValueError(f"{path} is not a CIFAR-100 binary file: labels up to {coarse.max()} (coarse, < 20) and "
                         f"{fine.max()} (fine, < 100). Delete it and fetch it again.")
    return records[:, 2:].reshape(-1, 3, 32, 32), fine


def read_svhn_mat(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN cropped-digits file (``train_32x32.mat`` or ``test_32x32.mat``).

    Returns:
        ``(images, labels)``: uint8 (N, 3, 32, 32) and uint8 (N,) digits 0..9 (the file's 10 is 0).

    Raises:
        ValueError: not such a MAT-file, or ``X``/``y`` of the wrong shape, type or range.
    """
    arrays = read_mat(path, ("X", "y"))
    x, y = arrays["X"], arrays["y"].reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise ValueError(f"{path} is not an SVHN file: X is {x.dtype} {x.shape} and y has {len(y)} labels, "
                         "expected uint8 32 x 32 x 3 x N and N labels. Delete it and fetch it again.")
    if len(y) and (y.min() < 1 or y.max() > 10 or not np.all(y == np.round(y))):
        raise ValueError(f"{path} is not an SVHN file: labels must be 1..10. Delete it and fetch it again.")
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), (y.astype(np.int64) % 10).astype(np.uint8)


def read_mat(path: str | os.PathLike[str], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The numeric matrices ``names`` of a little-endian MATLAB level-5 MAT-file, in MATLAB's shape.

    Raises:
        ValueError: not a level-5 MAT-file, broken compression or element, or a name missing.
    """
    path = Path(path)
    found: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as f:
            header = f.read(128)
            if len(header) < 128 or header[126:128] != b"IM" or struct.unpack("<H", header[124:126])[0] != 0x0100:
                raise ValueError("no little-endian MAT-file level 5 header")
            while len(found) < len(names):
                tag = f.read(8)
                if len(tag) < 8:
                    break
                kind, size = struct.unpack("<II", tag)
                body = f.read(size)
                if len(body) < size:
                    raise ValueError("truncated")
                if kind == _MI_COMPRESSED:
                    body = zlib.decompress(body)
                    kind, size = struct.unpack("<II", body[:8])
                    body = body[8 : 8 + size]
                else:
                    f.read(-size % 8)  # padding to 8 bytes
                if kind == _MI_MATRIX:
                    name, array = _matrix(body)
                    if name in names:
                        found[name] = array
    except (OSError, zlib.error, struct.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a readable MAT-file ({err}). Delete it and fetch it again.") from err
    except ValueError as err:
        raise ValueError(f"{path} is not a readable MAT-file ({err}). Delete it and fetch it again.") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"{path} holds no matrix {', '.join(missing)}. Delete it and fetch it again.")
    return found


def _elements(body: bytes):  # noqa: ANN202  (yields (type, bytes) of the sub-elements)
    pos = 0
    while pos + 8 <= len(body):
        kind, size = struct.unpack("<II", body[pos : pos + 8])
        if kind >> 16:  # small element: size in the upper half, data in the tag's last 4 bytes
            yield kind & 0xFFFF, body[pos + 4 : pos + 4 + (kind >> 16)]
            pos += 8
        else:
            yield kind, body[pos + 8 : pos + 8 + size]
            pos += 8 + size + (-size % 8)


def _matrix(body: bytes) -> tuple[str, np.ndarray]:
    parts = list(_elements(body))
    if len(parts) < 4:
        raise ValueError("a matrix element without flags, dimensions, name and data")
    (_, flags), (_, dims), (_, name), (kind, data) = parts[:4]
    word = struct.unpack("<I", flags[:4])[0]
    if word & 0x0800:
        raise ValueError("complex matrices are not supported")
    if (word & 0xFF) not in _MX_DTYPES:
        raise ValueError(f"matrix class {word & 0xFF} is not numeric")
    if kind not in _MI_DTYPES:
        raise ValueError(f"matrix data of MAT type {kind} is not supported")
    shape = tuple(np.frombuffer(dims, dtype="<i4").tolist())
    values = np.frombuffer(data, dtype=_MI_DTYPES[kind])
    if values.size != int(np.prod(shape)):
        raise ValueError(f"matrix {name.decode(errors='replace')!r}: {values.size} values for the shape {shape}")
    # The values may be stored in a smaller type than the matrix's class (MATLAB's compression of types).
    array = values.astype(_MX_DTYPES[word & 0xFF], copy=False).reshape(shape, order="F")
    return name.decode("ascii", errors="replace"), array
