"""The progress file of a resumable evaluation: its state, the job it belongs to, reading and writing it.

``evaluate(..., progress_file=path)`` writes its state after every finished batch
(:func:`save`): per-example flags packed as bits, the attack and batch reached, the finished
rows, the counters. The file records a fingerprint of the job (:func:`job_fingerprint`: the
attacks' configurations and the weights of every model involved, the data, mode, seed and
batch size); :func:`load` gives the state back only for the same job, and raises
:class:`ProgressFileError` for an unreadable file or another job's.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from robustopt._io import atomic_write_json, json_default
from robustopt.attacks.base import Attack
from robustopt.data.formats import Streamed
from robustopt.evaluation.results import Row

__all__ = ["ProgressFileError", "FORMAT", "VERSION", "job_fingerprint", "pack_flags", "unpack_flags", "mask",
           "save", "load"]

FORMAT = "robustopt-evaluation-progress"
VERSION = 1


class ProgressFileError(ValueError):
    """A progress file that cannot be used: unreadable, or holding the progress of another evaluation.

    Attributes:
        path: the file.
        problem: what is wrong with it (the message without the advice).
    """

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{problem} Delete it to start the evaluation over, or pass another progress_file.")


def _tensor_digest(h: Any, t: torch.Tensor, samples: int, with_sum: bool) -> None:
    """Feed shape, dtype, a strided sample (exact bytes) and optionally the sum of ``t`` into ``h``."""
    t = t.detach()
    h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
    flat = t.reshape(-1)
    if flat.numel() == 0:
        return
    step = -(-flat.numel() // samples)
    sample = flat[::step].cpu().contiguous()
    h.update(sample.view(torch.uint8).numpy().tobytes())
    if with_sum:
        # The sum sees every element; printed to 9 digits so that resuming on another
        # device, whose reduction order may differ in the last bits, still matches.
        h.update(f"|{float(flat.double().sum()):.9g}".encode())


def _module_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            _tensor_digest(h, t, samples=256, with_sum=True)
    return h.hexdigest()[:16]


def _attack_identity(attack: Attack) -> dict[str, Any]:
    """An attack's describe() plus a digest of every model it holds (e.g. a transfer source)."""
    out: dict[str, Any] = {"describe": attack.describe()}
    if dataclasses.is_dataclass(attack):
        for f in dataclasses.fields(attack):
            value = getattr(attack, f.name)
            if isinstance(value, nn.Module):
                out[f.name] = _module_digest(value)
            elif isinstance(value, Attack):
                out[f.name] = _attack_identity(value)
    return out


def _json_key(obj: Any) -> str:
    def fallback(o: Any) -> Any:
        try:
            return json_default(o)
        except TypeError:
            return repr(o)

    return json.dumps(obj, sort_keys=True, default=fallback)


def job_fingerprint(model: nn.Module, x: torch.Tensor | Streamed, y: torch.Tensor, attacks: Sequence[Attack], *,
                    mode: str, seed: int, batch_size: int) -> dict[str, Any]:
    """What identifies an evaluation job, part by part, so that a mismatch can be named."""
    data = hashlib.sha256()
    _tensor_digest(data, x.sample() if isinstance(x, Streamed) else x, samples=1 << 16, with_sum=False)
    _tensor_digest(data, y, samples=1 << 62, with_sum=False)  # all labels
    attack_ids = hashlib.sha256(_json_key([_attack_identity(a) for a in attacks]).encode())
    return {
        "attacks": attack_ids.hexdigest()[:16],
        "model": _module_digest(model),
        "data": data.hexdigest()[:16],
        "mode": mode,
        "seed": seed,
        "batch_size": batch_size,
        "n": len(x),
    }


def pack_flags(flags: torch.Tensor) -> str:
    """Bool flags as base64 text, one bit each."""
    return base64.b64encode(np.packbits(flags.cpu().numpy().astype(np.uint8)).tobytes()).decode("ascii")


def unpack_flags(text: Any, n: int) -> torch.Tensor:
    """The inverse of :func:`pack_flags` for ``n`` flags; TypeError/ValueError for anything else."""
    if not isinstance(text, str):
        raise TypeError(f"flags must be a base64 string, got {type(text).__name__}")
    raw = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8)
    if raw.size != (n + 7) // 8:
        raise ValueError(f"flags for {raw.size * 8} examples, expected {n}")
    return torch.from_numpy(np.unpackbits(raw)[:n].astype(bool))


def mask(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Bool (n,): True at the positions ``idx``."""
    m = torch.zeros(n, dtype=torch.bool, device=idx.device)
    m[idx] = True
    return m


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (JSON-ready, with ``FORMAT``, ``VERSION`` and the job) to ``path`` atomically."""
    atomic_write_json(path, state, indent=None)


def load(path: Path, job: dict[str, Any], *, n: int, n_attacks: int) -> dict[str, Any] | None:
    """The saved state of ``job`` in ``path`` (flags as tensors, rows as :class:`Row`), or None if there is none.

    Raises:
        ProgressFileError: the file is unreadable, inconsistent, or holds another job's progress.
    """
    if not path.exists():
        return None

    def unreadable(why: Any) -> ProgressFileError:
        return ProgressFileError(path, f"{path} is not a usable robustopt evaluation progress file ({why}).")

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise unreadable(err) from err
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise unreadable("no progress-file header")
    if raw.get("version") != VERSION:
        raise unreadable(f"format version {raw.get('version')!r}, this robustopt writes {VERSION}")
    saved_job = raw.get("job")
    if not isinstance(saved_job, dict):
        raise unreadable("no job fingerprint")
    if saved_job != job:
        differ = [k for k in job if saved_job.get(k) != job[k]] or ["fingerprint"]
        raise ProgressFileError(path, f"{path} holds the progress of another evaluation (different {', '.join(differ)}).")
    try:
        state = {
            "sessions": int(raw["sessions"]),
            "seconds": float(raw["seconds"]),
            "correct": unpack_flags(raw["correct"], n),
            "robust": unpack_flags(raw["robust"], n),
            "rows": [Row.from_dict(r, total=n) for r in raw["rows"]],
            "attack": int(raw["attack"]),
            "batch": int(raw["batch"]),
            "todo": unpack_flags(raw["todo"], n),
            "survived": unpack_flags(raw["survived"], n),
            "grad_evals": int(raw["grad_evals"]),
            "attack_seconds": float(raw["attack_seconds"]),
            "forwards": int(raw.get("forwards", 0)),  # absent from files written before these were kept
            "records": dict(raw.get("records") or {}),
            "fooled": raw.get("fooled"),
        }
    except (KeyError, TypeError, ValueError) as err:
        raise unreadable(err) from err
    todo_batches = -(-int(state["todo"].sum()) // job["batch_size"])
    checks = [
        (0 <= state["attack"] < n_attacks, "attack index out of range"),
        (len(state["rows"]) == state["attack"] + 1, "row count does not match the attack index"),
        (0 <= state["batch"] <= todo_batches, "batch index out of range"),
        (not bool((state["robust"] & ~state["correct"]).any()), "robust flags outside the correct ones"),
        (not bool((state["todo"] & ~state["correct"]).any()), "attacked examples outside the correct ones"),
        (not bool((state["survived"] & ~state["correct"]).any()), "survived flags outside the correct ones"),
    ]
    for ok, why in checks:
        if not ok:
            raise unreadable(why)
    return state
