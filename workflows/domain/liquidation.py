"""Which position to sell next, and how much: the partial-liquidation planner.

Pure and deterministic, so that the case workflow plans each stage in its own
code (no activity, no history event) and the property tests can check its
promises: never flip a side, never sell more than the target needs, one
position per stage.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Literal

from pydantic import Field, model_validator

from workflows.domain import margin
from workflows.domain.message import Identifier, Message
from workflows.domain.money import DecimalStr, Figure
from workflows.domain.portfolio import MarginSnapshot, Portfolio, Position

ZERO = Decimal(0)


class LiquidationPolicy(Message):
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


class LiquidationOrder(Message):
    instrument: Identifier
    quantity: Figure = Field(description="positive amount to reduce the position by")
    side: Literal["sell", "buy"] = Field(description="sell reduces a long, buy reduces a short")


class LiquidationPlan(Message):
    account_id: Identifier
    orders: list[LiquidationOrder]
    fee_rate: Figure
    slippage: Figure
    target_equity: Figure
    reason: str


class Fill(Message):
    instrument: str
    side: Literal["sell", "buy"]
    quantity: Figure
    mark_price: Figure
    fill_price: Figure
    notional: Figure
    realised_pnl: Figure


def target_equity(portfolio: Portfolio, policy: LiquidationPolicy) -> Decimal:
    """Equity the account must reach for liquidation to stop."""
    if policy.target == "initial_margin":
        return sum((margin.initial_margin(p) for p in portfolio.positions), ZERO)
    mm = sum((margin.maintenance_margin(p) for p in portfolio.positions), ZERO)
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
        ctx.prec = margin.PRECISION
        portfolio = snapshot.portfolio
        equity = margin.collateral_value(portfolio) + sum(
            (margin.unrealised_pnl(p) for p in portfolio.positions), ZERO
        )
        target = target_equity(portfolio, policy)
        # A halted instrument is not sold (the ledger refuses it too); the rest of the account may be.
        open_positions = [p for p in portfolio.positions if p.quantity != 0 and not p.halted]

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
            halted = any(p.quantity != 0 for p in portfolio.positions)
            return plan([], "every open position is halted" if halted else "no open positions")
        if equity >= target:
            return plan([], "equity already at target")
        chosen = max(open_positions, key=lambda p: (margin.maintenance_margin(p), p.instrument))
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
