"""Render docs/api.md, the public API in one page, from the live objects.

Signatures and summaries come from ``inspect`` and the docstrings; the example of each entry
is kept here. Regenerate after changing a public signature (tests/test_docs.py compares the
page with the live objects)::

    python docs/gen_api.py            # writes docs/api.md
    python docs/gen_api.py --check    # exit status 1 if docs/api.md is out of date
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

PAGE = Path(__file__).resolve().parent / "api.md"
WIDTH = 100  # a signature longer than this is written one parameter per line

# (section, [(dotted name, example)]). The example is one or two lines of Python.
SECTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Threat models", [
        ("robustopt.Linf", "t = ro.Linf(0.3)                      # MNIST; ro.Linf(8/255) for CIFAR-10"),
        ("robustopt.L2", "t = ro.L2(2.0)"),
        ("robustopt.L1", "t = ro.L1(10.0, step_quantile=0.99)"),
        ("robustopt.ThreatModel", "t = ro.ThreatModel.from_dict({\"norm\": \"linf\", \"eps\": 0.3})"),
        ("robustopt.ThreatModel.project", "x_adv = t.project(x_adv, x)"),
        ("robustopt.ThreatModel.random_init", "x0 = t.random_init(x, generator=torch.Generator().manual_seed(0))"),
        ("robustopt.ThreatModel.distance", "d = t.distance(x, x_adv)             # shape (N,)"),
        ("robustopt.ThreatModel.step", "x_adv = x_adv + 0.01 * t.step(grad)"),
        ("robustopt.ThreatModel.contains", "assert t.contains(x_adv, x).all()"),
        ("robustopt.ThreatModel.to_dict", "d = t.to_dict()"),
        ("robustopt.ThreatModel.from_dict", "t = ro.ThreatModel.from_dict(t.to_dict())"),
    ]),
    ("Attacks", [
        ("robustopt.attacks.PGD", "atk = ro.attacks.PGD(ro.Linf(0.3), steps=40, step_size=0.01, restarts=1)"),
        ("robustopt.attacks.FGSM", "atk = ro.attacks.FGSM(ro.Linf(0.3))"),
        ("robustopt.attacks.APGD", "atk = ro.attacks.APGD(ro.Linf(0.3), loss=\"dlr\", targeted=True)"),
        ("robustopt.attacks.Square", "atk = ro.attacks.Square(ro.Linf(0.3), queries=5000)"),
        ("robustopt.attacks.FAB", "atk = ro.attacks.FAB(ro.Linf(0.3), targeted=True)"),
        ("robustopt.attacks.Transfer",
         "atk = ro.attacks.Transfer(model_b, ro.attacks.PGD(ro.Linf(0.3), steps=40), source_name=\"B\")"),
        ("robustopt.attacks.AdaptiveAutoAttack", "atk = ro.attacks.AdaptiveAutoAttack(ro.Linf(8 / 255))"),
        ("robustopt.attacks.create", "atk = ro.attacks.create(\"pgd\", ro.Linf(0.3), steps=40)"),
        ("robustopt.attacks.Attack.__call__", "x_adv = atk(model, x, y)              # same shape, dtype, device"),
        ("robustopt.attacks.Attack.run", "res = atk.run(model, x, y)"),
        ("robustopt.attacks.Attack.describe", "d = atk.describe()                    # JSON-ready"),
    ]),
    ("Evaluation", [
        ("robustopt.evaluate",
         "ev = ro.evaluate(model, (x, y), ro.suites.madry(ro.Linf(0.3)), mode=\"independent\")"),
        ("robustopt.Evaluation", "print(ev.clean_accuracy, ev.robust_accuracy)"),
        ("robustopt.Evaluation.clean_accuracy", "ev.clean_accuracy                     # a float in [0, 1]"),
        ("robustopt.Evaluation.robust_accuracy", "ev.robust_accuracy                    # a float in [0, 1]"),
        ("robustopt.Evaluation.table", "print(ev.table(fmt=\"markdown\"))"),
        ("robustopt.Evaluation.to_json", "ev.to_json(\"runs/a/eval.json\")"),
        ("robustopt.Evaluation.from_json", "ev = ro.Evaluation.from_json(\"runs/a/eval.json\")"),
        ("robustopt.evaluation.Row", "for row in ev.rows: print(row.name, row.accuracy, row.grad_evals)"),
        ("robustopt.suites.madry",
         "attacks = ro.suites.madry(ro.Linf(0.3), sources={\"A'\": m2, \"B\": mb, \"A_nat\": mnat})"),
        ("robustopt.suites.standard", "attacks = ro.suites.standard(ro.Linf(8 / 255), version=\"adaptive\")"),
        ("robustopt.suites.register_suite",
         "@ro.suites.register_suite(\"pgd-100\", mode=\"cascade\", summary=\"PGD 100 steps\")\n"
         "def pgd_100(request): return [ro.attacks.PGD(request.threat, steps=100, seed=request.seed)]"),
        ("robustopt.suites.get_suite", "attacks = ro.suites.get_suite(\"madry\").build(ro.suites.SuiteRequest(ro.Linf(0.3)))"),
        ("robustopt.audit", "print(ro.findings_table(ro.audit(model, (x, y), ev)))"),
        ("robustopt.Finding", "errors = [f for f in ro.audit(model, (x, y), ev) if f.level == \"error\"]"),
        ("robustopt.findings_table", "print(ro.findings_table(findings, fmt=\"markdown\"))"),
        ("robustopt.sweep", "curve = ro.sweep(model, (x, y), ro.Linf, [0.0, 0.1, 0.2, 0.3, 0.4])"),
        ("robustopt.SweepCurve", "print(curve.table()); curve.plot(\"sweep.png\", train_eps=0.3)"),
    ]),
    ("Models and data", [
        ("robustopt.models.create", "model = ro.models.create(\"madry-mnist\")"),
        ("robustopt.models.names", "print(ro.models.names())"),
        ("robustopt.data.load", "x, y = ro.data.load(\"mnist\", split=\"test\", root=None)"),
        ("robustopt.data.names", "print(ro.data.names())"),
        ("robustopt.data.register_dataset",
         "ro.data.register_dataset(\"kmnist\", reader=ro.data.idx_reader, shape=(1, 28, 28), classes=KANA, ...)"),
        ("robustopt.zoo.names", "print(ro.zoo.names())"),
        ("robustopt.zoo.load", "model = ro.zoo.load(ro.zoo.names()[0])"),
    ]),
    ("Training and runs", [
        ("robustopt.training.fit",
         "result = ro.training.fit(model, (x, y), method=\"pgd\", eps=0.3, epochs=5, out=\"runs/a\")"),
        ("robustopt.training.TrainConfig",
         "config = ro.training.TrainConfig(method=\"trades\", eps=8 / 255, attack_steps=10, beta=6.0)"),
        ("robustopt.training.METHODS", "print(sorted(ro.training.METHODS))"),
        ("robustopt.load_run", "model, info = ro.load_run(\"bench/results/cifar10-cpu/A\", weights=\"final\")"),
        ("robustopt.tune_malloc", "ro.tune_malloc()"),
    ]),
]


def resolve(name: str) -> Any:
    """The live object named by a dotted path such as ``robustopt.attacks.PGD``.

    Raises:
        AttributeError: the path names nothing.
    """
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise AttributeError(f"no module in {name!r}")


def _annotation(a: Any) -> str:
    return a if isinstance(a, str) else inspect.formatannotation(a)


def _documented(name: str) -> Any:
    """The object whose docstring documents ``name``: a property itself, not its value."""
    parent_name, _, attr = name.rpartition(".")
    parent = resolve(parent_name)
    if isinstance(parent, type) and isinstance(inspect.getattr_static(parent, attr), property):
        return inspect.getattr_static(parent, attr)
    return resolve(name)


def _params(sig: inspect.Signature) -> list[str]:
    out: list[str] = []
    star = False
    kinds = [p.kind for p in sig.parameters.values()]
    for i, p in enumerate(sig.parameters.values()):
        if p.kind is p.KEYWORD_ONLY and not star:
            out.append("*")
            star = True
        text = p.name
        if p.kind is p.VAR_POSITIONAL:
            text, star = "*" + text, True
        elif p.kind is p.VAR_KEYWORD:
            text = "**" + text
        if p.annotation is not p.empty:
            text += ": " + _annotation(p.annotation)
        if p.default is not p.empty:
            text += (" = " if p.annotation is not p.empty else "=") + repr(p.default)
        out.append(text)
        if p.kind is p.POSITIONAL_ONLY and (i + 1 == len(kinds) or kinds[i + 1] is not p.POSITIONAL_ONLY):
            out.append("/")
    return out


def signature(name: str) -> str:
    """The signature block of ``name``: the call with typed parameters, or the bare name.

    Classes show their constructor; methods are shown without ``self``; attributes and
    properties show their name only.
    """
    obj = resolve(name)
    parent_name, _, attr = name.rpartition(".")
    parent = resolve(parent_name)
    if isinstance(parent, type):
        static = inspect.getattr_static(parent, attr)
        if isinstance(static, property) or not callable(obj):
            return name
    elif not callable(obj):
        return name
    sig = inspect.signature(obj)
    params = _params(sig)
    if isinstance(parent, type) and inspect.isfunction(inspect.getattr_static(parent, attr)):
        params = params[1:]  # self
    ret = ""
    if not isinstance(obj, type) and sig.return_annotation is not sig.empty:
        ret = " -> " + _annotation(sig.return_annotation).strip("'\"")
    one_line = f"{name}({', '.join(params)}){ret}"
    if len(one_line) <= WIDTH or not params:
        return one_line
    return name + "(\n" + "".join(f"    {p},\n" for p in params) + ")" + ret


def summary(obj: Any) -> str:
    """The first paragraph of the docstring, on one line, with Sphinx roles as Markdown code."""
    doc = inspect.getdoc(obj) or ""
    first = doc.split("\n\n")[0]
    text = " ".join(line.strip() for line in first.splitlines())
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def cli_commands() -> list[tuple[str, str, str]]:
    """Every command of the ``robustopt`` CLI: (path, usage, one-line help), groups expanded."""
    import click

    from robustopt.cli import main

    rows: list[tuple[str, str, str]] = []

    def walk(cmd: click.Command, path: str) -> None:
        if isinstance(cmd, click.Group):
            for sub_name in sorted(cmd.commands):
                walk(cmd.commands[sub_name], f"{path} {sub_name}")
            return
        ctx = click.Context(cmd, info_name=path)
        usage = " ".join([path, *cmd.collect_usage_pieces(ctx)])
        first = (cmd.help or "").split("\n\n")[0]
        rows.append((path, usage, " ".join(first.split())))

    walk(main, "robustopt")
    return rows


def render() -> str:
    """The whole page."""
    lines = [
        "# API reference",
        "",
        "The public Python API and the command line, one entry each: the signature as the live object",
        "has it, the first paragraph of its docstring, and one example. Generated by",
        "`python docs/gen_api.py` from the installed package; `tests/test_docs.py` checks that every",
        "name listed here exists and that its signature is the live one. All examples assume",
        "`import robustopt as ro`, a model mapping images in [0, 1] to logits, and test tensors `x`, `y`.",
        "",
    ]
    for section, entries in SECTIONS:
        lines += [f"## {section}", ""]
        for name, example in entries:
            try:
                obj = _documented(name)
            except AttributeError:
                raise SystemExit(f"error: {name} does not exist: rename or remove it in SECTIONS of docs/gen_api.py")
            lines += [f"### `{name}`", "", "```python", signature(name), "```", ""]
            text = summary(obj)
            if name == "robustopt.training.METHODS":
                text = "The training methods by name: " + ", ".join(f"`{m}`" for m in sorted(obj)) + "."
            if text:
                lines += [text, ""]
            lines += ["```python", example, "```", ""]
    lines += [
        "## Command line",
        "",
        "`robustopt COMMAND --help` gives every option. `python -m robustopt` is the same command.",
        "",
    ]
    for _, usage, help_text in cli_commands():
        lines.append(f"- `{usage}`: {help_text}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Compare with docs/api.md instead of writing it.")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE.name} is out of date: run python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
