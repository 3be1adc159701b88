"""A case's statement checks itself: every figure, recomputed from the inputs the statement lists, agrees.

Real cases of every outcome run end to end on the test stack (Temporal, the
worker, PostgreSQL, the webhook receiver); then their statement is read from
the ledger and every figure in it is recomputed, here, from nothing but what
the statement itself lists, with ``workflows.domain.margin`` and the rounding
rules of docs/design.md: the account's figures at the opening, before and
after each stage and at the close; each fill's price, notional and PnL; each
stage's fee; the settlement's sales, deficit, insurance fund cover and
uncovered loss; the warnings sent before the call, each inside the band it
names; and the story between them (deposits explain a cure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import ROUND_DOWN, ROUND_FLOOR, ROUND_UP, Decimal, localcontext

import pytest

from activities.ledger import PostgresDeposits, case_statement
from activities.ledger import reference as exchange
from tests.helpers import CaseStack, account_with, balance, fast_policy, notice_kinds, wait_state
from workflows.client import MarginCallClient
from workflows.contract import (
    AccountReading,
    CaseOutcome,
    CaseState,
    CaseStatement,
    Deposit,
    NoticeKind,
    Settlement,
    StaffAction,
    StageLine,
)
from workflows.domain import margin
from workflows.domain.liquidation import LiquidationPolicy
from workflows.domain.portfolio import Collateral, Portfolio

D = Decimal
ZERO = D(0)
ALICE = StaffAction(operator="alice@support", reason="client's wire is in transit, ref 8812")


def unit(reading: AccountReading) -> Decimal:
    assert reading.currency_decimals is not None
    return D(1).scaleb(-reading.currency_decimals)


def held(portfolio: Portfolio, asset: str) -> Decimal:
    return sum((c.amount for c in portfolio.collateral if c.asset == asset), ZERO)


def check_reading(reading: AccountReading) -> None:
    """The figures from the listed inputs, by the domain's math and by hand; each tier from its table."""
    assert margin.assess(reading.portfolio) == reading.figures
    with localcontext() as ctx:
        ctx.prec = margin.PRECISION
        collateral = sum(
            (c.amount * c.price * (1 - c.haircut) if c.amount > 0 else c.amount * c.price)
            for c in reading.portfolio.collateral
        )
        pnl = sum(p.quantity * (p.mark_price - p.entry_price) for p in reading.portfolio.positions)
        assert reading.figures.equity == (collateral + pnl).quantize(D("1e-12")).normalize()
        maintenance = ZERO
        for position, tier in zip(reading.portfolio.positions, reading.tiers, strict=True):
            index = tier.tier - 1
            notional = abs(position.quantity) * position.mark_price
            assert position.tiers[index].notional_floor <= notional
            assert index + 1 == len(position.tiers) or notional < position.tiers[index + 1].notional_floor
            assert tier.maintenance_rate == position.tiers[index].maintenance_rate
            assert tier.maintenance_amount == margin.cumulative_amounts(position.tiers)[index]
            assert position.mark_as_of is not None  # every mark is shown with its time
            maintenance += notional * tier.maintenance_rate - tier.maintenance_amount
        assert reading.figures.maintenance_margin == maintenance.quantize(D("1e-12")).normalize()


def after_fills(before: AccountReading, stage: StageLine, fee: Decimal) -> Portfolio:
    """The account ``before`` with the stage's fills and fee applied: positions reduced, PnL and fee booked."""
    sold = {f.instrument: f for f in stage.fills}
    positions = []
    for p in before.portfolio.positions:
        fill = sold.get(p.instrument)
        quantity = p.quantity - fill.quantity if fill and p.quantity > 0 else p.quantity
        quantity = p.quantity + fill.quantity if fill and p.quantity < 0 else quantity
        if quantity != 0:
            positions.append(p.model_copy(update={"quantity": quantity}))
    moved = sum((f.realised_pnl for f in stage.fills), ZERO) - fee
    collateral = [
        c.model_copy(update={"amount": c.amount + moved}) if c.asset == before.currency else c
        for c in before.portfolio.collateral
    ]
    if before.currency not in {c.asset for c in collateral}:
        collateral.append(Collateral(asset=before.currency, amount=moved, price=D(1), haircut=ZERO))
    return Portfolio(collateral=collateral, positions=positions)


def check_stage(stage: StageLine) -> None:
    before = stage.before
    assert before is not None, "the account before the stage is on record"
    check_reading(before)
    check_reading(stage.after)
    assert not stage.through_venue
    assert (stage.equity_before, stage.maintenance_before) == (
        before.figures.equity,
        before.figures.maintenance_margin,
    )
    assert before.figures.equity < before.figures.maintenance_margin  # sold only from an account in breach
    positions = {p.instrument: p for p in before.portfolio.positions}
    orders = {o.instrument: o for o in stage.plan.orders}
    with localcontext() as ctx:
        ctx.prec = margin.PRECISION
        for fill in stage.fills:
            position = positions[fill.instrument]
            sign = 1 if position.quantity > 0 else -1
            assert fill.side == ("sell" if sign > 0 else "buy") == orders[fill.instrument].side
            assert fill.quantity == min(orders[fill.instrument].quantity, abs(position.quantity))
            assert fill.mark_price == position.mark_price
            assert fill.fill_price == position.mark_price * (1 - sign * stage.plan.slippage)
            assert fill.notional == fill.quantity * fill.fill_price
            gain = fill.quantity * sign * (fill.fill_price - position.entry_price)
            assert fill.realised_pnl == gain.quantize(unit(before), rounding=ROUND_FLOOR)
        assert abs(sum((f.fee for f in stage.fills), ZERO) - stage.fee) < D("1e-40")
    check_stage_books(before, stage)


def check_stage_books(before: AccountReading, stage: StageLine) -> None:
    """Whoever filled the stage: its notional, its fee (capped at the equity left) and the account after."""
    with localcontext() as ctx:
        ctx.prec = margin.PRECISION
        assert stage.sold_notional == sum((f.notional for f in stage.fills), ZERO)
        equity_after_sale = margin.assess(after_fills(before, stage, ZERO)).equity
        fee = min(stage.sold_notional * stage.plan.fee_rate, max(ZERO, equity_after_sale))
        assert stage.fee == fee.quantize(unit(before), rounding=ROUND_DOWN)
    expected = after_fills(before, stage, stage.fee)
    assert expected.positions == stage.after.portfolio.positions
    assert {c.asset: c.amount for c in expected.collateral} == {
        c.asset: c.amount for c in stage.after.portfolio.collateral
    }


def check_settlement(settlement: Settlement) -> None:
    assert settlement.recorded and settlement.account is not None
    account = settlement.account
    check_reading(account)
    assert account.portfolio.positions == []  # settled only after every position was closed
    assert settlement.settlement_balance == held(account.portfolio, account.currency)
    assert settlement.settlement_price is not None and settlement.fee_rate is not None
    assert settlement.insurance_fund_before is not None
    places = unit(account)
    with localcontext() as ctx:
        ctx.prec = margin.PRECISION
        others = [c for c in account.portfolio.collateral if c.asset != account.currency and c.amount > 0]
        assert [s.asset for s in settlement.collateral_sold] == [c.asset for c in others]
        proceeds = ZERO
        for sale, item in zip(settlement.collateral_sold, others, strict=True):
            assert (sale.amount, sale.price) == (item.amount, item.price)
            expected = (item.amount * item.price / settlement.settlement_price).quantize(places, ROUND_DOWN)
            assert sale.proceeds == expected
            proceeds += sale.proceeds
        fees = sum((s.fee for s in settlement.collateral_sold), ZERO)
        cap = max(ZERO, settlement.settlement_balance + proceeds)
        assert fees == min(proceeds * settlement.fee_rate, cap).quantize(places, ROUND_DOWN)
        left = settlement.settlement_balance + proceeds - fees
        assert settlement.deficit == max(ZERO, -left).quantize(places, ROUND_DOWN)
        covered = min(settlement.deficit, max(ZERO, settlement.insurance_fund_before))
        assert settlement.covered_by_insurance_fund == covered
        assert settlement.uncovered_loss == settlement.deficit - covered


def check_warnings(statement: CaseStatement) -> None:
    """Each warning's figures agree, it was sent in the band it names, before the call, oldest first."""
    for line in statement.warnings:
        assert line.distance_to_call == line.equity - line.maintenance_margin
        assert line.maintenance_margin <= line.equity < line.level * line.maintenance_margin
        assert line.warned_at <= statement.opened_at
        assert line.notice.kind == NoticeKind.WARNING and line.notice.notice_id.startswith("warning:")
        assert line.notice.sent_at == line.warned_at
        assert (line.notice.status == "delivered") == (line.notice.delivered_at is not None)
    assert [w.warned_at for w in statement.warnings] == sorted(w.warned_at for w in statement.warnings)


def check_statement(statement: CaseStatement) -> None:
    """Every figure of the statement from the inputs it lists; the story between them adds up."""
    assert statement.not_recorded == []
    check_warnings(statement)
    opening = statement.opening
    assert opening.recorded and opening.account is not None and opening.policy is not None
    check_reading(opening.account)
    assert (opening.policy.name, opening.policy.version) == ("standard", 1)
    if opening.account.figures.equity < opening.account.figures.maintenance_margin:
        shortfall = opening.account.figures.shortfall
        assert opening.deposit_asked == shortfall.quantize(unit(opening.account), rounding=ROUND_UP)
        assert opening.policy.policy is not None
        assert opening.deadline == statement.opened_at + opening.policy.policy.deadline
    for stage in statement.stages:
        check_stage(stage)
    sale_fees = (
        sum((s.fee for s in statement.settlement.collateral_sold), ZERO) if statement.settlement else 0
    )
    assert statement.fees_to_insurance_fund == sum((s.fee for s in statement.stages), ZERO) + sale_fees
    if statement.settlement is not None:
        check_settlement(statement.settlement)
    closing = statement.closing
    assert closing is not None and closing.account is not None and closing.state == statement.state
    check_reading(closing.account)
    # The figures the case decided on are the ledger's at the close (no mark moved in between here).
    assert (closing.equity, closing.maintenance_margin, closing.shortfall) == (
        closing.account.figures.equity,
        closing.account.figures.maintenance_margin,
        closing.account.figures.shortfall,
    )
    settled = statement.settlement
    assert closing.insurance_fund_used == (settled.covered_by_insurance_fund if settled else 0)
    assert closing.uncovered_loss == (settled.uncovered_loss if settled else 0)
    if not statement.stages and settled is None:
        # Nothing sold: the account moved only by the deposits the case counted (marks held still).
        counted = sum((d.amount for d in statement.deposits if d.counted_by_case), ZERO)
        currency = statement.currency
        assert (
            held(closing.account.portfolio, currency) == held(opening.account.portfolio, currency) + counted
        )
        assert closing.account.figures.equity == opening.account.figures.equity + counted
    # Each notice with when it was sent and that it arrived.
    assert statement.notices and all(n.sent_at is not None for n in statement.notices)
    assert all(n.status == "delivered" and n.delivered_at is not None for n in statement.notices)


async def cured(stack: CaseStack, api: MarginCallClient, account: str) -> CaseOutcome:
    handle = await api.open_case(account, "call-1", fast_policy(deadline=timedelta(seconds=60)))
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    for deposit_id, amount in ((f"{account}-d1", "10"), (f"{account}-d2", "38")):
        deposit = Deposit(account_id=account, deposit_id=deposit_id, amount=D(amount), currency="USDT")
        await api.report_deposit(PostgresDeposits(stack.pool), deposit)
    return await handle.result()


async def restored(stack: CaseStack, api: MarginCallClient, account: str) -> CaseOutcome:
    policy = fast_policy(deadline=timedelta(seconds=1), pause_between_stages=timedelta(milliseconds=200))
    return await (await api.open_case(account, "call-1", policy)).result()


async def closed_out(stack: CaseStack, api: MarginCallClient, account: str) -> CaseOutcome:
    liquidation = LiquidationPolicy(fraction_per_stage=D(1), fee_rate=D("0.005"), slippage=D("0.001"))
    policy = fast_policy(deadline=timedelta(seconds=1), liquidation=liquidation)
    return await (await api.open_case(account, "call-1", policy)).result()


async def bankrupt(stack: CaseStack, api: MarginCallClient, account: str) -> CaseOutcome:
    async with stack.pool.acquire() as conn:
        await exchange.fund_insurance(conn, "USDT", D("1000"), f"top-up:{account}")
    return await (
        await api.open_case(account, "call-1", fast_policy(deadline=timedelta(seconds=60)))
    ).result()


async def waived(stack: CaseStack, api: MarginCallClient, account: str) -> CaseOutcome:
    handle = await api.open_case(account, "call-1", fast_policy(deadline=timedelta(seconds=60)))
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    await api.waive(account, ALICE)
    return await handle.result()


Drive = Callable[[CaseStack, MarginCallClient, str], Awaitable[CaseOutcome]]
OUTCOMES: dict[CaseState, tuple[str, Drive]] = {
    CaseState.CURED: ("550", cured),
    CaseState.RESTORED: ("550", restored),
    CaseState.CLOSED_OUT: ("550", closed_out),
    CaseState.BANKRUPT: ("100", bankrupt),
    CaseState.WAIVED: ("550", waived),
}


@pytest.mark.parametrize("outcome", list(OUTCOMES), ids=[s.value for s in OUTCOMES])
async def test_every_figure_of_a_statement_follows_from_its_inputs(
    stack: CaseStack, outcome: CaseState
) -> None:
    collateral, drive = OUTCOMES[outcome]
    api = MarginCallClient(stack.client)
    account = await account_with(stack, f"stmt-{outcome.value.lower()}", collateral)
    ended = await asyncio.wait_for(drive(stack, api, account), 60)
    assert ended.state == outcome
    received = await notice_kinds(stack, account)  # the outbox has delivered what the close owed
    statement = await case_statement(stack.pool, account)
    assert (statement.case_id, statement.state) == (ended.case_id, outcome)
    check_statement(statement)
    assert sorted(n.kind for n in statement.notices) == received
    assert len(statement.stages) == len(ended.status.stages)
    if outcome == CaseState.WAIVED:
        assert [(a.kind, a.operator, a.reason) for a in statement.staff_actions] == [
            ("waive", ALICE.operator, ALICE.reason)
        ]
    if outcome == CaseState.CURED:
        assert [
            d.deposit_id for d in statement.deposits if d.counted_by_case
        ] == ended.status.deposits_counted
    if outcome == CaseState.BANKRUPT:
        assert statement.settlement is not None and statement.settlement.uncovered_loss == 0
        # The fund's balance it worked from: what the fund holds now, plus what it paid (nothing else moved it).
        paid = statement.settlement.covered_by_insurance_fund
        assert (
            statement.settlement.insurance_fund_before
            == await balance(stack.pool, "insurance_fund:USDT") + paid
        )
        assert statement.adl is None  # the fund covered it all: nobody is deleveraged
    assert statement.timeline == ended.status.timeline
