"""glibc malloc tuning: freed large blocks are kept for reuse instead of being faulted in anew."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

import robustopt as ro
from robustopt import malloc
from robustopt.cli import main

# Faults of allocating, touching and freeing a 64 MiB tensor 5 times (after a first, warm-up time).
_PROBE = """
import resource, sys, torch
import robustopt as ro
if sys.argv[1] == "tuned":
    assert ro.tune_malloc()
def cycle():
    t = torch.empty(16 * 2**20)  # 64 MiB, above glibc's mmap threshold
    t.fill_(1.0)
    del t
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(not malloc.tune_malloc(), reason="needs glibc's mallopt")


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@glibc_only
def test_tuned_malloc_reuses_freed_blocks_instead_of_faulting_them_in():
    pages = 5 * 64 * 2**20 // 4096
    assert _faults("default") > 0.8 * pages  # every cycle maps and zero-fills fresh pages
    assert _faults("tuned") <= pages // 5  # the freed block is reused (seen: 0, once one cycle's pages)


def test_tune_malloc_is_idempotent_and_does_nothing_off_linux(monkeypatch):
    assert ro.tune_malloc() == ro.tune_malloc()
    monkeypatch.setattr(malloc.sys, "platform", "darwin")
    assert malloc.tune_malloc() is False


@pytest.mark.parametrize("env, calls", [({}, 1), ({"ROBUSTOPT_MALLOC": "default"}, 0)])
def test_the_command_tunes_malloc_unless_told_not_to(monkeypatch, env, calls):
    seen: list[bool] = []
    monkeypatch.setattr(malloc, "tune_malloc", lambda: seen.append(True) or True)
    res = CliRunner().invoke(main, ["data", "list"], env=env)
    assert res.exit_code == 0, res.output
    assert len(seen) == calls
