"""What callers and the case say to each other: the case's input, state, messages and outcome."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AwareDatetime,
    BaseModel,
    Field,
    StringConstraints,
    model_validator,
)

from workflows.domain.liquidation import Fill
from workflows.domain.message import CallId, FreeText, Identifier, Message
from workflows.domain.money import DecimalStr, Figure, money_amount, places_if_known
from workflows.domain.policies import CasePolicy


class CaseState(StrEnum):
    OPEN = "OPEN"
    NOTIFIED = "NOTIFIED"
    AWAITING_DEPOSIT = "AWAITING_DEPOSIT"
    LIQUIDATING = "LIQUIDATING"
    CURED = "CURED"
    RESTORED = "RESTORED"
    CLOSED_OUT = "CLOSED_OUT"
    BANKRUPT = "BANKRUPT"
    WAIVED = "WAIVED"


CLOSED_STATES = frozenset(
    {CaseState.CURED, CaseState.RESTORED, CaseState.CLOSED_OUT, CaseState.BANKRUPT, CaseState.WAIVED}
)


class CaseInput(Message):
    account_id: Identifier
    call_id: CallId = Field(description="the caller's id for this margin call (idempotency)")
    policy: CasePolicy = CasePolicy()
    policy_name: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        default="standard",
        description="the operator's named policy; ``policy`` may differ from it only by in-bounds overrides",
    )


class Deposit(Message):
    """A deposit as the deposit handler reports it: credited to the ledger first, then told to the account's case.

    One message for both steps, so that what the ledger booked is what the
    case counts. A case refuses a deposit for another account.
    """

    account_id: Identifier
    deposit_id: Identifier
    amount: DecimalStr
    currency: Identifier

    @model_validator(mode="after")
    def _money(self) -> Deposit:
        money_amount(self.amount, self.currency, places=places_if_known(self.currency))
        return self


class DepositReceipt(Message):
    deposit_id: str
    counted: bool = Field(description="false when this deposit id had been counted before")
    state: CaseState
    equity: Figure
    maintenance_margin: Figure
    shortfall: Figure


class StaffAction(Message):
    operator: FreeText
    reason: FreeText


class DeadlineExtension(StaffAction):
    # A time without a zone has no single meaning: refused here (a 422 over HTTP, an update
    # refusal in the case), not a comparison failing in the case. Recorded histories carry aware times.
    new_deadline: AwareDatetime


class Waiver(StaffAction):
    """A waive is a decision with a scope: the risk monitor opens no new case for the account until
    ``until`` (or, with none, until the account is seen healthy again), unless the hard threshold is crossed."""

    until: AwareDatetime | None = None


class PendingWaiver(Waiver):
    """A waive of a shortfall above the policy's ``waive_approval_above``, not yet in effect.

    It takes effect only when a second operator approves it (``approve_waive``)
    before ``expires_at``; meanwhile the case runs on (deadline, deposits,
    liquidation) as if no one had asked.
    """

    shortfall: Figure | None = Field(description="the shortfall the first operator asked to waive")
    requested_at: datetime
    expires_at: datetime


class WaiverApproval(StaffAction):
    """The second operator's approval of a pending waive: who, why, and when each operator acted."""

    requested_at: datetime
    approved_at: datetime


class RiskEscalation(Message):
    """The risk monitor's word that an open case's account moved past the hard threshold."""

    equity: Figure
    maintenance_margin: Figure


class StageRecord(Message):
    stage: int
    fills: list[Fill]
    sold_notional: Figure
    fee: Figure
    equity_after: Figure
    maintenance_after: Figure
    executed_at: datetime


class TimelineEntry(Message):
    at: datetime
    what: str


class CaseStatus(Message):
    case_id: str
    account_id: str
    call_id: str
    state: CaseState
    currency: str | None
    opened_at: datetime
    deadline: datetime | None
    equity: Figure | None
    maintenance_margin: Figure | None
    shortfall: Figure | None
    deposit_needed: Figure | None
    deposits_counted: list[str]
    stages: list[StageRecord]
    fees_to_insurance_fund: Figure
    insurance_fund_used: Figure
    uncovered_loss: Figure
    notices_sent: int
    notices_failed: list[str]
    # Notices still owed when the case closed, handed to the ledger's outbox for delivery.
    notices_owed: list[str] = []
    timeline: list[TimelineEntry]
    closed_at: datetime | None
    # Why liquidation waits (``HOLD_STALE_MARKS``, ``HOLD_HALTED``, ``HOLD_VENUE``) and what the ledger said; None when it does not.
    hold: str | None = None
    hold_reason: str | None = None
    # A waive awaiting a second operator's approval; None when there is none (or it expired or lapsed).
    pending_waiver: PendingWaiver | None = None
    # The waive that closed (or is closing) the case, and the second operator's approval when it needed one.
    waiver: Waiver | None = None
    waiver_approval: WaiverApproval | None = None


class CaseSummary(BaseModel):
    """A case as visibility (its search attributes) sees it, without asking the worker."""

    workflow_id: str
    run_id: str
    account_id: str | None
    state: str | None
    shortfall: float | None
    deadline: datetime | None
    stage: int | None
    started_at: datetime | None
    closed_at: datetime | None
    running: bool
    # Why liquidation waits (MarginCallHold), while it does; None otherwise.
    hold: str | None = None


class CaseOutcome(Message):
    case_id: str
    account_id: str
    state: CaseState
    status: CaseStatus
