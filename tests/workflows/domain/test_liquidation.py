"""Property-based tests (hypothesis) of the risk math and the liquidation liquidation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from activities.ledger import LedgerActivities
from worker.market import LISTINGS, Trader, move_market, onboard
from workflows.contract import CaseOpening, StageRequest
from workflows.domain import liquidation, margin
from workflows.domain.liquidation import LiquidationPolicy
from workflows.domain.portfolio import Collateral, MarginSnapshot, Portfolio, Position

D = Decimal
INSTRUMENTS = list(LISTINGS)


def money(low: str, high: str, places: int = 2) -> st.SearchStrategy[Decimal]:
    return st.decimals(
        min_value=D(low), max_value=D(high), places=places, allow_nan=False, allow_infinity=False
    )


@st.composite
def positions(draw: st.DrawFn) -> list[Position]:
    chosen = draw(st.lists(st.sampled_from(INSTRUMENTS), min_size=1, max_size=3, unique=True))
    result = []
    for instrument in chosen:
        price, tiers = LISTINGS[instrument]
        quantity = draw(money("0.001", str(D(2_000_000) / price), 3))
        side = draw(st.sampled_from([1, -1]))
        move = draw(money("0.5", "1.5", 3))
        result.append(
            Position(
                instrument=instrument,
                quantity=side * quantity,
                entry_price=price,
                mark_price=(price * move).quantize(D("0.01")),
                tiers=tiers,
            )
        )
    return result


@st.composite
def breached_snapshots(draw: st.DrawFn) -> MarginSnapshot:
    held = draw(positions())
    portfolio = Portfolio(collateral=[], positions=held)
    mm = sum((margin.maintenance_margin(p) for p in held), D(0))
    upnl = sum((margin.unrealised_pnl(p) for p in held), D(0))
    # Collateral so that equity is some fraction of maintenance (below it: in breach).
    ratio = draw(money("-2", "0.99", 2))
    collateral = Collateral(
        asset="USDT", amount=(ratio * mm - upnl).quantize(D("0.01")), price=D(1), haircut=D(0)
    )
    portfolio = Portfolio(collateral=[collateral], positions=held)
    figures = margin.assess(portfolio)
    assume(figures.equity < figures.maintenance_margin)
    return MarginSnapshot(
        account_id="prop",
        currency="USDT",
        status="active",
        portfolio=portfolio,
        figures=figures,
        as_of=datetime.now(UTC),
    )


policies = st.builds(
    LiquidationPolicy,
    fraction_per_stage=money("0.05", "1", 2),
    fee_rate=money("0", "0.01", 4),
    slippage=money("0", "0.005", 4),
    maintenance_buffer=money("1", "2", 2),
)


def after_sale(
    snapshot: MarginSnapshot, instrument: str, sold: Decimal, policy: LiquidationPolicy
) -> Decimal:
    """Equity after selling ``sold`` at mark less slippage and fee (the planner's model)."""
    position = next(p for p in snapshot.portfolio.positions if p.instrument == instrument)
    return snapshot.figures.equity - sold * position.mark_price * (policy.slippage + policy.fee_rate)


@settings(max_examples=300, deadline=None)
@given(breached_snapshots(), policies)
def test_a_plan_never_flips_a_side_and_sells_one_position(
    snapshot: MarginSnapshot, policy: LiquidationPolicy
) -> None:
    plan = liquidation.plan_stage(snapshot, policy)
    assert len(plan.orders) == 1
    order = plan.orders[0]
    held = next(p for p in snapshot.portfolio.positions if p.instrument == order.instrument)
    assert 0 < order.quantity <= abs(held.quantity)
    assert order.side == ("sell" if held.quantity > 0 else "buy")
    # The position chosen frees the most maintenance margin.
    assert margin.maintenance_margin(held) == max(
        margin.maintenance_margin(p) for p in snapshot.portfolio.positions
    )


@settings(max_examples=300, deadline=None)
@given(breached_snapshots(), policies)
def test_a_plan_never_sells_more_than_the_target_needs(
    snapshot: MarginSnapshot, policy: LiquidationPolicy
) -> None:
    plan = liquidation.plan_stage(snapshot, policy)
    order = plan.orders[0]
    held = next(p for p in snapshot.portfolio.positions if p.instrument == order.instrument)
    if snapshot.figures.equity <= 0 or order.quantity == abs(held.quantity):
        return  # closing out entirely: no smaller sale exists to compare with
    smaller = order.quantity - policy.quantity_step
    if smaller <= 0:
        return
    sign = 1 if held.quantity > 0 else -1
    reduced = held.model_copy(update={"quantity": sign * (abs(held.quantity) - smaller)})
    others = [p for p in snapshot.portfolio.positions if p.instrument != held.instrument]
    target = liquidation.target_equity(
        snapshot.portfolio.model_copy(update={"positions": [*others, reduced]}), policy
    )
    # One step less would not have reached the target (or the cap bound the sale).
    cap = (abs(held.quantity) * policy.fraction_per_stage / policy.quantity_step).to_integral_value(
        rounding="ROUND_CEILING"
    ) * policy.quantity_step
    assert after_sale(snapshot, held.instrument, smaller, policy) < target or order.quantity >= min(
        cap, abs(held.quantity)
    )


@settings(max_examples=200, deadline=None)
@given(positions(), money("0", "1000000"))
def test_equity_is_collateral_plus_pnl_and_margin_grows_with_size(
    held: list[Position], cash: Decimal
) -> None:
    portfolio = Portfolio(
        collateral=[Collateral(asset="USDT", amount=cash, price=D(1), haircut=D(0))], positions=held
    )
    figures = margin.assess(portfolio)
    upnl = sum((margin.unrealised_pnl(p) for p in held), D(0))
    assert abs(figures.equity - (cash + upnl)) < D("1e-9")
    assert figures.shortfall == max(D(0), figures.maintenance_margin - figures.equity)
    for p in held:
        bigger = p.model_copy(update={"quantity": p.quantity * 2})
        assert margin.maintenance_margin(bigger) >= margin.maintenance_margin(p)
        assert margin.initial_margin(p) >= margin.maintenance_margin(p)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ratio=money("0.05", "0.95", 2), notional=money("1000", "400000", 0), policy=policies)
async def test_equity_after_a_stage_matches_the_ledger_and_fees_never_exceed_what_is_left(
    venue: asyncpg.Pool, ratio: Decimal, notional: Decimal, policy: LiquidationPolicy
) -> None:
    ledger = LedgerActivities(venue)
    account = f"prop-{uuid.uuid4().hex[:10]}"  # fresh per run: hypothesis replays examples
    price, tiers = LISTINGS["BTCUSDT"]
    quantity = (notional / price).quantize(D("0.001"))
    position = Position(
        instrument="BTCUSDT", quantity=quantity, entry_price=price, mark_price=price * D("0.95"), tiers=tiers
    )
    collateral = (ratio * margin.maintenance_margin(position) - margin.unrealised_pnl(position)).quantize(
        D("0.01")
    )
    await onboard(venue, Trader(account, collateral, {"BTCUSDT": (quantity, price)}))
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": price * D("0.95")})
    await ledger.open_case(
        CaseOpening(case_id=f"{account}/c", account_id=account, call_id="c", opened_at=datetime.now(UTC))
    )
    before = await ledger.load_margin_snapshot(account)
    plan = liquidation.plan_stage(before, policy)
    result = await ledger.execute_liquidation_stage(StageRequest(case_id=f"{account}/c", stage=1, plan=plan))
    ledger_view = await ledger.load_margin_snapshot(account)
    assert result.snapshot_after.figures == ledger_view.figures
    fill = result.fills[0]
    # Equity moves by the slippage cost (from mark) and the fee, nothing else.
    expected = (
        before.figures.equity - fill.quantity * (fill.mark_price - fill.fill_price).copy_abs() - result.fee
    )
    assert abs(ledger_view.figures.equity - expected) <= D("0.000002")
    assert result.fee >= 0
    assert result.fee <= max(
        D(0), before.figures.equity - fill.quantity * (fill.mark_price - fill.fill_price).copy_abs()
    )
