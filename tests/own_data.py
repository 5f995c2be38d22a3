"""A user's own data and model, made small in a temporary folder: PNG class folders, an .npz, a model file.

The images are 3x8x8 with four classes, so the full attack suites (APGD-T needs four) run in seconds.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

CLASSES = ("ant", "bee", "cat", "dog")
SIZE = 8

MODEL_SOURCE = '''
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 4))


def broken():
    raise RuntimeError("needs a GPU")
'''


def image_folder(root: Path, per_class: int = 3, seed: int = 0, size: int = SIZE) -> Path:
    """ROOT/CLASS/i.png for the four classes: random RGB images."""
    from PIL import Image

    g = np.random.default_rng(seed)
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(g.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def npz_file(path: Path, n: int = 12, seed: int = 0, compressed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """An .npz with x (n, 8, 8, 3) uint8 (NHWC) and y (n,); returns the arrays."""
    g = np.random.default_rng(seed)
    x = g.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    y = np.arange(n) % len(CLASSES)
    (np.savez_compressed if compressed else np.savez)(path, x=x, y=y)
    return x, y


def model_file(folder: Path) -> Path:
    """folder/net.py with the factories make() and broken()."""
    path = folder / "net.py"
    path.write_text(MODEL_SOURCE)
    return path


def make_model() -> nn.Module:
    """The network of ``model_file``'s make(), built here."""
    namespace: dict = {}
    exec(MODEL_SOURCE, namespace)  # noqa: S102  (our own constant source)
    return namespace["make"]().eval()


def archives(folder: Path, model: nn.Module) -> tuple[Path, Path]:
    """A TorchScript archive and a torch.export archive (dynamic batch) of ``model``."""
    ts, ex = folder / "net.ts", folder / "net.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(ts))
    program = torch.export.export(model, (torch.rand(2, 3, SIZE, SIZE),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(ex))
    return ts, ex


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204  (unpickling this calls os.system)
        return (os.system, (f"touch {self.marker}",))


def malicious_pt(path: Path, marker: Path) -> Path:
    """A .pt whose unpickling would create ``marker`` (it must be refused, never run)."""
    torch.save({"weight": _Payload(marker)}, path)
    return path
