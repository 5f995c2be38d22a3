"""Reports: report.md with PNGs beside it and a self-contained report.html, from a tiny real run folder."""

from __future__ import annotations

import base64
import re
import shutil

import pytest
from click.testing import CliRunner

from robustopt.cli import main
from robustopt.evaluation import Evaluation
from robustopt.evaluation.report import madry_reference
from robustopt.experiments import eval_run, sweep_run, train_run, write_report


PNG = b"\x89PNG\r\n\x1a\n"
DATA_URI = 'src="data:image/png;base64,'


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A natural small-cnn run on mnist-mini (1 epoch, 300 images), its madry evaluation and a Linf sweep."""
    folder = train_run(tmp_path_factory.mktemp("runs") / "a", data="mnist-mini", model="small-cnn", method="natural",
                       epochs=1, train_size=300, batch_size=100, progress=False)
    eval_run(folder, limit=30, max_restarts=1, progress=False, echo=lambda s: None)
    sweep_run(folder, eps_values=[0, 0.1, 0.3], steps=2, limit=30, progress=False, echo=lambda s: None)
    return folder


@pytest.fixture(scope="module")
def report(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    md_path, html_path = write_report([run], out=out)
    return out, md_path, html_path, md_path.read_text(), html_path.read_text()


def test_files_are_written(report):
    out, md_path, html_path, _, _ = report
    assert md_path == out / "report.md" and html_path == out / "report.html"
    assert md_path.is_file() and html_path.is_file()
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_markdown_references_existing_pngs(report):
    out, _, _, md, _ = report
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) == 3  # training curve, sweep, adversarial examples
    for name in images:
        assert (out / name).is_file() and (out / name).read_bytes().startswith(PNG), name


def test_html_is_self_contained(report):
    _, _, _, _, page = report
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert "<style>" in page
    uris = re.findall(DATA_URI + r'([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == 3
    assert all(base64.b64decode(u).startswith(PNG) for u in uris)
    assert page.count("<table>") == page.count("</table>") >= 5


def test_tables_show_the_paper_layout_and_reference(report, run):
    _, _, _, md, page = report
    # The madry suite on mnist(-mini) at Linf 0.3: the paper's Table 1 numbers beside ours.
    assert "| Method | Steps | Restarts | Source | Accuracy | Paper |" in md
    assert re.search(r"\| PGD \| 40 \| 1 \| A \| \d+\.\d% \| 93\.2% \|", md)
    assert "| Worst case (all rows) |" in md
    assert "<th>Method</th><th>Steps</th><th>Restarts</th><th>Source</th><th>Accuracy</th><th>Paper</th>" in page
    assert re.search(r'<td>PGD</td><td class="num">40</td><td class="num">1</td><td>A</td><td class="num">\d+\.\d%</td>'
                     r'<td class="num">93\.2%</td>', page)
    assert '<tr class="total"><td>Worst case (all rows)</td>' in page
    # the sweep table, the audit and the environment
    assert "| eps (Linf) | Robust accuracy |" in md and "<th>eps (Linf)</th>" in page
    assert "Audit:" in md and "Audit:" in page
    for key in ("robustopt", "torch", "numpy", "python", "platform", "CPUs", "git commit", "seeds", "report time"):
        assert f"<td>{key}</td>" in page, key
    assert f"Run 1: {run}" in md


def test_reference_only_for_the_papers_setting(run):
    ev = Evaluation.from_json(run / "eval-madry.json")
    assert madry_reference(ev, "mnist") is not None and madry_reference(ev, "mnist-mini") is not None
    assert madry_reference(ev, "cifar10") is None  # eps 0.3 is not the CIFAR-10 table's 8/255
    assert madry_reference(ev, "fashion-mnist") is None


def test_several_runs_escaping_and_default_out(run, tmp_path):
    odd = tmp_path / "b <i>&"
    shutil.copytree(run, odd, ignore=shutil.ignore_patterns("report*"))
    (odd / "eval-madry.progress.json").write_text("{not an evaluation")  # resume state: must be ignored
    md_path, html_path = write_report([odd, run], out=None)
    assert md_path.parent == odd  # default: the first run folder
    page = html_path.read_text()
    assert "b &lt;i&gt;&amp;" in page and "<i>" not in page
    assert page.count(DATA_URI) == 6
    assert 'id="run-1"' in page and 'id="run-2"' in page
    names = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md_path.read_text())
    assert len(set(names)) == 6 and all((odd / n).is_file() for n in names)


def test_not_a_run_folder(tmp_path, run):
    with pytest.raises(FileNotFoundError, match="run.json"):
        write_report([tmp_path])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report([tmp_path / "missing"])
    with pytest.raises(ValueError, match="not a run folder"):
        write_report([run / "run.json"])
    with pytest.raises(ValueError, match="at least one"):
        write_report([])


def test_cli_report(run, tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(main, ["report", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "report.html" in res.output and (out / "report.html").is_file() and (out / "report.md").is_file()
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "run.json" in res.output


def test_render_draws_objects_and_touches_no_file(tmp_path, monkeypatch):
    import torch

    import robustopt as ro
    from robustopt.evaluation import Finding, Row
    from robustopt.evaluation.report import Gallery, RunReport, render

    monkeypatch.chdir(tmp_path)
    threat = ro.Linf(0.3)
    ev = Evaluation(rows=[Row("Natural", None, None, "", 9, 9, 10),
                          Row("PGD | CW", 40, 1, "A", 5, 5, 10, attack={"key": "pgd", "threat": threat.to_dict()}),
                          Row("Worst case attack", 40, 1, "A", 5, 5, 10, attack={"key": "pgd"})],  # styled as a row
                    correct=torch.ones(10, dtype=torch.bool), robust=torch.zeros(10, dtype=torch.bool),
                    mode="independent", seed=0, threat=threat)
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    gallery = Gallery(x=x, x_adv=(x + 0.3).clamp(0, 1), y=torch.tensor([1, 2]), pred_adv=torch.tensor([1, 0]),
                      threat=threat, steps=7, seed=3, probed=5)
    run = RunReport(path=tmp_path / "a", info={"data": "toy", "model": "m", "method": "pgd", "norm": "linf", "eps": 0.3},
                    evaluations=[("eval-x.json", ev)], gallery=gallery, class_names=["zero", "one", "two"],
                    audits=[("Model", [Finding("warning", "zero-gradient", "a | b")]), ("eval-x.json", [])])
    doc = render([run])
    assert list(tmp_path.iterdir()) == []  # a view: nothing read or written
    # Tables come from the objects, so a cell may hold "|" (re-parsed Markdown split it into two cells).
    assert "| PGD \\| CW | 40 | 1 | A | 50.0% |" in doc.markdown and "<td>PGD | CW</td>" in doc.html
    assert "*10 examples, mode=independent (each row: that attack alone), threat Linf(eps=0.3)*" in doc.markdown
    assert ('<tr class="level-warning"><td>warning</td><td><code>zero-gradient</code></td><td>a | b</td></tr>'
            in doc.html)
    assert '<tr class="total"><td>Worst case (all rows)</td>' in doc.html and "<tr><td>Worst case attack</td>" in doc.html
    assert "Audit: 0 error, 1 warning, 0 info." in doc.markdown and '<p class="ok">Audit: no problems found.</p>' in doc.html
    assert "No training log" in doc.markdown and "No sweep yet" in doc.markdown
    assert list(doc.figures) == ["report-a-adversarial.png"] and doc.figures["report-a-adversarial.png"].startswith(PNG)
    assert "![adversarial examples of" in doc.markdown and "(report-a-adversarial.png)" in doc.markdown
    assert "PGD, 7 steps of 2.5·eps/7, random start, seed 3" in doc.markdown and "(1 of 2 fooled)" in doc.markdown
    none_correct = RunReport(path=tmp_path / "b", info=run.info, gallery=Gallery(
        x=x[:0], x_adv=x[:0], y=torch.tensor([], dtype=torch.long), pred_adv=torch.tensor([], dtype=torch.long),
        threat=threat, steps=7, seed=3, probed=5))
    assert "classifies none of the first 5 test images" in render([none_correct]).markdown
