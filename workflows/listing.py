"""How the case list reads a workflow: its state while it runs or once it completed, and why one ended without an outcome.

Visibility knows workflows, not cases: a case that failed or was terminated
keeps the MarginCallState it last upserted (often OPEN), so the list shows it by
how it ended instead, with the failure's reason. Used by the client and by
what prints cases (the API, ``margin-call cases``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import FailureError

from workflows.contract import CaseState

# A workflow that ended without completing has no outcome: the MarginCallState it
# last upserted (often OPEN) is stale, so it is shown by how it ended instead.
ENDED_WITHOUT_OUTCOME: dict[WorkflowExecutionStatus, str] = {
    WorkflowExecutionStatus.FAILED: "FAILED",
    WorkflowExecutionStatus.TERMINATED: "TERMINATED",
    WorkflowExecutionStatus.TIMED_OUT: "TIMED_OUT",
    WorkflowExecutionStatus.CANCELED: "CANCELED",
}
# The names visibility queries use for those statuses.
EXECUTION_STATUS_NAMES = {
    "FAILED": "Failed",
    "TERMINATED": "Terminated",
    "TIMED_OUT": "TimedOut",
    "CANCELED": "Canceled",
}
# Every state ``list_cases`` can show, so every state it can be asked for.
LISTED_STATES: tuple[str, ...] = (*(s.value for s in CaseState), *ENDED_WITHOUT_OUTCOME.values())


def listed_state(status: WorkflowExecutionStatus | None, margin_call_state: str | None) -> str | None:
    """What a case is, as a list shows it: its own state while it runs or once it completed."""
    ended = ENDED_WITHOUT_OUTCOME.get(status) if status is not None else None
    return ended if ended is not None else margin_call_state


@dataclass(frozen=True)
class EndedCase:
    """A case whose workflow ended without an outcome, and why (the failure's messages, outermost first)."""

    workflow_id: str
    run_id: str | None
    account_id: str
    state: str
    reason: str
    started_at: datetime | None
    closed_at: datetime | None


def failure_reason(error: BaseException | None) -> str:
    """The failure's chain as one line: the SDK wraps the reason (an activity's error, say) in causes."""
    messages: list[str] = []
    while error is not None and len(messages) < 10:
        message = str(error.message if isinstance(error, FailureError) else error).strip()
        if message and message not in messages:
            messages.append(message)
        error = error.__cause__
    return ": ".join(messages).replace("\n", " ") or "no reason on record"
