"""Which position to sell next, and how much: the partial-liquidation planner.

Pure and deterministic, so that the case workflow plans each stage in its own
code (no activity, no history event) and the property tests can check its
promises: never flip a side, never sell more than the target needs, one
position per stage.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Literal

from activities import risk
from workflows.models import (
    LiquidationOrder,
    LiquidationPlan,
    LiquidationPolicy,
    MarginSnapshot,
    Portfolio,
    Position,
)

ZERO = Decimal(0)


def target_equity(portfolio: Portfolio, policy: LiquidationPolicy) -> Decimal:
    """Equity the account must reach for liquidation to stop."""
    if policy.target == "initial_margin":
        return sum((risk.initial_margin(p) for p in portfolio.positions), ZERO)
    mm = sum((risk.maintenance_margin(p) for p in portfolio.positions), ZERO)
    return mm * policy.maintenance_buffer


def _equity_after(
    portfolio: Portfolio, equity: Decimal, position: Position, sold: Decimal, policy: LiquidationPolicy
) -> tuple[Decimal, Decimal]:
    """(equity, target) after reducing ``position`` by ``sold`` at mark less slippage and fee."""
    cost = sold * position.mark_price * (policy.slippage + policy.fee_rate)
    remaining = abs(position.quantity) - sold
    sign = 1 if position.quantity > 0 else -1
    reduced = position.model_copy(update={"quantity": sign * remaining})
    others = [p for p in portfolio.positions if p.instrument != position.instrument]
    after = portfolio.model_copy(update={"positions": [*others, reduced]})
    return equity - cost, target_equity(after, policy)


def _round_up(quantity: Decimal, step: Decimal) -> Decimal:
    return (quantity / step).to_integral_value(rounding=ROUND_CEILING) * step


def plan_stage(snapshot: MarginSnapshot, policy: LiquidationPolicy) -> LiquidationPlan:
    """One stage: the position freeing most maintenance margin, by the smallest sufficient amount."""
    with localcontext() as ctx:
        ctx.prec = risk.PRECISION
        portfolio = snapshot.portfolio
        equity = risk.collateral_value(portfolio) + sum(
            (risk.unrealised_pnl(p) for p in portfolio.positions), ZERO
        )
        target = target_equity(portfolio, policy)
        open_positions = [p for p in portfolio.positions if p.quantity != 0]

        def plan(orders: list[LiquidationOrder], reason: str) -> LiquidationPlan:
            return LiquidationPlan(
                account_id=snapshot.account_id,
                orders=orders,
                fee_rate=policy.fee_rate,
                slippage=policy.slippage,
                target_equity=target,
                reason=reason,
            )

        if not open_positions:
            return plan([], "no open positions")
        if equity >= target:
            return plan([], "equity already at target")
        chosen = max(open_positions, key=lambda p: (risk.maintenance_margin(p), p.instrument))
        size = abs(chosen.quantity)
        side: Literal["sell", "buy"] = "sell" if chosen.quantity > 0 else "buy"
        if equity <= 0:
            # Nothing is left to protect: close the largest risk at once.
            return plan(
                [LiquidationOrder(instrument=chosen.instrument, quantity=size, side=side)],
                "equity at or below zero: closing the position",
            )
        cap = min(size, _round_up(size * policy.fraction_per_stage, policy.quantity_step))
        reached_eq, reached_target = _equity_after(portfolio, equity, chosen, cap, policy)
        quantity = cap
        if reached_eq >= reached_target:
            # Bisect for the least quantity that reaches the target.
            low, high = ZERO, cap
            while high - low > policy.quantity_step:
                mid = _round_up((low + high) / 2, policy.quantity_step)
                if mid >= high:
                    break
                eq_mid, target_mid = _equity_after(portfolio, equity, chosen, mid, policy)
                if eq_mid >= target_mid:
                    high = mid
                else:
                    low = mid
            quantity = high
            reason = "reaches the target"
        else:
            reason = f"{policy.fraction_per_stage * 100:g} % of the position"
        if size - quantity < policy.quantity_step:
            quantity = size
        return plan(
            [LiquidationOrder(instrument=chosen.instrument, quantity=quantity, side=side)],
            reason,
        )
