"""Safe checkpoints: safetensors weights + a JSON commit marker.

A checkpoint at ``runs/a/model`` is up to three files::

    runs/a/model.safetensors   weights (model.state_dict(), CPU, contiguous; the same
                               tensors give the same bytes, whatever their order)
    runs/a/model.optim.pt      optimizer state (optional; torch.save, loaded
                               with weights_only=True)
    runs/a/model.tensors.safetensors
                               extra named tensors (optional; e.g. a training
                               method's state), read with :func:`load_tensors`
    runs/a/model.json          metadata, written last: format marker, model
                               registry name + ModelConfig, training config,
                               extra (epoch, metrics...), torch version and the
                               sha256 of every payload file

Each file is written atomically (temp file, fsync, ``os.replace``). The JSON is
the commit marker: a checkpoint is what its JSON describes, and :func:`load`
refuses payload files whose sha256 does not match. While a save overwrites an
existing checkpoint, the previously committed payload files are kept as
hard-linked ``<file>.<sha16>.bak`` until the new JSON is in place, so a crash at
any point leaves the previous checkpoint loadable (:func:`load` falls back to
the backup that matches the committed JSON, with a warning).

Nothing is unpickled from the weights file, and the optimizer file is read with
``weights_only=True``, so loading an untrusted checkpoint executes no code.

    import robustopt as ro
    ro.checkpoint.save("runs/a/model", model, config=cfg, extra={"epoch": 3})
    model, meta = ro.checkpoint.load("runs/a/model")       # rebuilt from the registry
    model, meta = ro.checkpoint.load("runs/a/model", model=MyNet())
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pickle
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from robustopt._io import atomic_path, atomic_write_json, json_default, sha256_file
from robustopt.models.registry import ModelConfig
from robustopt.models.weights import load_state, load_weights, unwrap  # load_weights: also public here

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointPaths",
    "checkpoint_paths",
    "exists",
    "save",
    "load",
    "load_tensors",
    "read_metadata",
    "remove",
    "verify",
    "load_weights",
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


# ----------------------------------------------------------------------------- helpers


def _plain_json(obj: Any, what: str) -> Any:
    """Round-trip ``obj`` through JSON so what is returned equals what is stored."""
    if obj is None:
        return {}
    try:
        return json.loads(json.dumps(obj, default=json_default))
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint {what} must be JSON serializable: {e}") from None


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict() as CPU, contiguous tensors that own their memory.

    safetensors refuses tensors that share storage (tied weights, views), so
    any tensor that is a view or an alias is cloned.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict entry {key!r} is a {type(t).__name__}, not a tensor")
        t = t.detach().to("cpu")
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        whole = t.is_contiguous() and t.storage_offset() == 0 and (
            storage.nbytes() == t.numel() * t.element_size()
        )
        if not whole or (ptr in seen and t.numel() > 0):
            t = t.clone(memory_format=torch.contiguous_format)
            ptr = t.untyped_storage().data_ptr()
        seen.add(ptr)
        out[key] = t
    return out


_BAK_RE = re.compile(r"\.[0-9a-f]{16}\.bak$")


def _backup_path(file: Path, sha256: str) -> Path:
    return file.with_name(f"{file.name}.{sha256[:16]}.bak")


def _leftovers(file: Path) -> list[Path]:
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


def _committed_files(paths: CheckpointPaths) -> dict[str, str]:
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


def _keep_backup(file: Path, sha256: str) -> Path | None:
    """Hard-link (else copy) the committed ``file`` to its backup name."""
    bak = _backup_path(file, sha256)
    if bak.exists() or not file.exists():
        # An existing backup comes from an earlier interrupted save and is the
        # one that matches the committed JSON: keep it.
        return bak if bak.exists() else None
    try:
        os.link(file, bak)
    except OSError:
        shutil.copy2(file, bak)
    return bak


def _restore(backup: Path, file: Path) -> None:
    """Move ``backup`` back over ``file``."""
    if file.exists() and os.path.samefile(backup, file):
        # Still the same inode (file was never replaced); rename() would be a
        # no-op that leaves the backup name behind.
        backup.unlink()
    else:
        os.replace(backup, file)


def _save_safetensors(tensors: dict[str, torch.Tensor], file: Path) -> None:
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


def _write_payload(files: dict[str, Any], key: str, file: Path, write: Callable[[Path], None]) -> None:
    """Write payload ``file`` atomically with ``write(tmp)``; record its name, sha256 and size as ``files[key]``."""
    with atomic_path(file) as tmp:
        write(tmp)
        files[key] = {"name": file.name, "sha256": sha256_file(tmp), "bytes": tmp.stat().st_size}


# ----------------------------------------------------------------------------- save


def save(
    path: PathLike,
    model: nn.Module,
    *,
    config: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save ``model`` (and optionally the optimizer) as a checkpoint.

    Writes ``<path>.safetensors``, then ``<path>.optim.pt`` if an optimizer is
    given, then ``<path>.json`` (the commit marker), each atomically. Overwriting
    an existing checkpoint is crash-safe: until the new JSON is in place the
    old payload files stay available and :func:`load` returns the old
    checkpoint. A stale optimizer file is removed when saving without one.

    Args:
        path: Checkpoint path without suffix (``runs/a/model``); a known suffix
            is stripped. Parent directories are created.
        model: The model; ``torch.compile``/DataParallel wrappers are stripped.
            If it carries a registry :class:`~robustopt.models.ModelConfig` as
            ``model.config``, the checkpoint can be loaded without a model.
        config: Training configuration (a dict or dataclass; JSON serializable).
        optimizer: Optimizer whose ``state_dict()`` is saved.
        extra: Anything else to record (epoch, step, metrics...), JSON
            serializable.
        tensors: Extra named tensors (e.g. a training method's state), saved
            to ``<path>.tensors.safetensors``; read them with :func:`load_tensors`.

    Returns:
        Path of the metadata file ``<path>.json``; pass it (or ``path``) to
        :func:`load`.

    Raises:
        TypeError: If ``config``/``extra`` are not JSON serializable (nothing
            is written then).
        ValueError: If ``path`` is a directory.
    """
    paths = checkpoint_paths(path)
    if paths.base.is_dir():
        raise ValueError(
            f"{paths.base} is a directory; pass a file stem such as {paths.base / 'model'}"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    model = unwrap(model)
    # Everything that can fail on bad input runs before the first byte is written.
    user_config = _plain_json(config, "config")
    user_extra = _plain_json(extra, "extra")
    weights = _state_tensors(model)
    optim_state = optimizer.state_dict() if optimizer is not None else None
    if tensors is not None:
        if not isinstance(tensors, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
        ):
            raise TypeError("checkpoint tensors must be a dict mapping str names to tensors")
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    model_config = getattr(model, "config", None)
    if not isinstance(model_config, ModelConfig):
        model_config = None  # a user attribute that happens to be called "config"

    paths.base.parent.mkdir(parents=True, exist_ok=True)
    payload = {"weights": paths.weights, "optimizer": paths.optimizer, "tensors": paths.tensors}
    existed = {k: f.exists() for k, f in payload.items()}
    backups: dict[str, Path] = {}
    for key, sha in _committed_files(paths).items():
        if key in payload and (bak := _keep_backup(payload[key], sha)) is not None:
            backups[key] = bak

    files: dict[str, Any] = {"weights": None, "optimizer": None}
    try:
        _write_payload(files, "weights", paths.weights, lambda tmp: _save_safetensors(weights, tmp))
        if optim_state is not None:
            _write_payload(files, "optimizer", paths.optimizer, lambda tmp: torch.save(optim_state, tmp))
        if tensors is not None:
            _write_payload(files, "tensors", paths.tensors, lambda tmp: _save_safetensors(tensors, tmp))
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "model": {
                "name": model_config.name if model_config is not None else None,
                "config": model_config.to_dict() if model_config is not None else None,
                "class": f"{type(model).__module__}.{type(model).__qualname__}",
            },
            "config": user_config,
            "extra": user_extra,
            "files": files,
            "torch_version": torch.__version__,
            "robustopt_version": _robustopt_version(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_json(paths.metadata, meta)  # commit point
    except BaseException:
        # Best effort: put the committed payload back so the directory is as it
        # was. If this fails too, load() still finds the backups.
        for key, file in payload.items():
            with contextlib.suppress(OSError):
                if key in backups:
                    _restore(backups[key], file)
                elif not existed[key] and files.get(key) is not None:
                    file.unlink()
        raise

    if optim_state is None:
        with contextlib.suppress(FileNotFoundError):
            paths.optimizer.unlink()  # stale state from an earlier save
    if tensors is None:
        with contextlib.suppress(FileNotFoundError):
            paths.tensors.unlink()
    for file in payload.values():
        for leftover in _leftovers(file):
            with contextlib.suppress(OSError):
                leftover.unlink()
    for leftover in _leftovers(paths.metadata):
        with contextlib.suppress(OSError):
            leftover.unlink()
    return paths.metadata


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
        for leftover in _leftovers(file):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _robustopt_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("robustopt")
    except Exception:  # not installed (e.g. run from a source tree)
        return None


# ----------------------------------------------------------------------------- load


def _missing_files_error(paths: CheckpointPaths, missing: list[Path]) -> FileNotFoundError:
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
        raise _missing_files_error(paths, [paths.metadata])
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


def _verified(file: Path, entry: dict[str, Any]) -> Path:
    """Return ``file`` or its backup, whichever matches the committed sha256."""
    sha = entry["sha256"]
    if file.is_file() and sha256_file(file) == sha:
        return file
    bak = _backup_path(file, sha)
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
            _verified(payload[key], entry)
    return meta


def _first_line(err: Exception) -> str:
    """The first non-empty line of ``err``'s message (torch's are often several paragraphs)."""
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


def _model_from_metadata(meta: dict[str, Any], paths: CheckpointPaths) -> nn.Module:
    info = meta.get("model") or {}
    if not info.get("name") or not info.get("config"):
        raise ValueError(
            f"checkpoint {paths.base} was saved from a custom model ({info.get('class', '?')}), "
            "not one from the robustopt.models registry; pass model=<an instance of that "
            "architecture> to load()"
        )
    from robustopt.models import from_config

    try:
        return from_config(info["config"])
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"cannot rebuild model {info['name']!r} of checkpoint {paths.base} from the registry "
            f"({e}); import the module that registers it, or pass model="
        ) from None


def load(
    path: PathLike,
    model: nn.Module | None = None,
    *,
    map_location: str | torch.device = "cpu",
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save`, verifying it first.

    Args:
        path: Checkpoint path, with or without suffix.
        model: Model to load the weights into. If None, the model is rebuilt
            from the registry name and ModelConfig stored in the metadata (only
            possible for models made with ``robustopt.models.create``).
        map_location: Device the tensors are loaded to; a rebuilt model is
            moved there.
        optimizer: If given, its state is restored from ``<path>.optim.pt``
            (a warning is issued if the checkpoint has no optimizer state).

    Returns:
        ``(model, metadata)``: the model in eval mode, and the metadata dict.

    Raises:
        FileNotFoundError: If the weights or metadata file is missing.
        ValueError: If the metadata is not a robustopt checkpoint, a file does
            not match its sha256 (corrupt or partially written), the weights
            cannot be parsed, or their keys/shapes do not fit ``model``.
    """
    from safetensors.torch import load_file

    paths = checkpoint_paths(path)
    missing = [f for f in (paths.weights, paths.metadata) if not f.is_file()]
    # A missing weights file is fine if the committed backup is there.
    if paths.weights in missing and paths.metadata not in missing:
        entry = _committed_files(paths).get("weights")
        if entry and _backup_path(paths.weights, entry).is_file():
            missing.remove(paths.weights)
    if missing:
        raise _missing_files_error(paths, missing)
    meta = read_metadata(paths.metadata)
    weights_file = _verified(paths.weights, meta["files"]["weights"])

    device = str(map_location)
    try:
        state = load_file(os.fspath(weights_file), device=device)
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"cannot read weights {weights_file}: {e}") from None

    if model is None:
        model = _model_from_metadata(meta, paths).to(device)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    saved = (meta.get("model") or {}).get("name") or (meta.get("model") or {}).get("class")
    load_state(unwrap(model), state, f"checkpoint {paths.base} (saved from {saved})")

    if optimizer is not None:
        entry = (meta.get("files") or {}).get("optimizer")
        if not entry:
            warnings.warn(
                f"checkpoint {paths.base} has no optimizer state; the optimizer is left unchanged",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            optim_file = _verified(paths.optimizer, entry)
            try:
                optim_state = torch.load(optim_file, map_location=device, weights_only=True)
            except pickle.UnpicklingError as e:
                named = re.search(r"GLOBAL (\S+)", str(e))
                raise ValueError(
                    f"refused to load the optimizer state {optim_file}: it holds pickled Python objects other than "
                    f"tensors{f' (it names {named.group(1)})' if named else ''}, and unpickling them could run code. "
                    "Only tensors and numbers are read from a checkpoint: delete this checkpoint and train again."
                ) from None
            except Exception as e:  # zip and pickle errors of a damaged file
                raise ValueError(f"cannot load optimizer state from {optim_file}: {_first_line(e)}") from None
            try:
                optimizer.load_state_dict(optim_state)
            except Exception as e:  # an optimizer of another kind or of other parameters
                raise ValueError(f"cannot load optimizer state from {optim_file}: {_first_line(e)}") from None

    model.eval()
    return model, meta


def load_tensors(path: PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The extra tensors saved with ``save(..., tensors=...)``, verified against the metadata.

    Args:
        path: Checkpoint path, with or without suffix.
        map_location: Device the tensors are loaded to.

    Returns:
        The dict of named tensors; empty if the checkpoint has none.

    Raises:
        FileNotFoundError: If the metadata or the tensors file is missing.
        ValueError: If the tensors file does not match its sha256 or cannot be read.
    """
    from safetensors.torch import load_file

    paths = checkpoint_paths(path)
    meta = read_metadata(paths.metadata)
    entry = (meta.get("files") or {}).get("tensors")
    if not entry:
        return {}
    file = _verified(paths.tensors, entry)
    try:
        return load_file(os.fspath(file), device=str(map_location))
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"cannot read tensors {file}: {e}") from None
