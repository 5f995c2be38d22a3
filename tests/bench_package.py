"""The bench scripts, for the tests that check them: ``bench_script("throughput")`` is ``bench.throughput``.

bench/ is a package (bench/__init__.py; its scripts share bench/harness.py). This is the one place
the tests import it: from its folder in this repository, whatever sys.path holds (``python -m
pytest`` from the root would find it anyway; plain ``pytest`` or another working directory would not).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_script(name: str) -> ModuleType:
    """The module ``bench.NAME`` (bench/NAME.py), imported as part of this repository's bench package."""
    package = sys.modules.get("bench")
    if package is None or BENCH not in [Path(p).resolve() for p in getattr(package, "__path__", [])]:
        spec = importlib.util.spec_from_file_location("bench", BENCH / "__init__.py",
                                                      submodule_search_locations=[str(BENCH)])
        package = importlib.util.module_from_spec(spec)
        sys.modules["bench"] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"bench.{name}")
