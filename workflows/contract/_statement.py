"""A case's statement: why a case ended as it did, every figure beside the inputs it came from.

A trader asks "why was I liquidated", a support agent answers, an auditor
checks the answer: all three read this one model. The ledger assembles it from
the rows each step of the case recorded (``activities/ledger/_statement.py``);
the API serves it as JSON, the CLI as text, and ``worker/statement`` renders
it as a printable page, none of them adding a figure. Every figure is listed
with what it was computed from (each position's mark, its time and its tier,
each collateral's price and haircut, the policy by name and version, each
stage's account before and after), so that anyone can recompute it with
``workflows.domain.margin`` and the rounding rules of docs/design.md. What the
ledger did not record (a case older than statements) is said in
``not_recorded``, never filled in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from workflows.contract._case import CaseState, TimelineEntry
from workflows.contract._ledger import CollateralSale
from workflows.domain import margin
from workflows.domain.liquidation import LiquidationPlan
from workflows.domain.message import Message
from workflows.domain.money import Figure
from workflows.domain.policies import CasePolicy
from workflows.domain.portfolio import MarginSnapshot, Portfolio, RiskFigures


class TierApplied(Message):
    """The tier of an instrument's table that a position's notional falls in, and what it charges."""

    instrument: str
    tier: int  # 1 is the table's first row
    notional_floor: Figure
    maintenance_rate: Figure
    # The tier's cumulative amount ("cum"), derived from the table: maintenance = notional x rate - this.
    maintenance_amount: Figure


class AccountReading(Message):
    """The account as the ledger read it at one moment: every input, and the figures over them."""

    as_of: datetime
    currency: str
    currency_decimals: int | None
    portfolio: Portfolio
    tiers: list[TierApplied]
    figures: RiskFigures

    @classmethod
    def of(cls, snapshot: MarginSnapshot) -> AccountReading:
        tiers = []
        for position in snapshot.portfolio.positions:
            table = position.tiers
            index = margin.tier_index(table, margin.notional(position))
            tiers.append(
                TierApplied(
                    instrument=position.instrument,
                    tier=index + 1,
                    notional_floor=table[index].notional_floor,
                    maintenance_rate=table[index].maintenance_rate,
                    maintenance_amount=margin.cumulative_amounts(table)[index],
                )
            )
        return cls(
            as_of=snapshot.as_of,
            currency=snapshot.currency,
            currency_decimals=snapshot.currency_decimals,
            portfolio=snapshot.portfolio,
            tiers=tiers,
            figures=snapshot.figures,
        )


class PolicyApplied(Message):
    name: str
    version: int | None  # None: the worker's book did not name the policy
    policy: CasePolicy | None  # None: the opening carried no policy (recorded before policies were named)


class Opening(Message):
    at: datetime
    recorded: bool  # False: the case opened before statements were recorded
    account: AccountReading | None = None
    policy: PolicyApplied | None = None
    # What the trader was asked for: the shortfall rounded up to the currency's unit, by the deadline.
    deposit_asked: Figure | None = None
    deadline: datetime | None = None


NoticeStatus = Literal["delivered", "undelivered", "pending", "not sent"]


class NoticeLine(Message):
    notice_id: str
    kind: str
    sent_at: datetime | None
    status: NoticeStatus
    delivered_at: datetime | None = None
    attempts: int | None = None
    detail: str | None = None
    # Sent by the case itself, or by the ledger's outbox after the case closed.
    via: Literal["case", "outbox"]


class WarningLine(Message):
    """A warning sent before the call, in the episode that ended in it (not one re-armed before it)."""

    level: Figure  # warned below level x maintenance
    episode: int
    warned_at: datetime
    equity: Figure
    maintenance_margin: Figure
    distance_to_call: Figure  # equity - maintenance: how far the call still was
    notice: NoticeLine


class DepositLine(Message):
    deposit_id: str
    amount: Figure
    currency: str
    credited_at: datetime
    counted_by_case: bool


class StaffActionLine(Message):
    at: datetime
    kind: str
    operator: str | None
    reason: str | None
    what: str | None


class FillLine(Message):
    instrument: str
    side: Literal["sell", "buy"]
    quantity: Figure
    mark_price: Figure
    fill_price: Figure
    notional: Figure
    realised_pnl: Figure
    fee: Figure  # this fill's part of the stage's fee, by notional (a record, not a posting)


class StageLine(Message):
    stage: int
    executed_at: datetime
    through_venue: bool  # an order gateway filled it (prices are the venue's), else the backstop at the mark
    plan: LiquidationPlan
    fills: list[FillLine]
    sold_notional: Figure
    fee: Figure
    equity_before: Figure | None
    maintenance_before: Figure | None
    before: AccountReading | None  # None: booked before statements were recorded
    after: AccountReading


class SettlementInputs(Message):
    """What a bankruptcy settlement worked from, as the ledger records it with the settlement."""

    account: MarginSnapshot
    settlement_balance: Figure
    settlement_price: Figure
    insurance_fund_before: Figure
    fee_rate: Figure


class Settlement(Message):
    settled_at: datetime
    deficit: Figure
    covered_by_insurance_fund: Figure
    uncovered_loss: Figure
    collateral_sold: list[CollateralSale]
    recorded: bool  # False: settled before statements recorded its inputs
    account: AccountReading | None = None
    settlement_balance: Figure | None = None
    settlement_price: Figure | None = None
    insurance_fund_before: Figure | None = None
    fee_rate: Figure | None = None


class AdlEntry(Message):
    rank: int
    instrument: str
    account_id: str
    side: Literal["long", "short"]
    quantity: Figure
    entry_price: Figure
    mark_price: Figure
    unrealised_pnl: Figure
    equity: Figure
    pnl_ratio: Figure
    effective_leverage: Figure
    score: Figure


class AdlRanking(Message):
    """Who would be deleveraged for the uncovered loss: per instrument, the opposite side in profit."""

    ranked_at: datetime
    currency: str
    uncovered_loss: Figure
    formula: str
    entries: list[AdlEntry]


class Closing(Message):
    at: datetime
    state: CaseState
    why: str | None
    # The figures the case last read and decided on (its status at the close).
    equity: Figure | None
    maintenance_margin: Figure | None
    shortfall: Figure | None
    insurance_fund_used: Figure
    uncovered_loss: Figure
    # The account as the ledger showed it when the outcome was written; None before statements.
    account: AccountReading | None = None


class CaseStatement(Message):
    case_id: str
    account_id: str
    call_id: str
    state: CaseState
    currency: str
    opened_at: datetime
    closed_at: datetime | None
    opening: Opening
    # The warnings that came before this call (oldest first); [] in statements from before warnings.
    warnings: list[WarningLine] = []
    deposits: list[DepositLine]
    notices: list[NoticeLine]
    staff_actions: list[StaffActionLine]
    stages: list[StageLine]
    fees_to_insurance_fund: Figure
    settlement: Settlement | None
    adl: AdlRanking | None
    closing: Closing | None
    timeline: list[TimelineEntry]
    # What this statement cannot show, and why (a case older than statements, a case still open).
    not_recorded: list[str]
    generated_at: datetime
