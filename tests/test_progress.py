"""Progress output (robustopt._progress): plain lines instead of bars in a log, the style chosen by
``ROBUSTOPT_PROGRESS``, and durations in words."""

from __future__ import annotations

import pytest

from robustopt._progress import PlainProgress, progress_bar


def test_plain_progress_prints_lines_not_bars(capsys):
    bar = PlainProgress(4, "epoch 1/2", "step", every=0.0)
    for _ in range(4):
        bar.set_postfix(loss="0.5")
        bar.update()
    bar.close()
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[:3] == [f"epoch 1/2: {k}/4 steps ({25 * k}%), 0 s, loss=0.5" for k in (1, 2, 3)]
    assert lines[3] == "epoch 1/2: 4/4 steps in 0 s, loss=0.5" and len(lines) == 4


@pytest.mark.parametrize("style, kind", [("plain", PlainProgress), ("off", None), ("bar", None)])
def test_progress_style_follows_the_environment(monkeypatch, style, kind):
    monkeypatch.setenv("ROBUSTOPT_PROGRESS", style)
    bar = progress_bar(3, "x", "step")
    assert isinstance(bar, PlainProgress) == (kind is PlainProgress)
    assert getattr(bar, "disable", False) == (style == "off")
    bar.close()
    assert isinstance(progress_bar(3, "x", "step", enabled=False), PlainProgress) is False


def test_seconds_format():
    from robustopt._progress import format_seconds

    assert [format_seconds(s) for s in (4.4, 65, 7322)] == ["4 s", "1 min 5 s", "2 h 2 min"]
