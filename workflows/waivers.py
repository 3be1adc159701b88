"""Two people for a large waive: above the policy's amount, a waive waits for a second operator.

The operator's policy sets the amount (``CasePolicy.waive_approval_above``, in
the settlement currency; None: every waive is one operator's decision) and
how long a second operator has (``waive_approval_within``). A waive of a
shortfall above the amount goes on record as a **pending waiver** and the
case runs on as if no one had asked: its deadline, deposits, the risk
monitor's escalation and liquidation are never held up by a request. A
second operator's ``approve_waive`` before the request expires closes the
case WAIVED with both names on record. A request lapses, said in the
timeline, when it expires, when liquidation starts (a waive is refused once
liquidating, approved or not) or when the case closes otherwise; an approval
after that is refused, naming the lapsed request.

Like ``record.py``, workflow code that issues no command: the lifecycle
(``case.py``) keeps the timer that wakes the case when a request expires, and
the handlers (``messages.py``) write the audit event and the notice.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime

from temporalio import workflow

from workflows import narrative
from workflows.contract import PendingWaiver, StaffAction, Waiver, WaiverApproval
from workflows.domain.policies import describe_span
from workflows.record import AWAITING, CaseRecord


def approval_needed(record: CaseRecord) -> bool:
    """A waive of this case's shortfall needs a second operator under its policy."""
    above = record.policy.waive_approval_above
    if above is None:
        return False
    # Not read yet (a waive in the first instants of OPEN): the amount is unknown, so two people decide.
    return record.snapshot is None or record.snapshot.figures.shortfall > above


def same_operator(one: str, other: str) -> bool:
    """One person, however the name is cased or composed: ``Alice`` cannot approve ``alice``'s waive."""

    def folded(name: str) -> str:
        return unicodedata.normalize("NFKC", name).casefold()

    return folded(one) == folded(other)


def check_request(record: CaseRecord) -> None:
    """A second waive while one awaits approval is refused, naming the one pending."""
    pending = record.pending_waiver
    if pending is not None and workflow.now() < pending.expires_at:
        raise ValueError(
            f"state: a waive by {pending.operator} is pending approval until "
            f"{pending.expires_at.isoformat()}; approve it (approve_waive) or let it expire"
        )


def request(record: CaseRecord, waiver: Waiver) -> PendingWaiver:
    """Put the waive on record as pending; the one before it, if any, has lapsed (``check_request``)."""
    now = workflow.now()
    shortfall = record.snapshot.figures.shortfall if record.snapshot else None
    pending = PendingWaiver(
        operator=waiver.operator,
        reason=waiver.reason,
        until=waiver.until,
        shortfall=shortfall,
        requested_at=now,
        expires_at=now + record.policy.waive_approval_within,
    )
    record.pending_waiver = pending
    return pending


def check_approval(record: CaseRecord, approval: StaffAction) -> None:
    """What ``approve_waive`` must pass; the refusal names the field (``state``, ``operator``, ``until``)."""
    if record.state not in AWAITING or record.stages or record.waiver is not None:
        raise ValueError(f"state: cannot waive a case that is {record.state.value}")
    pending = record.pending_waiver
    if pending is None:
        lapsed = record.lapsed_waiver
        before = f" (the waive by {lapsed.operator} lapsed: {record.lapsed_why})" if lapsed else ""
        raise ValueError(f"state: no waive is pending approval{before}")
    now = workflow.now()
    if now >= pending.expires_at:
        raise ValueError(
            f"state: the waive by {pending.operator} expired at {pending.expires_at.isoformat()} "
            "without approval; a new waive must be requested"
        )
    if same_operator(approval.operator, pending.operator):
        raise ValueError(
            f"operator: {pending.operator} requested this waive; a second operator must approve it"
        )
    if pending.until is not None and pending.until <= now:
        raise ValueError(
            f"until: the waive's scope ended at {pending.until.isoformat()}; a new waive must be requested"
        )


def approve(record: CaseRecord, approval: StaffAction) -> Waiver:
    """The pending waive takes effect: the waive of the first operator, approved by the second."""
    pending = record.pending_waiver
    assert pending is not None  # the validator refused an approval with nothing pending
    record.pending_waiver = None
    waiver = Waiver(operator=pending.operator, reason=pending.reason, until=pending.until)
    record.waiver = waiver
    record.waiver_approval = WaiverApproval(
        operator=approval.operator,
        reason=approval.reason,
        requested_at=pending.requested_at,
        approved_at=workflow.now(),
    )
    return waiver


def expiry(record: CaseRecord) -> list[datetime]:
    """When the pending waive expires, as a wake-up for the case's timer (none when nothing is pending)."""
    return [record.pending_waiver.expires_at] if record.pending_waiver else []


def expire_if_due(record: CaseRecord) -> bool:
    """Lapse a request past its time; True if one did."""
    pending = record.pending_waiver
    if pending is None or workflow.now() < pending.expires_at:
        return False
    within = describe_span(record.policy.waive_approval_within)
    return lapse(record, f"expired at {pending.expires_at.isoformat()}, not approved within {within}")


def lapse(record: CaseRecord, why: str) -> bool:
    """The pending waive ends without effect (said in the timeline); True if there was one."""
    pending = record.pending_waiver
    if pending is None:
        return False
    record.pending_waiver = None
    record.lapsed_waiver, record.lapsed_why = pending, why
    record.log(narrative.waive_lapsed_line(pending, why))
    return True


def closing_words(record: CaseRecord) -> str:
    """Why a WAIVED case closed: who waived it and, when the policy asked for one, who approved."""
    waiver = record.waiver
    assert waiver is not None
    words = f"waived by {waiver.operator}: {waiver.reason}"
    approval = record.waiver_approval
    if approval is not None:
        words += f"; approved by {approval.operator}: {approval.reason}"
    return words
