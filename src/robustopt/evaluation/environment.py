"""Where a report was made: package versions, Python, platform, CPUs and the git commit of robustopt."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

__all__ = ["machine_rows"]


def machine_rows() -> list[list[str]]:
    """``[item, value]`` rows: robustopt, torch, numpy, matplotlib and Python versions, platform, CPUs,
    torch threads and the git commit of the robustopt source (see :func:`_git_commit`)."""
    return [
        ["robustopt", _version("robustopt")],
        ["torch", torch.__version__],
        ["numpy", np.__version__],
        ["matplotlib", _version("matplotlib")],
        ["python", platform.python_version() + f" ({platform.python_implementation()})"],
        ["platform", platform.platform()],
        ["CPUs", str(os.cpu_count() or "?")],
        ["torch threads", str(torch.get_num_threads())],
        ["git commit", _git_commit() or "not a git working tree"],
    ]


def _git_commit() -> str:
    """HEAD of the git working tree robustopt is imported from, "+ uncommitted changes" if dirty; "" if none."""
    folder = Path(__file__).resolve().parents[1]  # the robustopt package
    try:
        # Only when the package's own source is tracked there (not a site-packages copy inside some repo).
        subprocess.run(["git", "ls-files", "--error-unmatch", "__init__.py"], cwd=folder, capture_output=True,
                       check=True, timeout=10)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + (" (+ uncommitted changes)" if dirty else "")


def _version(package: str) -> str:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # noqa: BLE001  (not installed, or no metadata)
        module = sys.modules.get(package)
        return str(getattr(module, "__version__", "")) if module else ""
