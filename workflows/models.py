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
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from workflows.money import DecimalStr, money_amount

# Ids travel into workflow ids, SQL keys and webhook headers: printable, bounded.
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/-]+$")]
# Operators and reasons are free text, but bounded and never blank.
FreeText = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]


class Contract(BaseModel):
    """Strict by default: an unknown field is a caller's mistake worth naming."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- portfolio and risk figures -------------------------------------------------


class Tier(Contract):
    notional_floor: DecimalStr
    maintenance_rate: DecimalStr
    initial_rate: DecimalStr

    @model_validator(mode="after")
    def _rates_in_range(self) -> Tier:
        if self.notional_floor < 0:
            raise ValueError("notional_floor must not be negative")
        if not (0 <= self.maintenance_rate < 1):
            raise ValueError("maintenance_rate must be in [0, 1)")
        if not (self.maintenance_rate <= self.initial_rate <= 1):
            raise ValueError("initial_rate must be in [maintenance_rate, 1]")
        return self


class Collateral(Contract):
    asset: Identifier
    amount: DecimalStr
    price: DecimalStr
    haircut: DecimalStr

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
    quantity: DecimalStr
    entry_price: DecimalStr
    mark_price: DecimalStr
    tiers: list[Tier] = Field(min_length=1, max_length=64)

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
                raise ValueError("notional_floor must be strictly ascending")
        return tiers


class Portfolio(Contract):
    collateral: list[Collateral] = Field(max_length=256)
    positions: list[Position] = Field(max_length=1024)


class PositionFigures(Contract):
    instrument: str
    notional: DecimalStr
    unrealised_pnl: DecimalStr
    maintenance_margin: DecimalStr
    initial_margin: DecimalStr
    liquidation_price: DecimalStr | None
    bankruptcy_price: DecimalStr | None


class RiskFigures(Contract):
    collateral_value: DecimalStr
    equity: DecimalStr
    maintenance_margin: DecimalStr
    initial_margin: DecimalStr
    shortfall: DecimalStr
    margin_ratio: DecimalStr | None
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
            raise ValueError("fraction_per_stage must be in (0, 1]")
        if self.maintenance_buffer < 1:
            raise ValueError("maintenance_buffer must be at least 1")
        if not (0 <= self.fee_rate < Decimal("0.1")):
            raise ValueError("fee_rate must be in [0, 0.1)")
        if not (0 <= self.slippage < Decimal("0.1")):
            raise ValueError("slippage must be in [0, 0.1)")
        if self.quantity_step <= 0:
            raise ValueError("quantity_step must be positive")
        return self


class LiquidationOrder(Contract):
    instrument: Identifier
    quantity: DecimalStr = Field(description="positive amount to reduce the position by")
    side: Literal["sell", "buy"] = Field(description="sell reduces a long, buy reduces a short")


class LiquidationPlan(Contract):
    account_id: Identifier
    orders: list[LiquidationOrder]
    fee_rate: DecimalStr
    slippage: DecimalStr
    target_equity: DecimalStr
    reason: str


class StageRequest(Contract):
    case_id: Identifier
    stage: int = Field(ge=1, le=1000)
    plan: LiquidationPlan


class Fill(Contract):
    instrument: str
    side: Literal["sell", "buy"]
    quantity: DecimalStr
    mark_price: DecimalStr
    fill_price: DecimalStr
    notional: DecimalStr
    realised_pnl: DecimalStr


class StageResult(Contract):
    case_id: str
    stage: int
    fills: list[Fill]
    sold_notional: DecimalStr
    fee: DecimalStr
    snapshot_after: MarginSnapshot


class BankruptcyRequest(Contract):
    case_id: Identifier


class BankruptcySettlement(Contract):
    case_id: str
    account_id: str
    deficit: DecimalStr
    covered_by_insurance_fund: DecimalStr
    uncovered_loss: DecimalStr


class DepositCredit(Contract):
    """A deposit as the deposit handler books it in the ledger."""

    account_id: Identifier
    deposit_id: Identifier
    amount: DecimalStr
    currency: Identifier

    @model_validator(mode="after")
    def _money(self) -> DepositCredit:
        money_amount(self.amount, self.currency)
        return self


class DepositBooking(Contract):
    deposit_id: str
    account_id: str
    amount: DecimalStr
    currency: str
    already_credited: bool


class Breach(Contract):
    account_id: str
    currency: str
    equity: DecimalStr
    maintenance_margin: DecimalStr
    shortfall: DecimalStr


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
        if self.deadline <= timedelta(0):
            raise ValueError("deadline must be positive")
        if any(r <= timedelta(0) for r in self.reminders_before_deadline):
            raise ValueError("reminders_before_deadline must be positive durations")
        if not (0 <= self.hard_threshold < 1):
            raise ValueError("hard_threshold must be in [0, 1)")
        if self.pause_between_stages < timedelta(0):
            raise ValueError("pause_between_stages must not be negative")
        if not timedelta(seconds=1) <= self.ledger_attempt_timeout <= timedelta(minutes=10):
            raise ValueError("ledger_attempt_timeout must be between 1 s and 10 min")
        if self.notice_delivery_window <= timedelta(0):
            raise ValueError("notice_delivery_window must be positive")
        return self


class CaseInput(Contract):
    account_id: Identifier
    call_id: Identifier = Field(description="the caller's id for this margin call (idempotency)")
    policy: CasePolicy = CasePolicy()


class Deposit(Contract):
    """The deposit message a deposit handler sends to an open case (already credited)."""

    deposit_id: Identifier
    amount: DecimalStr
    currency: Identifier

    @model_validator(mode="after")
    def _money(self) -> Deposit:
        money_amount(self.amount, self.currency)
        return self


class DepositReceipt(Contract):
    deposit_id: str
    counted: bool = Field(description="false when this deposit id had been counted before")
    state: CaseState
    equity: DecimalStr
    maintenance_margin: DecimalStr
    shortfall: DecimalStr


class StaffAction(Contract):
    operator: FreeText
    reason: FreeText


class DeadlineExtension(StaffAction):
    new_deadline: datetime


class RiskEscalation(Contract):
    """The risk monitor's word that an open case's account moved past the hard threshold."""

    equity: DecimalStr
    maintenance_margin: DecimalStr


class CaseEvent(Contract):
    """An audit row for the case record: who did what, and why."""

    case_id: Identifier
    event_id: str
    kind: str
    operator: str | None = None
    reason: str | None = None
    detail: str
    at: datetime


class StageRecord(Contract):
    stage: int
    fills: list[Fill]
    sold_notional: DecimalStr
    fee: DecimalStr
    equity_after: DecimalStr
    maintenance_after: DecimalStr
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
    equity: DecimalStr | None
    maintenance_margin: DecimalStr | None
    shortfall: DecimalStr | None
    deposit_needed: DecimalStr | None
    deposits_counted: list[str]
    stages: list[StageRecord]
    fees_to_insurance_fund: DecimalStr
    insurance_fund_used: DecimalStr
    uncovered_loss: DecimalStr
    notices_sent: int
    notices_failed: list[str]
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
    """The case record written to the ledger when a case closes."""

    status: CaseStatus


class CaseOpening(Contract):
    case_id: Identifier
    account_id: Identifier
    call_id: Identifier
    opened_at: datetime


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
    equity: DecimalStr | None = None
    maintenance_margin: DecimalStr | None = None
    shortfall: DecimalStr | None = None
    deposit_needed: DecimalStr | None = None
    stage: int | None = None
    fills: list[Fill] = []
    fee: DecimalStr | None = None
    operator: str | None = None
    reason: str | None = None


class NoticeDelivery(Contract):
    notice_id: str
    delivered: bool
    status_code: int | None
    detail: str
