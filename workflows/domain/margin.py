"""Cross-margin risk figures, exactly as ``docs/margin-math.md`` defines them.

Pure functions over the shared models: no I/O, no clock, so the ledger, the
planner, the ``margin-call risk`` command and the tests all get the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, localcontext

from workflows.domain.portfolio import Portfolio, Position, PositionFigures, RiskFigures, Tier

ZERO = Decimal(0)
# Wide enough that 1e15 notionals keep 20 significant decimals after division.
PRECISION = 60
# Figures are exact to far below a cent; this only keeps printed strings short.
DISPLAY_PLACES = 12
DISPLAY = Decimal(1).scaleb(-DISPLAY_PLACES)


def _context() -> Context:
    """The risk math's context: wide exponents, so that no product of accepted figures overflows.

    The default context's exponent limit (1e999999) is reachable by figures the
    models accept; the widest one the decimal module allows is not, for any
    portfolio an entry point lets in.
    """
    return Context(prec=PRECISION, Emax=MAX_EMAX, Emin=MIN_EMIN)


def cumulative_amounts(tiers: Sequence[Tier], rate: str = "maintenance_rate") -> list[Decimal]:
    """The per-tier amount ("cum") derived from the table, never typed in."""
    cums: list[Decimal] = []
    previous_rate = ZERO
    running = ZERO
    for tier in tiers:
        current = getattr(tier, rate)
        running = tier.notional_floor * (current - previous_rate) + running
        cums.append(running)
        previous_rate = current
    return cums


def tier_index(tiers: Sequence[Tier], notional: Decimal) -> int:
    """The last tier whose floor is at or below the notional."""
    index = 0
    for i, tier in enumerate(tiers):
        if tier.notional_floor <= notional:
            index = i
        else:
            break
    return index


def notional(position: Position) -> Decimal:
    return abs(position.quantity) * position.mark_price


def unrealised_pnl(position: Position) -> Decimal:
    return position.quantity * (position.mark_price - position.entry_price)


def margin_at(tiers: Sequence[Tier], value: Decimal, rate: str) -> Decimal:
    """Tiered margin of a position with notional ``value``: ``N * rate_t - cum_t``."""
    t = tier_index(tiers, value)
    rate_t: Decimal = getattr(tiers[t], rate)
    return value * rate_t - cumulative_amounts(tiers, rate)[t]


def maintenance_margin(position: Position) -> Decimal:
    return margin_at(position.tiers, notional(position), "maintenance_rate")


def initial_margin(position: Position) -> Decimal:
    return margin_at(position.tiers, notional(position), "initial_rate")


def collateral_value(portfolio: Portfolio) -> Decimal:
    """Haircut value of the collateral; a negative balance (a debt) takes no haircut."""
    total = ZERO
    for item in portfolio.collateral:
        value = item.amount * item.price
        total += value * (1 - item.haircut) if value > 0 else value
    return total


def liquidation_price(position: Position, equity: Decimal, others_maintenance: Decimal) -> Decimal | None:
    """Mark price at which equity meets maintenance, everything else held fixed."""
    q = abs(position.quantity)
    if q == 0:
        return None
    s = 1 if position.quantity > 0 else -1
    w = equity - unrealised_pnl(position) - others_maintenance
    cums = cumulative_amounts(position.tiers)
    t = tier_index(position.tiers, notional(position))
    seen: set[int] = set()
    price: Decimal | None = None
    # Re-solve in the tier where the answer lands until it is self-consistent.
    while t not in seen:
        seen.add(t)
        denominator = q * position.tiers[t].maintenance_rate - s * q
        if denominator == 0:
            return None
        price = (w + cums[t] - s * q * position.entry_price) / denominator
        if price <= 0:
            return None
        landed = tier_index(position.tiers, q * price)
        if landed == t:
            break
        t = landed
    return price


def bankruptcy_price(position: Position, equity: Decimal) -> Decimal | None:
    """Mark price at which the account's equity is exactly zero."""
    q = abs(position.quantity)
    if q == 0:
        return None
    s = 1 if position.quantity > 0 else -1
    price = position.entry_price - s * (equity - unrealised_pnl(position)) / q
    return price if price > 0 else None


def deposit_to_reach(equity: Decimal, target: Decimal) -> Decimal:
    return max(ZERO, target - equity)


def _display(value: Decimal) -> Decimal:
    """A figure as printed: 12 places where they fit in the precision, else its significant digits.

    ``quantize`` raises when the result needs more digits than the context
    holds (a 1e50 bankruptcy price of a 1e-18 position, to 12 places, needs 63),
    so such a figure is only rounded to ``PRECISION`` significant digits: its
    places below 1e-12 were never significant anyway.
    """
    with localcontext(_context()) as ctx:
        if value.adjusted() + 1 + DISPLAY_PLACES <= ctx.prec:
            rounded = value.quantize(DISPLAY)
        else:
            rounded = ctx.plus(value)
        return rounded.normalize() if rounded != 0 else ZERO


def assess(portfolio: Portfolio) -> RiskFigures:
    """Every figure of an account, as the risk officer reads them."""
    with localcontext(_context()):
        collateral = collateral_value(portfolio)
        upnl = [unrealised_pnl(p) for p in portfolio.positions]
        mms = [maintenance_margin(p) for p in portfolio.positions]
        ims = [initial_margin(p) for p in portfolio.positions]
        equity = collateral + sum(upnl, ZERO)
        mm = sum(mms, ZERO)
        im = sum(ims, ZERO)
        positions = []
        for i, position in enumerate(portfolio.positions):
            lp = liquidation_price(position, equity, mm - mms[i])
            bp = bankruptcy_price(position, equity)
            positions.append(
                PositionFigures(
                    instrument=position.instrument,
                    notional=_display(notional(position)),
                    unrealised_pnl=_display(upnl[i]),
                    maintenance_margin=_display(mms[i]),
                    initial_margin=_display(ims[i]),
                    liquidation_price=None if lp is None else _display(lp),
                    bankruptcy_price=None if bp is None else _display(bp),
                )
            )
        return RiskFigures(
            collateral_value=_display(collateral),
            equity=_display(equity),
            maintenance_margin=_display(mm),
            initial_margin=_display(im),
            shortfall=_display(max(ZERO, mm - equity)),
            margin_ratio=_display(mm / equity) if equity > 0 else None,
            positions=positions,
        )
