"""The docs cannot drift: docs/api.md matches the live API, and every relative link resolves.

docs/api.md is written by docs/gen_api.py. A public name that exists but is not listed there is
fine (the page lists what it documents); a listed name that no longer exists, or whose signature
changed, fails here: regenerate the page with ``python docs/gen_api.py``.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_PAGE = ROOT / "docs" / "api.md"
ENTRY = re.compile(r"^### `([\w.]+)`\n\n```python\n(.*?)\n```", re.M | re.S)
COMMAND = re.compile(r"^- `(robustopt [^`]*)`:", re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


@functools.cache
def _generator():
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entries() -> list[tuple[str, str]]:
    return ENTRY.findall(API_PAGE.read_text(encoding="utf-8"))


def test_the_api_page_lists_the_public_surface():
    names = {name for name, _ in _entries()}
    for name in ["robustopt.Linf", "robustopt.attacks.PGD", "robustopt.evaluate", "robustopt.suites.standard",
                 "robustopt.audit", "robustopt.sweep", "robustopt.models.create", "robustopt.data.load",
                 "robustopt.training.fit", "robustopt.load_run"]:
        assert name in names, f"{name} is missing from docs/api.md"


@pytest.mark.parametrize("name,listed", _entries(), ids=[name for name, _ in _entries()])
def test_every_listed_name_exists_with_its_live_signature(name, listed):
    gen = _generator()
    try:
        gen.resolve(name)
    except AttributeError:
        pytest.fail(f"docs/api.md lists {name}, which does not exist: regenerate with python docs/gen_api.py")
    assert listed == gen.signature(name), f"the signature of {name} changed: run python docs/gen_api.py"


def test_every_listed_command_exists_with_its_live_usage():
    listed = COMMAND.findall(API_PAGE.read_text(encoding="utf-8"))
    live = {usage for _, usage, _ in _generator().cli_commands()}
    assert {"robustopt train [OPTIONS]", "robustopt eval [OPTIONS] RUN"} & set(listed) or len(listed) >= 5
    for usage in listed:
        assert usage in live, f"docs/api.md lists `{usage}`, not the live CLI: run python docs/gen_api.py"


def test_the_signature_renders_keyword_only_markers_and_drops_self():
    gen = _generator()
    assert gen.signature("robustopt.attacks.PGD").startswith("robustopt.attacks.PGD(\n    threat: ThreatModel,\n    *,\n")
    assert gen.signature("robustopt.ThreatModel.project").startswith("robustopt.ThreatModel.project(x_adv")
    assert gen.signature("robustopt.Evaluation.clean_accuracy") == "robustopt.Evaluation.clean_accuracy"
    with pytest.raises(AttributeError):
        gen.resolve("robustopt.attacks.NoSuchAttack")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{page.name} links to {target}: no such heading in {dest.name}"


def test_the_slug_follows_github():
    assert _slug("gpu.sh: the checks that need a GPU in one run") == "gpush-the-checks-that-need-a-gpu-in-one-run"
    assert _slug("PGD throughput on madry-mnist (the full-MNIST model A)") == \
        "pgd-throughput-on-madry-mnist-the-full-mnist-model-a"
