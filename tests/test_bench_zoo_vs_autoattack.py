"""bench/zoo_vs_autoattack.py: what counts as broken, the saved sides, and the table of results."""

from __future__ import annotations

import json

import torch

import robustopt as ro
from bench_package import bench_script

zva = bench_script("zoo_vs_autoattack")


class _Noisy(torch.nn.Module):
    """Predicts class 1 with probability ``p`` per call, else class 0 (input ignored)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x):
        one = (torch.rand(len(x)) < self.p).float()
        return torch.stack([1 - one, one], dim=1)


def test_a_point_is_broken_when_it_fools_most_draws_inside_the_threat_model():
    x = torch.full((4, 1, 2, 2), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    t = ro.Linf(0.1)
    inside, outside = x + 0.1, x + 0.3
    torch.manual_seed(0)
    assert zva.broken_by(_Noisy(0.9), inside, x, y, t, batch_size=4, draws=15).all()
    assert not zva.broken_by(_Noisy(0.1), inside, x, y, t, batch_size=4, draws=15).any()
    assert not zva.broken_by(_Noisy(1.0), outside, x, y, t, batch_size=4, draws=1).any()


def test_a_saved_suite_side_reads_back_with_weights_only(tmp_path):
    x, y = torch.rand(6, 1, 4, 4), torch.randint(0, 5, (6,))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5))
    ev = ro.evaluate(model, (x, y), [ro.attacks.FGSM(ro.Linf(0.1))], progress=False)
    value = {"evaluation": json.dumps(ev.to_dict(), default=str), "seconds": 1.0, "counted": {"grad_evals": 6}}
    zva.save_side(tmp_path / "e.adaptive-side.pt", {"n": 6}, value)
    blob = zva.load_side(tmp_path / "e.adaptive-side.pt", {"n": 6})
    back = ro.Evaluation.from_dict(json.loads(blob["value"]["evaluation"]))
    assert torch.equal(back.robust, ev.robust) and back.robust_accuracy == ev.robust_accuracy


def test_the_table_has_a_row_per_result_with_the_difference_and_the_time_ratio(tmp_path):
    side = lambda acc, s, g: {"robust_accuracy": acc, "seconds": s, "grad_evals_per_point": g}  # noqa: E731
    report = {"entry": "mnist-x", "n": 1000, "clean_accuracy": 0.98, "randomized": True,
              "sides": {"adaptive": side(0.812, 30.0, 120), "standard": side(0.81, 300.0, 900),
                        "autoattack": side(0.811, 200.0, 1000)}}
    (tmp_path / "mnist-x.json").write_text(json.dumps(report))
    lines = zva.table(tmp_path).splitlines()
    assert len(lines) == 3
    assert lines[2] == ("| mnist-x | 1000 | 98.0% | 81.2% | 81.0% | 81.1% (rand) | +0.1 | 30 s | 300 s | 200 s "
                        "| 0.15x | 120, 900, 1,000 |")
