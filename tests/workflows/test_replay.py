"""Replay the recorded case histories with today's workflow code.

A change that makes ``MarginCallWorkflow`` non-deterministic for cases already
in flight fails here. Re-record after an intentional, versioned change with
``MARGIN_CALL_RECORD_HISTORIES=1 make test``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from workflows.case import MarginCallWorkflow

# Today's histories, and older ones kept for as long as such cases may be in
# flight (before-outbox/: recorded before cases closed without waiting for
# their notices, the "notices-after-close" patch).
FOLDER = Path(__file__).parent / "histories"
HISTORIES = sorted(FOLDER.glob("**/*.json"))
PATHS = {
    "cured_before_notice",
    "cured_by_deposit",
    "cured_by_market_recovery",
    "restored_after_stages",
    "closed_out",
    "bankrupt",
    "hard_threshold",
    "risk_escalation",
    "reminders",
    "notifier_down",
    "waived",
    "extended_then_liquidated",
    "forced",
}


def test_every_path_has_a_recorded_history() -> None:
    assert {h.stem for h in FOLDER.glob("*.json")} >= PATHS
    assert {h.stem for h in (FOLDER / "before-outbox").glob("*.json")} >= PATHS


# Production runs unsandboxed (worker/worker.py); the sandbox catches a
# non-deterministic call that the histories alone might not exercise.
RUNNERS = {"sandboxed": SandboxedWorkflowRunner, "unsandboxed": UnsandboxedWorkflowRunner}


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("history_file", HISTORIES, ids=[str(h.relative_to(FOLDER)) for h in HISTORIES])
async def test_replays_deterministically(history_file: Path, runner: str) -> None:
    history = WorkflowHistory.from_json(history_file.stem, history_file.read_text())
    workflow_runner: WorkflowRunner = RUNNERS[runner]()
    replayer = Replayer(
        workflows=[MarginCallWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
