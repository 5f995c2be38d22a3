"""glibc malloc tuned for PyTorch on a CPU: keep freed activation memory instead of returning it.

By default glibc serves every block above its mmap threshold (at most 32 MiB) straight from the
kernel and unmaps it on free, and trims the top of the heap back to the kernel: every attack or
training step then faults in and zero-fills its activations anew (about 2 million minor page faults
per PGD step of preact-resnet18 at batch 500). Three ``mallopt`` settings turn that off: no mmap for
large blocks, no trimming, and a 256 MiB top pad, the tuning that ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=... MALLOC_TOP_PAD_=...`` gives from the environment. The cost is that the peak
heap stays mapped until the process ends. ``bench/allocator.py`` measures the gain against glibc's
defaults, jemalloc and tcmalloc ("glibc-tuned"; docs/performance.md, "Memory allocator").

The ``robustopt`` command applies them at start-up on glibc (``ROBUSTOPT_MALLOC=default`` keeps
glibc's defaults); library users opt in with :func:`tune_malloc`.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["tune_malloc", "SETTINGS"]

# mallopt parameters (malloc.h) and their values.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
SETTINGS: dict[str, int] = {
    "M_MMAP_MAX": 0,  # large blocks come from the heap, which keeps them after free
    "M_TRIM_THRESHOLD": 2**31 - 1,  # never give the top of the heap back (int max; mallopt takes an int)
    "M_TOP_PAD": 256 * 2**20,  # grow the heap in 256 MiB steps
}
_PARAMS = {"M_MMAP_MAX": _M_MMAP_MAX, "M_TRIM_THRESHOLD": _M_TRIM_THRESHOLD, "M_TOP_PAD": _M_TOP_PAD}


def tune_malloc() -> bool:
    """Apply :data:`SETTINGS` to glibc's malloc in this process; affects later allocations.

    Safe to call more than once and anywhere: on a system without glibc (macOS, Windows, musl) it
    does nothing. Under ``LD_PRELOAD`` of another allocator, ``mallopt`` is that allocator's (tcmalloc
    and jemalloc accept and ignore it).

    Returns:
        True if every setting was accepted, False if there is no glibc or one was refused.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # only glibc has it  # noqa: B018
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(mallopt(_PARAMS[name], value) == 1 for name, value in SETTINGS.items())
