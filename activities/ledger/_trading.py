"""What a fill does to a position: open, add (average entry), reduce (realised PnL), flip.

Pure arithmetic (no SQL). Positions are signed (``positions.quantity``: long
positive, short negative, as ``workflows.domain.margin`` reads them); a buy
adds to the signed quantity, a sell takes from it. Realised PnL on the closed
part is ``closed * (price - entry)`` for a long and the opposite for a short,
floored to the quote asset's unit like a liquidation's (``_pricing``: rounding
never lends the trader money). The average entry is kept at the risk math's
precision (60 significant digits), half-even: it is a price, not money, and
its rounding is far below any unit that is ever booked.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from activities.ledger._pricing import exact_arithmetic, quantize
from workflows.contract._feeds import Side

ZERO = Decimal(0)


@dataclass(frozen=True)
class PositionChange:
    """The position after a fill, and the PnL the fill realised (already rounded to the unit)."""

    quantity: Decimal
    entry_price: Decimal
    realised_pnl: Decimal


def apply_fill(
    held: Decimal, entry: Decimal, side: Side, quantity: Decimal, price: Decimal, places: int
) -> PositionChange:
    """The position ``held`` (signed) at ``entry`` after filling ``quantity`` at ``price`` on ``side``."""
    signed = quantity if side is Side.BUY else -quantity
    with exact_arithmetic():
        after = held + signed
        if held == 0 or (held > 0) == (signed > 0):
            # Opening or adding: the entry is the quantity-weighted average.
            average = (abs(held) * entry + quantity * price) / (abs(held) + quantity)
            return PositionChange(after, +average, ZERO)
        closed = min(abs(held), quantity)
        direction = 1 if held > 0 else -1
        pnl = quantize(closed * (price - entry) * direction, places, ROUND_FLOOR)
        if after == 0:
            # Closed: the row keeps its last entry (the column is never zero); nothing is open at it.
            return PositionChange(after, entry, pnl)
        if (after > 0) == (held > 0):
            return PositionChange(after, entry, pnl)
        # Flipped: the part beyond the old position is a new one, opened at this price.
        return PositionChange(after, price, pnl)
