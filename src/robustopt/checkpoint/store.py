"""Saving and loading checkpoints: :func:`save`, :func:`load`, :func:`load_tensors`.

The files and their commit protocol are :mod:`robustopt.checkpoint.files`; here, what goes
into them: the model's weights, the optimizer state, extra tensors and the metadata.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustopt._io import atomic_write_json, json_ready
from robustopt.checkpoint.files import (FORMAT, VERSION, CheckpointPaths, PathLike, backup_path, checkpoint_paths,
                                        committed_files, keep_backup, leftovers, missing_files_error, read_metadata,
                                        restore_backup, save_safetensors, verified_file, write_payload)
from robustopt.models.registry import ModelConfig
from robustopt.models.weights import load_state, unwrap

__all__ = ["save", "load", "load_tensors"]


def _plain_json(obj: Any, what: str) -> Any:
    """``obj`` as it reads back from the stored JSON, so what is returned equals what is stored."""
    if obj is None:
        return {}
    try:
        return json_ready(obj)
    except (TypeError, ValueError, RecursionError) as e:
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
    for key, sha in committed_files(paths).items():
        if key in payload and (bak := keep_backup(payload[key], sha)) is not None:
            backups[key] = bak

    files: dict[str, Any] = {"weights": None, "optimizer": None}
    try:
        write_payload(files, "weights", paths.weights, lambda tmp: save_safetensors(weights, tmp))
        if optim_state is not None:
            write_payload(files, "optimizer", paths.optimizer, lambda tmp: torch.save(optim_state, tmp))
        if tensors is not None:
            write_payload(files, "tensors", paths.tensors, lambda tmp: save_safetensors(tensors, tmp))
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
                    restore_backup(backups[key], file)
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
        for leftover in leftovers(file):
            with contextlib.suppress(OSError):
                leftover.unlink()
    for leftover in leftovers(paths.metadata):
        with contextlib.suppress(OSError):
            leftover.unlink()
    return paths.metadata


def _robustopt_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("robustopt")
    except Exception:  # not installed (e.g. run from a source tree)
        return None


# ----------------------------------------------------------------------------- load


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
        entry = committed_files(paths).get("weights")
        if entry and backup_path(paths.weights, entry).is_file():
            missing.remove(paths.weights)
    if missing:
        raise missing_files_error(paths, missing)
    meta = read_metadata(paths.metadata)
    weights_file = verified_file(paths.weights, meta["files"]["weights"])

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
            optim_file = verified_file(paths.optimizer, entry)
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
    file = verified_file(paths.tensors, entry)
    try:
        return load_file(os.fspath(file), device=str(map_location))
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"cannot read tensors {file}: {e}") from None
