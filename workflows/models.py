"""The contracts: every message that crosses a process or history boundary.

Callers (exchange services, deposit handlers, staff tools), the case workflow
and the ledger activities all speak these models, so they live here, beside the
client API, and import nothing heavier than pydantic.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from workflows.money import DecimalStr, Figure, currency_decimals, money_amount, places_if_known

# Ids travel into workflow ids, SQL keys and webhook headers: printable, bounded.
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/-]+$")]
# A call id may not hold "/": the case id is "<account>/<call>", split at its last "/",
# so two different (account, call) pairs can never name the same case.
CallId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")]
# "<account>/<call>": as long as both parts together, never truncated.
CaseId = Annotated[str, StringConstraints(min_length=3, max_length=257, pattern=r"^[A-Za-z0-9._:@/-]+$")]
# Operators and reasons are free text, but bounded and never blank.
FreeText = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]


class Contract(BaseModel):
    """Strict by default: an unknown field is a caller's mistake worth naming."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- portfolio and risk figures -------------------------------------------------


class Tier(Contract):
    notional_floor: Figure
    maintenance_rate: Figure
    initial_rate: Figure

    @model_validator(mode="after")
    def _rates_in_range(self) -> Tier:
        if self.notional_floor < 0:
            raise ValueError("notional_floor: must not be negative")
        if not (0 <= self.maintenance_rate < 1):
            raise ValueError("maintenance_rate: must be in [0, 1)")
        if not (self.maintenance_rate <= self.initial_rate <= 1):
            raise ValueError("initial_rate: must be in [maintenance_rate, 1]")
        return self


class Collateral(Contract):
    asset: Identifier
    amount: Figure
    price: Figure
    haircut: Figure

    @field_validator("price")
    @classmethod
    def _positive_price(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("haircut")
    @classmethod
    def _haircut_range(cls, value: Decimal) -> Decimal:
        if not (0 <= value < 1):
            raise ValueError("must be in [0, 1)")
        return value


class Position(Contract):
    instrument: Identifier
    quantity: Figure
    entry_price: Figure
    mark_price: Figure
    tiers: list[Tier] = Field(min_length=1)

    @field_validator("entry_price", "mark_price")
    @classmethod
    def _positive_price(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("tiers")
    @classmethod
    def _tiers_ascending(cls, tiers: list[Tier]) -> list[Tier]:
        if tiers[0].notional_floor != 0:
            raise ValueError("the first tier's notional_floor must be 0")
        for lower, upper in itertools.pairwise(tiers):
            if upper.notional_floor <= lower.notional_floor:
                raise ValueError("notional_floor: must be strictly ascending")
        return tiers


class Portfolio(Contract):
    """Collateral and positions; no size limit here, since the ledger's accounts are what they are.

    Limits on what a caller may send belong to the entry point that reads it
    (``margin-call risk``), not to a model that also carries ledger data.
    """

    collateral: list[Collateral]
    positions: list[Position]


class PositionFigures(Contract):
    instrument: str
    notional: Figure
    unrealised_pnl: Figure
    maintenance_margin: Figure
    initial_margin: Figure
    liquidation_price: Figure | None
    bankruptcy_price: Figure | None


class RiskFigures(Contract):
    collateral_value: Figure
    equity: Figure
    maintenance_margin: Figure
    initial_margin: Figure
    shortfall: Figure
    margin_ratio: Figure | None
    positions: list[PositionFigures]


# --- ledger ---------------------------------------------------------------------


class MarginSnapshot(Contract):
    """An account as the ledger shows it at current marks, with its figures."""

    account_id: str
    currency: str
    status: str
    portfolio: Portfolio
    figures: RiskFigures
    as_of: datetime
    # The ledger's decimals for the settlement currency (``assets.decimals``);
    # None only in snapshots recorded before the ledger reported it.
    currency_decimals: int | None = Field(default=None, ge=0, le=18)

    @property
    def places(self) -> int:
        """Decimal places of the settlement currency: the ledger's word, else the well-known table."""
        if self.currency_decimals is not None:
            return self.currency_decimals
        return currency_decimals(self.currency)

    @property
    def in_breach(self) -> bool:
        return self.figures.equity < self.figures.maintenance_margin


class LiquidationPolicy(Contract):
    """How a case liquidates; defaults follow the partial-liquidation practice of large venues."""

    fraction_per_stage: DecimalStr = Decimal("0.25")
    target: Literal["maintenance_buffer", "initial_margin"] = "maintenance_buffer"
    maintenance_buffer: DecimalStr = Decimal("1.25")
    # A fee below the first tier's maintenance rate, so that a partial sale frees
    # more margin than it costs (otherwise liquidation could never restore).
    fee_rate: DecimalStr = Decimal("0.002")
    slippage: DecimalStr = Decimal("0.0005")
    quantity_step: DecimalStr = Decimal("0.00000001")

    @model_validator(mode="after")
    def _ranges(self) -> LiquidationPolicy:
        if not (0 < self.fraction_per_stage <= 1):
            raise ValueError("fraction_per_stage: must be in (0, 1]")
        if self.maintenance_buffer < 1:
            raise ValueError("maintenance_buffer: must be at least 1")
        if not (0 <= self.fee_rate < Decimal("0.1")):
            raise ValueError("fee_rate: must be in [0, 0.1)")
        if not (0 <= self.slippage < Decimal("0.1")):
            raise ValueError("slippage: must be in [0, 0.1)")
        if self.quantity_step <= 0:
            raise ValueError("quantity_step: must be positive")
        return self


class LiquidationOrder(Contract):
    instrument: Identifier
    quantity: Figure = Field(description="positive amount to reduce the position by")
    side: Literal["sell", "buy"] = Field(description="sell reduces a long, buy reduces a short")


class LiquidationPlan(Contract):
    account_id: Identifier
    orders: list[LiquidationOrder]
    fee_rate: Figure
    slippage: Figure
    target_equity: Figure
    reason: str


class StageRequest(Contract):
    case_id: CaseId
    # Unbounded in practice: after max_stages each stage closes one position, and a portfolio has no size limit.
    stage: int = Field(ge=1, le=10_000_000)
    plan: LiquidationPlan


class Fill(Contract):
    instrument: str
    side: Literal["sell", "buy"]
    quantity: Figure
    mark_price: Figure
    fill_price: Figure
    notional: Figure
    realised_pnl: Figure


class StageResult(Contract):
    case_id: str
    stage: int
    fills: list[Fill]
    sold_notional: Figure
    fee: Figure
    snapshot_after: MarginSnapshot


class BankruptcyRequest(Contract):
    case_id: CaseId
    # The liquidation fee on collateral sold to cover the deficit (0 in requests recorded before conversion).
    fee_rate: DecimalStr = Decimal(0)


class BankruptcySettlement(Contract):
    case_id: str
    account_id: str
    deficit: Figure
    covered_by_insurance_fund: Figure
    uncovered_loss: Figure
    collateral_sold: list[CollateralSale] = []


class CollateralSale(Contract):
    """Non-settlement collateral sold to cover a deficit before the insurance fund pays anything."""

    asset: str
    amount: Figure
    price: Figure
    proceeds: Figure
    fee: Figure


class DepositCredit(Contract):
    """A deposit as the deposit handler books it in the ledger."""

    account_id: Identifier
    deposit_id: Identifier
    amount: DecimalStr
    currency: Identifier

    @model_validator(mode="after")
    def _money(self) -> DepositCredit:
        money_amount(self.amount, self.currency, places=places_if_known(self.currency))
        return self


class DepositBooking(Contract):
    deposit_id: str
    account_id: str
    amount: Figure
    currency: str
    already_credited: bool


class Breach(Contract):
    account_id: str
    currency: str
    equity: Figure
    maintenance_margin: Figure
    shortfall: Figure
    # A staff waive holds for the account: the monitor opens no case unless the hard threshold is crossed.
    waived: bool = False


class BreachScan(Contract):
    limit: int = Field(default=1000, ge=1, le=1_000_000)


# --- the case -------------------------------------------------------------------


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


# No margin call waits longer than a month for money, and no liquidation
# pauses longer than an hour between stages: past these a case is not
# managing risk, it is shielding the account from it.
MAX_DEADLINE = timedelta(days=30)
MAX_PAUSE_BETWEEN_STAGES = timedelta(hours=1)


class CasePolicy(Contract):
    """Everything about a case's timing and liquidation that an exchange may tune."""

    deadline: timedelta = timedelta(hours=4)
    reminders_before_deadline: list[timedelta] = [timedelta(hours=1), timedelta(minutes=15)]
    hard_threshold: DecimalStr = Field(
        default=Decimal("0.5"),
        description="liquidate at once when equity falls below this fraction of maintenance",
    )
    max_deadline_extension: timedelta = timedelta(hours=24)
    pause_between_stages: timedelta = timedelta(seconds=30)
    max_stages: int = Field(default=20, ge=1, le=200)
    ledger_attempt_timeout: timedelta = Field(
        default=timedelta(seconds=30),
        description="how long one ledger call may take before Temporal retries it (e.g. on another worker)",
    )
    notice_delivery_window: timedelta = Field(
        default=timedelta(minutes=10),
        description="how long one notice is retried before it is recorded as undelivered",
    )
    liquidation: LiquidationPolicy = LiquidationPolicy()

    @model_validator(mode="after")
    def _ranges(self) -> CasePolicy:
        # Outer limits that no operator's policy may pass: beyond them a
        # duration overflows datetime arithmetic in the workflow, or a case
        # stops making progress. Operators narrow them per named policy
        # (workflows/policies.py).
        def within(name: str, value: timedelta, low: timedelta, high: timedelta) -> None:
            if not low <= value <= high:
                raise ValueError(
                    f"{name}: must be between {describe_span(low)} and {describe_span(high)}, got {describe_span(value)}"
                )

        within("deadline", self.deadline, timedelta(seconds=1), MAX_DEADLINE)
        if len(self.reminders_before_deadline) > 10:
            raise ValueError("reminders_before_deadline: at most 10 reminders")
        for reminder in self.reminders_before_deadline:
            within("reminders_before_deadline", reminder, timedelta(seconds=1), MAX_DEADLINE)
        if not (0 <= self.hard_threshold < 1):
            raise ValueError("hard_threshold: must be in [0, 1)")
        within("max_deadline_extension", self.max_deadline_extension, timedelta(0), MAX_DEADLINE)
        within("pause_between_stages", self.pause_between_stages, timedelta(0), MAX_PAUSE_BETWEEN_STAGES)
        within(
            "ledger_attempt_timeout", self.ledger_attempt_timeout, timedelta(seconds=1), timedelta(minutes=10)
        )
        within("notice_delivery_window", self.notice_delivery_window, timedelta(seconds=1), timedelta(days=1))
        return self


def describe_span(value: timedelta) -> str:
    """A duration as people read it in an error message."""
    seconds = value.total_seconds()
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g} d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


class CaseInput(Contract):
    account_id: Identifier
    call_id: CallId = Field(description="the caller's id for this margin call (idempotency)")
    policy: CasePolicy = CasePolicy()
    policy_name: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        default="standard",
        description="the operator's named policy; ``policy`` may differ from it only by in-bounds overrides",
    )


class Deposit(Contract):
    """The deposit message a deposit handler sends to an open case (already credited)."""

    deposit_id: Identifier
    amount: DecimalStr
    currency: Identifier

    @model_validator(mode="after")
    def _money(self) -> Deposit:
        money_amount(self.amount, self.currency, places=places_if_known(self.currency))
        return self


class DepositReceipt(Contract):
    deposit_id: str
    counted: bool = Field(description="false when this deposit id had been counted before")
    state: CaseState
    equity: Figure
    maintenance_margin: Figure
    shortfall: Figure


class StaffAction(Contract):
    operator: FreeText
    reason: FreeText


class DeadlineExtension(StaffAction):
    new_deadline: datetime


class Waiver(StaffAction):
    """A waive is a decision with a scope: the risk monitor opens no new case for the account until
    ``until`` (or, with none, until the account is seen healthy again), unless the hard threshold is crossed."""

    until: AwareDatetime | None = None


class RiskEscalation(Contract):
    """The risk monitor's word that an open case's account moved past the hard threshold."""

    equity: Figure
    maintenance_margin: Figure


class CaseEvent(Contract):
    """An audit row for the case record: who did what, and why."""

    case_id: CaseId
    event_id: str
    kind: str
    operator: str | None = None
    reason: str | None = None
    detail: str
    at: datetime


class StageRecord(Contract):
    stage: int
    fills: list[Fill]
    sold_notional: Figure
    fee: Figure
    equity_after: Figure
    maintenance_after: Figure
    executed_at: datetime


class TimelineEntry(Contract):
    at: datetime
    what: str


class CaseStatus(Contract):
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


class CaseOutcome(Contract):
    case_id: str
    account_id: str
    state: CaseState
    status: CaseStatus


class CaseClosing(Contract):
    """The case record written to the ledger when a case closes, with the notices still to deliver.

    The notices go to the ledger's outbox in the same call, so that the case
    completes at once (freeing the account for a new case) and a dispatcher
    delivers them whatever happens to the workflow.
    """

    status: CaseStatus
    notices: list[Notice] = []
    notice_delivery_window: timedelta = timedelta(minutes=10)
    # For a case closed WAIVED: the waive, whose scope the risk monitor honours.
    waiver: Waiver | None = None


class CaseOpening(Contract):
    case_id: CaseId
    account_id: Identifier
    call_id: CallId
    opened_at: datetime
    # Checked by the ledger against the operator's book; None only in openings recorded before policies were named.
    policy_name: str = "standard"
    policy: CasePolicy | None = None


# --- notices to the trader ------------------------------------------------------


class NoticeKind(StrEnum):
    OPENED = "margin_call.opened"
    REMINDER = "margin_call.reminder"
    LIQUIDATION_STAGE = "margin_call.liquidation_stage"
    STAFF_ACTION = "margin_call.staff_action"
    CLOSED = "margin_call.closed"


class Notice(Contract):
    """One webhook to the exchange's notification service; ``notice_id`` is stable across retries."""

    notice_id: str
    kind: NoticeKind
    case_id: str
    account_id: str
    state: CaseState
    occurred_at: datetime
    message: str
    deadline: datetime | None = None
    currency: str | None = None
    equity: Figure | None = None
    maintenance_margin: Figure | None = None
    shortfall: Figure | None = None
    deposit_needed: Figure | None = None
    stage: int | None = None
    fills: list[Fill] = []
    fee: Figure | None = None
    operator: str | None = None
    reason: str | None = None


class NoticeDelivery(Contract):
    notice_id: str
    delivered: bool
    status_code: int | None
    detail: str
