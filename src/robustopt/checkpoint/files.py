"""The checkpoint's files: their layout, the JSON commit marker, backups, verification, removal.

A checkpoint ``runs/a/model`` is ``model.json`` (the commit marker, written last) and the
payload files it names with their sha256 (``model.safetensors``, ``model.optim.pt``,
``model.tensors.safetensors``). While a save overwrites a checkpoint, the committed payload
files are kept as hard-linked ``<file>.<sha16>.bak`` until the new JSON is in place;
:func:`verified_file` falls back to such a backup when the file itself does not match.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch

from robustopt._io import atomic_path, sha256_file

__all__ = [
    "FORMAT", "VERSION", "WEIGHTS_SUFFIX", "META_SUFFIX", "OPTIM_SUFFIX", "TENSORS_SUFFIX", "PathLike",
    "CheckpointPaths", "checkpoint_paths", "exists", "backup_path", "leftovers", "committed_files", "keep_backup",
    "restore_backup", "save_safetensors", "write_payload", "missing_files_error", "read_metadata", "verified_file",
    "verify", "remove",
]

FORMAT = "robustopt-checkpoint"
VERSION = 1

WEIGHTS_SUFFIX = ".safetensors"
META_SUFFIX = ".json"
OPTIM_SUFFIX = ".optim.pt"
TENSORS_SUFFIX = ".tensors.safetensors"

PathLike = str | os.PathLike[str]


class CheckpointPaths(NamedTuple):
    """The files that make up one checkpoint."""

    base: Path
    weights: Path
    metadata: Path
    optimizer: Path
    tensors: Path


def checkpoint_paths(path: PathLike) -> CheckpointPaths:
    """Files of the checkpoint at ``path`` (with or without a known suffix).

    Args:
        path: ``runs/a/model``, ``runs/a/model.json``, ``runs/a/model.safetensors``
            or ``runs/a/model.optim.pt``.

    Returns:
        The base path and the weights, metadata and optimizer file paths.
    """
    s = os.fspath(path)
    for suffix in (TENSORS_SUFFIX, OPTIM_SUFFIX, WEIGHTS_SUFFIX, META_SUFFIX):
        if s.endswith(suffix) and len(s) > len(suffix):
            s = s[: -len(suffix)]
            break
    base = Path(s)
    return CheckpointPaths(
        base,
        Path(s + WEIGHTS_SUFFIX),
        Path(s + META_SUFFIX),
        Path(s + OPTIM_SUFFIX),
        Path(s + TENSORS_SUFFIX),
    )


def exists(path: PathLike) -> bool:
    """True if a committed checkpoint (its JSON metadata) exists at ``path``."""
    return checkpoint_paths(path).metadata.is_file()


# ----------------------------------------------------------------------------- backups


_BAK_RE = re.compile(r"\.[0-9a-f]{16}\.bak$")


def backup_path(file: Path, sha256: str) -> Path:
    return file.with_name(f"{file.name}.{sha256[:16]}.bak")


def leftovers(file: Path) -> list[Path]:
    """Backups (``<name>.<sha16>.bak``) and temp files (``.<name>.*.tmp``) of ``file``."""
    if not file.parent.is_dir():
        return []
    found = []
    for p in file.parent.iterdir():
        n = p.name
        if n.startswith(file.name + ".") and _BAK_RE.search(n) and len(n) == len(file.name) + 21:
            found.append(p)
        elif n.startswith(f".{file.name}.") and n.endswith(".tmp"):
            found.append(p)
    return found


def committed_files(paths: CheckpointPaths) -> dict[str, str]:
    """sha256 of the payload files named by the existing JSON, if it is readable."""
    try:
        meta = json.loads(paths.metadata.read_text(encoding="utf-8"))
        files = meta["files"] if meta.get("format") == FORMAT else {}
        return {
            k: v["sha256"]
            for k, v in files.items()
            if isinstance(v, dict) and isinstance(v.get("sha256"), str)
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def keep_backup(file: Path, sha256: str) -> Path | None:
    """Hard-link (else copy) the committed ``file`` to its backup name."""
    bak = backup_path(file, sha256)
    if bak.exists() or not file.exists():
        # An existing backup comes from an earlier interrupted save and is the
        # one that matches the committed JSON: keep it.
        return bak if bak.exists() else None
    try:
        os.link(file, bak)
    except OSError:
        shutil.copy2(file, bak)
    return bak


def restore_backup(backup: Path, file: Path) -> None:
    """Move ``backup`` back over ``file``."""
    if file.exists() and os.path.samefile(backup, file):
        # Still the same inode (file was never replaced); rename() would be a
        # no-op that leaves the backup name behind.
        backup.unlink()
    else:
        os.replace(backup, file)


def save_safetensors(tensors: dict[str, torch.Tensor], file: Path) -> None:
    """Write ``tensors`` to ``file`` in safetensors format, as bytes that depend on the tensors alone.

    safetensors lays the data out by dtype, then name, whatever the dict's order, but writes its
    header's metadata in a hash-map order that differs between processes. The header is written
    again here with its metadata keys sorted and the tensors in their data order, so that equal
    tensors give byte-identical files (``sha256sum`` agrees across runs and resumes).
    """
    from safetensors.torch import save

    blob = save(tensors, metadata={"format": "pt", "producer": FORMAT})
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    meta = header.pop("__metadata__", {})
    ordered = {"__metadata__": dict(sorted(meta.items())),
               **dict(sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"], kv[0])))}
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes, keeping the data aligned
    with open(file, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        f.write(blob[8 + size :])


def write_payload(files: dict[str, Any], key: str, file: Path, write: Callable[[Path], None]) -> None:
    """Write payload ``file`` atomically with ``write(tmp)``; record its name, sha256 and size as ``files[key]``."""
    with atomic_path(file) as tmp:
        write(tmp)
        files[key] = {"name": file.name, "sha256": sha256_file(tmp), "bytes": tmp.stat().st_size}


# ----------------------------------------------------------------------------- reading


def missing_files_error(paths: CheckpointPaths, missing: list[Path]) -> FileNotFoundError:
    names = ", ".join(str(p) + (" (there, but not a regular file)" if p.exists() else "") for p in missing)
    msg = f"checkpoint {paths.base} is incomplete or does not exist: missing {names}."
    if paths.metadata in missing and paths.weights not in missing:
        msg += " The .json is written last, so a missing .json means the save did not finish."
    if paths.base.is_dir():
        found = sorted(p.with_suffix("") for p in paths.base.glob("*" + META_SUFFIX))
        msg += f" {paths.base} is a directory; pass a checkpoint inside it"
        msg += f" such as {found[0]}." if found else "."
    return FileNotFoundError(msg)


def read_metadata(path: PathLike) -> dict[str, Any]:
    """Read and validate the JSON metadata of a checkpoint (weights unchecked).

    Args:
        path: Checkpoint path, with or without suffix.

    Returns:
        The metadata dict (see the module docstring for its keys).

    Raises:
        FileNotFoundError: If the JSON file does not exist.
        ValueError: If it is not valid JSON or not a robustopt checkpoint.
    """
    paths = checkpoint_paths(path)
    if not paths.metadata.is_file():
        raise missing_files_error(paths, [paths.metadata])
    try:
        meta = json.loads(paths.metadata.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"not a robustopt checkpoint (or a truncated one): {paths.metadata} is not "
            f"valid JSON ({e})"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(
            f'not a robustopt checkpoint: {paths.metadata} lacks the marker "format": "{FORMAT}"'
        )
    version = meta.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(
            f"{paths.metadata} has checkpoint format version {version!r}; this robustopt reads "
            f"version <= {VERSION}, upgrade robustopt"
        )
    weights = (meta.get("files") or {}).get("weights")
    if not isinstance(weights, dict) or not isinstance(weights.get("sha256"), str):
        raise ValueError(f"not a robustopt checkpoint: {paths.metadata} names no weights sha256")
    return meta


def verified_file(file: Path, entry: dict[str, Any]) -> Path:
    """Return ``file`` or its backup, whichever matches the committed sha256."""
    sha = entry["sha256"]
    if file.is_file() and sha256_file(file) == sha:
        return file
    bak = backup_path(file, sha)
    if bak.is_file() and sha256_file(bak) == sha:
        warnings.warn(
            f"{file} does not match its metadata (an interrupted save?); loading the "
            f"committed version from {bak.name}",
            RuntimeWarning,
            stacklevel=3,
        )
        return bak
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint file {file} is missing")
    raise ValueError(
        f"corrupt or partially written checkpoint: sha256 of {file} does not match the one "
        f"recorded in its .json ({sha[:16]}...); re-save or restore the checkpoint"
    )


def verify(path: PathLike) -> dict[str, Any]:
    """Check that the checkpoint at ``path`` is complete and intact, without loading it; return its metadata.

    Every payload file its JSON names (weights, optimizer state, extra tensors) must be there
    with the recorded sha256 (or its committed backup, as :func:`load` would use).

    Raises:
        FileNotFoundError: the JSON or a payload file is missing.
        ValueError: the JSON is not a robustopt checkpoint, or a file does not match its sha256.
    """
    paths = checkpoint_paths(path)
    meta = read_metadata(paths.metadata)
    payload = {"weights": paths.weights, "optimizer": paths.optimizer, "tensors": paths.tensors}
    for key, entry in (meta.get("files") or {}).items():
        if key in payload and isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
            verified_file(payload[key], entry)
    return meta


def remove(path: PathLike) -> None:
    """Delete the checkpoint at ``path``, if any: its JSON first, then its payload files and leftovers.

    The JSON goes first, so an interrupted removal leaves no checkpoint that looks
    committed (:func:`exists` is False from the first step on).

    Args:
        path: Checkpoint path, with or without suffix.
    """
    paths = checkpoint_paths(path)
    files = (paths.metadata, paths.weights, paths.optimizer, paths.tensors)
    for file in files:
        file.unlink(missing_ok=True)
    for file in files:
        for leftover in leftovers(file):
            with contextlib.suppress(OSError):
                leftover.unlink()
