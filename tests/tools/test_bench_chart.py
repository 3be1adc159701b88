"""The bench's chart draws the figures issue 14 asked for beside the timelines: where tasks waited, mark to case.

The suite's tiny bench passes ``--no-chart`` (its figures are too few to chart), so the chart is
drawn here from figures shaped as the bench writes them (matplotlib is in the test extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tools.bench.report import chart


def waits(p99_ms: float, timeouts: int) -> dict[str, Any]:
    queue = {"tasks": 40, "p50_ms": p99_ms / 4, "p99_ms": p99_ms, "max_ms": p99_ms * 2}
    return {
        "cases": 20,
        "workflow_task_timeouts": timeouts,
        "workflow_task_normal": queue,
        "workflow_task_sticky": queue,
        "activity_task": queue,
    }


def test_the_chart_shows_where_tasks_waited_and_mark_to_case(tmp_path: Path) -> None:
    from matplotlib import pyplot

    figures: dict[str, Any] = {
        "crash_cured_20": {
            "first_notice_samples": [0.4, 0.9, 1.2],
            "mark_to_case_samples": [0.1, 0.2, 0.3],
            "task_waits": waits(12.0, 0),
        },
        "deadlines": {"task_waits": waits(3_000.0, 2)},
    }
    timelines = {"cured path, N = 20": [{"t": 0.0, "AWAITING_DEPOSIT": 20}, {"t": 1.0, "CURED": 20}]}
    drawn: list[Any] = []
    real_savefig = pyplot.Figure.savefig

    def keep(fig: Any, *args: Any, **kwargs: Any) -> None:
        drawn.append(fig)
        real_savefig(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pyplot.Figure, "savefig", keep)
        chart(figures, timelines, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").stat().st_size > 0
    titles = [axis.get_title() for axis in drawn[0].axes]
    assert "Where the cases' tasks waited, by queue" in titles, titles
    waited = drawn[0].axes[titles.index("Where the cases' tasks waited, by queue")]
    labels = [tick.get_text() for tick in waited.get_xticklabels()]
    assert labels == ["crash cured 20\n0 task timeouts", "deadlines\n2 task timeouts"], labels
    latency = drawn[0].axes[1]
    legend = [text.get_text() for text in latency.get_legend().get_texts()]
    assert legend == ["case opened, cured, N = 20", "notice, cured, N = 20"], legend
