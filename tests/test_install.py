"""What a plain ``pip install robustopt`` (no extras) brings is enough for every command the README shows.

Two checks: statically, every third-party module that src/ imports (at module level or inside a
function) comes from a core dependency of pyproject.toml; and end to end, the README's commands run
on a tiny run in a fresh interpreter where the extras' packages cannot be imported.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _dist_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_top_levels() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "src" / "robustopt").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name.partition(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.partition(".")[0])
    return names - {"robustopt", "__future__"}


def test_every_third_party_import_is_a_core_dependency():
    core = {_dist_name(r) for r in PYPROJECT["dependencies"]}
    providers = packages_distributions()
    third_party = {n for n in _imported_top_levels() if n not in sys.stdlib_module_names}
    missing = {n: providers.get(n, ["?"]) for n in third_party
               if not {d.lower().replace("_", "-") for d in providers.get(n, [])} & core}
    assert not missing, f"imported by src/ but not a core dependency in pyproject.toml: {missing}"
    assert "matplotlib" in third_party  # the report and the sweep plots: core, as the quick start needs


def _core_closure() -> set[str]:
    """The core dependencies and, transitively, what they require (as installed here)."""
    seen: set[str] = set()
    todo = [_dist_name(r) for r in PYPROJECT["dependencies"]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_dist_name(r) for r in requires if "extra ==" not in r]
    return seen


def _extra_modules() -> list[str]:
    """Top-level module names of the packages that only the optional extras bring."""
    extras = {_dist_name(r) for reqs in PYPROJECT["optional-dependencies"].values() for r in reqs}
    extras = (extras | {"torchattacks"}) - _core_closure()  # torchattacks: the fourth peer, installed by hand
    return sorted(m for m, dists in packages_distributions().items()
                  if {d.lower().replace("_", "-") for d in dists} & extras)


# Runs in a fresh interpreter in which the extras' modules cannot be imported, as after `pip install -e .`.
SCRIPT = textwrap.dedent("""
    import json, sys
    for name in json.loads(sys.argv[1]):
        sys.modules[name] = None  # `import name` raises ModuleNotFoundError; find_spec(name) gives None
    from robustopt.cli import main
    sys.argv = ["robustopt", *sys.argv[2:]]
    main()
""")

TINY = ["--data", "mnist-mini", "--model", "small-cnn", "--train-size", "200", "--epochs", "1", "--steps", "1",
        "--step-size", "0.3", "--batch-size", "50", "--lr", "1e-3", "--method", "pgd"]


@pytest.mark.slow
def test_readme_commands_work_without_extras(tmp_path):
    blocked = _extra_modules()
    assert {"pytest", "pyautoattack"} <= set(blocked)  # the block is real: test extras are installed here
    run = tmp_path / "run"
    env = {**os.environ, "ROBUSTOPT_PROGRESS": "off", "OMP_NUM_THREADS": "1"}
    commands = [
        ["data", "list"],
        ["models", "list"],
        ["train", *TINY, "--out", str(run)],
        ["eval", str(run), "--suite", "madry", "--n", "20", "--max-restarts", "1"],
        ["eval", str(run), "--suite", "standard", "--n", "10"],
        ["sweep", str(run), "--norm", "linf", "--eps", "0,0.1,0.3", "--n", "20"],
        ["report", str(run)],
        ["card", str(run)],
    ]
    for command in commands:
        res = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(blocked), *command], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"robustopt {' '.join(command)}:\n{res.stdout}\n{res.stderr}"
    for name in ("report.md", "report.html", "sweep-linf.png", "robustbench.json"):
        assert (run / name).is_file(), name
