"""bench/square_stall.py: a stall rule replayed on a trace spends what Square's own early exit spends."""

from __future__ import annotations

import pytest
import torch

import robustopt as ro
from bench_package import bench_script
from robustopt.attacks import Square, early_exit

square_stall = bench_script("square_stall")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)).eval()


@pytest.mark.parametrize("window, factor", [(None, 2.0), (0.1, 2.0), (0.05, 1.0)])
def test_a_rule_replayed_on_one_example_at_a_time_is_squares_early_exit(window, factor):
    # One example per call: a stopped example cannot change another's random stream, so the
    # replay of the rule on the unstopped trace must give exactly the queries of the real early exit.
    model = _model()
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)  # clean-correct points; at eps 0.02 some break, some stall, some run out
    square = Square(ro.Linf(0.02), queries=300, early_exit=True, stall_factor=factor, stall_window=window)
    kind, every, factor = square_stall.rule_of(square)
    stopped_some = False
    for i in range(len(x)):
        xi, yi = x[i:i + 1], y[i:i + 1]
        real = square.run(model, xi, yi, generator=torch.Generator().manual_seed(0))
        margins, at, used, success = square_stall.trace(square, model, xi, yi, seed=0)
        cost, lost = square_stall.replay(margins, at, used, success, square.queries, kind, every, factor)
        assert int(cost) == int(real.forwards_per_example) - 1  # the driver's clean pass
        assert not lost.any() or not real.success.any()  # a break the rule loses is one the real run misses
        stopped_some |= int(cost) < square.queries and not bool(success)
    assert stopped_some  # the rule acted on this problem: the test compares something
    # the trace itself ran the whole budget and left Square's rule untouched
    assert square_stall.square_module.stalled is early_exit.stalled


def test_a_recent_window_stops_no_later_than_the_average_on_a_slowing_search():
    # A margin that gains a lot early and then nothing: the average pace keeps hoping, the recent one does not.
    queries, n = 1000, 1
    at = [0] + [10 * k for k in range(1, 100)]
    margins = torch.tensor([[-4.0]] + [[-1.0 if k >= 5 else -4.0 + 0.6 * k] for k in range(1, 100)])
    used, success = torch.tensor([queries] * n), torch.zeros(n, dtype=torch.bool)
    avg, _ = square_stall.replay(margins, at, used, success, queries, "average", 10, 2.0)
    recent, _ = square_stall.replay(margins, at, used, success, queries, "recent", 10, 2.0)
    assert int(recent) == 200 and int(avg) > int(recent)  # no gain over 100..200: stalled at the second check


def test_the_replay_counts_a_break_stopped_before_it_as_lost():
    queries = 1000
    at = [0] + [10 * k for k in range(1, 100)]
    margins = torch.full((100, 1), -2.0)  # flat until it breaks late, after 900 queries
    used, success = torch.tensor([901]), torch.tensor([True])
    cost, lost = square_stall.replay(margins, at, used, success, queries, "recent", 10, 1.0)
    assert int(cost) == 100 and bool(lost)  # no gain over the first window: stopped at the first check


def test_the_suites_square_is_one_of_the_rules():
    assert square_stall.TODAY in square_stall.RULES


@pytest.mark.parametrize("window", [0.0, 0.6, -0.1, True, "0.1"])
def test_square_refuses_a_stall_window_outside_half_the_budget(window):
    with pytest.raises(ValueError, match="stall_window"):
        Square(ro.Linf(0.1), early_exit=True, stall_window=window)


def test_the_adaptive_suite_passes_its_square_stall_window_on():
    suite = ro.attacks.AdaptiveAutoAttack(ro.Linf(0.1), square_stall_window=0.05)
    assert suite.stages()[-1].stall_window == 0.05 and square_stall.rule_of(suite.stages()[-1])[:2] == ("recent", 5)
    with pytest.raises(ValueError, match="stall_window"):
        ro.attacks.AdaptiveAutoAttack(ro.Linf(0.1), square_stall_window=0.7)
