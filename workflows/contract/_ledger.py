"""What the case asks of the ledger and what it answers: the ledger activities' inputs and outputs."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from pydantic import (
    Field,
)

from workflows.contract._case import CaseStatus, Waiver, WaiverApproval
from workflows.contract._notices import Notice
from workflows.domain.liquidation import Fill, LiquidationPlan
from workflows.domain.message import CallId, CaseId, Identifier, Message
from workflows.domain.money import DecimalStr, Figure
from workflows.domain.policies import DEFAULT_MAX_MARK_AGE, CasePolicy
from workflows.domain.portfolio import MarginSnapshot


class CaseOpening(Message):
    case_id: CaseId
    account_id: Identifier
    call_id: CallId
    opened_at: datetime
    # Checked by the ledger against the operator's book; None only in openings recorded before policies were named.
    policy_name: str = "standard"
    policy: CasePolicy | None = None


class StageRequest(Message):
    case_id: CaseId
    # Unbounded in practice: after max_stages each stage closes one position, and a portfolio has no size limit.
    stage: int = Field(ge=1, le=10_000_000)
    plan: LiquidationPlan
    # The case policy's max_mark_age: the ledger refuses (StaleMarks) to sell on an older mark.
    # None in requests recorded before marks had an age: the ledger holds them to the default.
    max_mark_age: timedelta | None = None
    # The venue filled nothing too many times: the ledger takes the positions over at the mark less
    # slippage (the ``ledger`` venue's way), after booking any order of the stage still out.
    backstop: bool = False


class StageResult(Message):
    case_id: str
    stage: int
    fills: list[Fill]
    sold_notional: Figure
    fee: Figure
    snapshot_after: MarginSnapshot


class BankruptcyRequest(Message):
    case_id: CaseId
    # The liquidation fee on collateral sold to cover the deficit (0 in requests recorded before conversion).
    fee_rate: DecimalStr = Decimal(0)


class BankruptcySettlement(Message):
    case_id: str
    account_id: str
    deficit: Figure
    covered_by_insurance_fund: Figure
    uncovered_loss: Figure
    collateral_sold: list[CollateralSale] = []


class CollateralSale(Message):
    """Non-settlement collateral sold to cover a deficit before the insurance fund pays anything."""

    asset: str
    amount: Figure
    price: Figure
    proceeds: Figure
    fee: Figure


class DepositBooking(Message):
    deposit_id: str
    account_id: str
    amount: Figure
    currency: str
    already_credited: bool


class Breach(Message):
    account_id: str
    currency: str
    equity: Figure
    maintenance_margin: Figure
    shortfall: Figure
    # A staff waive holds for the account: the monitor opens no case unless the hard threshold is crossed.
    waived: bool = False
    # A mark of one of its positions is stale or its instrument halted: no case is opened or escalated
    # on a price the exchange no longer stands behind.
    unpriced: bool = False
    # The policy the exchange named for the account (reference data); None: the monitor's own.
    policy_name: str | None = None


class BreachScan(Message):
    limit: int = Field(default=1000, ge=1, le=1_000_000)
    # Accounts holding a position whose mark is older than this, or in a halted
    # instrument, are not called: the exchange no longer stands behind that price.
    max_mark_age: timedelta = DEFAULT_MAX_MARK_AGE


class CaseEvent(Message):
    """An audit row for the case record: who did what, and why."""

    case_id: CaseId
    event_id: str
    kind: str
    operator: str | None = None
    reason: str | None = None
    detail: str
    at: datetime


class CaseClosing(Message):
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
    # For a waive the policy held to two people: the second operator, on the waiver's row beside the first.
    waiver_approval: WaiverApproval | None = None
