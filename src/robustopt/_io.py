"""Crash-safe file writing shared by checkpoints, results JSON and logs.

Every writer goes through the same recipe: write to a temporary file in the
destination's directory, flush and fsync it, then ``os.replace`` it over the
destination (atomic on POSIX and Windows) and fsync the directory. A reader
therefore sees either the old file or the complete new one, never a torn write,
even if the process is killed mid-way.

    from robustopt._io import atomic_write_json
    atomic_write_json("runs/a/results.json", {"robust_accuracy": 0.93})
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "json_default",
    "json_ready",
    "sha256_file",
]


def _read_umask() -> int:
    # mkstemp creates files with mode 0600; final files should get the usual
    # permissions, so read the process umask once (os.umask can only be read by
    # setting it).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable by syncing its directory (POSIX only, best effort)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` atomically on success.

    For writers that insist on a file name (``torch.save``,
    ``safetensors.torch.save_file``). The temporary file lives in the same
    directory (so the final rename never crosses a file system) and is named
    ``.<name>.<random>.tmp``. On leaving the block without an error it is
    fsynced and moved over ``path``; on any error it is deleted and ``path`` is
    left untouched.

    Args:
        path: Destination file. Its parent directory is created if needed.

    Yields:
        The temporary path to write to.

    Example:
        >>> with atomic_path("model.pt") as tmp:  # doctest: +SKIP
        ...     torch.save(obj, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, ``os.replace``).

    Args:
        path: Destination file; parent directories are created.
        data: The complete file content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically. See :func:`atomic_write_bytes`.

    Args:
        path: Destination file; parent directories are created.
        text: The complete file content.
        encoding: Text encoding.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return atomic_write_bytes(path, text.encode(encoding))


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` hook for the values results and configs hold.

    Converts dataclasses, paths, enums, sets, numpy scalars/arrays and torch
    tensors (via ``.tolist()``) to JSON types; anything else raises TypeError.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    # numpy and torch without importing them: both expose tolist()/item().
    module = type(obj).__module__.split(".")[0]
    if module in ("numpy", "torch") and hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(
        f"object of type {type(obj).__qualname__} is not JSON serializable; "
        "convert it to str, number, list or dict first"
    )


def json_ready(obj: Any) -> Any:
    """``obj`` as it reads back from a JSON file: dicts with string keys, lists, str, int, float, bool, None.

    Tuples become lists, numbers used as keys become strings, and the types :func:`json_default`
    knows are converted by it; what a JSON file cannot hold raises TypeError. Use it to compare a
    value with one read from a file.

    Example:
        >>> json_ready({"bounds": (0.0, 1.0), 1: Path("a")})
        {'bounds': [0.0, 1.0], '1': 'a'}
    """
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        return str.__str__(obj)  # a str subclass (e.g. a str enum) as the plain string JSON writes
    if isinstance(obj, int) and not isinstance(obj, enum.Enum):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, dict):
        return {_json_key(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return json_ready(json_default(obj))


def _json_key(key: Any) -> str:
    """A dict key as JSON writes it (``json.dumps`` accepts str, int, float, bool and None keys)."""
    if isinstance(key, str):
        return str.__str__(key)
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    raise TypeError(f"a JSON object key must be a string or a number, got {type(key).__qualname__}.")


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Serialize ``obj`` as JSON and write it atomically.

    The object is serialized completely before anything touches the disk, so a
    serialization error never leaves a partial file.

    Args:
        path: Destination file; parent directories are created.
        obj: JSON-serializable object (see :func:`json_default` for the extra
            types accepted).
        indent: Passed to :func:`json.dumps`.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: If ``obj`` holds a value that cannot be serialized.
    """
    text = json.dumps(obj, indent=indent, default=json_default)
    return atomic_write_text(path, text + "\n")


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file, read in chunks.

    Args:
        path: File to hash.
        chunk_size: Bytes per read.

    Returns:
        The 64-character lowercase hex digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()
