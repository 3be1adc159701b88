"""The soak runs end to end for a few seconds, so that it cannot rot between ``make soak`` runs.

Too short for a fault to be drawn (the first comes after 15 s at the earliest): what it proves is
that the stack comes up with two worker processes, the market moves, the monitor ticks, every case
is let close, and the invariant check runs and passes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_soak_runs_for_seconds_and_its_invariant_check_passes() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tools.soak", "--minutes", "0.1", "--seed", "42", "--accounts", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "soak: seed 42, 20 accounts" in run.stdout
    assert "cases by outcome:" in run.stdout
    assert "invariant check: PASS" in run.stdout, run.stdout
