"""The benchmark runs end to end at a tiny size, so that it cannot rot between ``make bench`` runs.

Every phase that fits in seconds runs (ceiling, both crash paths, cost, deposits, deadlines, one
liquidation stage, trades and marks through the API); the flatness crash, the memory figure, the large scans and the chart are skipped
with the bench's own flags. The figures are not checked against their goals: at N = 20 on a
shared machine they mean nothing, and timing goals belong to the bench, not to the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_the_bench_runs_at_a_tiny_size_and_prints_its_table(tmp_path: Path) -> None:
    results = tmp_path / "bench-results"
    tiny = {
        "--accounts": "20",  # the ceiling and each crash path
        "--open": "10",  # deposits with cases open
        "--deadlines": "10",  # deadlines falling together (about 15 s of waiting for them)
        "--flat-from": "0",  # skipped: the second crash for flatness
        "--waiting": "0",  # skipped: memory with many cases waiting
        "--scan": "300",  # a book of 300 positions: the scan and one mark applied over it
        "--port": str(free_port()),
        "--receiver-port": str(free_port()),
        "--results": str(results),
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.bench",
            *(part for option in tiny.items() for part in option),
            "--no-chart",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = run.stdout[run.stdout.index("\nfigure ") :]
    for row in (
        "ceiling: trivial workflow + activity",
        "crash 20, cured path: time to notify all",
        "crash 20, liquidation path: time to notify all",
        "submit_deposit p50 / p99 (10 open",
        "deadline lateness p50 / p99 / max (10 due",
        "history events: liquidation",
        "liquidation stage p50 / p99",
        "trades/s through the API",
        "marks/s through the API",
        "mark -> case opened p50 / p99",
        "schedule-to-start p99 by queue",
        "workflow task timeouts",
        "scan_breaches at 300 positions",
        "one mark, 100 accounts on its instrument",
    ):
        assert row in table, table
    figures = json.loads((results / "bench.json").read_text())["figures"]
    assert figures["crash_cured_20"]["outcomes"] == {"CURED": 20}, figures["crash_cured_20"]
    # Where the cases waited, read from their histories: every case's tasks were found.
    for phase in (figures["crash_cured_20"], figures["crash_liquidation_20"], figures["deadlines"]):
        waits = phase["task_waits"]
        assert waits["cases"] in (10, 20) and waits["workflow_task_normal"]["tasks"] >= waits["cases"], waits
        assert 0 <= waits["workflow_task_normal"]["p99_ms"] < 420_000, waits
    assert figures["crash_liquidation_20"]["task_waits"]["activity_task"]["tasks"] >= 20
    assert 0 < figures["crash_cured_20"]["mark_to_case_seconds"]["p99"] < 420
    assert figures["scan_breaches"]["300"]["accounts_on_instrument"] == 100
    # Every record was applied (the bench stops otherwise): 12 trades an account, 25 marks an instrument.
    feeds = figures["feeds"]
    assert (feeds["trades"]["records"], feeds["marks"]["records"]) == (240, 25 * 20), feeds
    assert feeds["trades"]["per_second"] > 0 and feeds["marks"]["per_second"] > 0, feeds
    assert not (results / "bench.png").exists()
