"""What a liquidation stage and a bankruptcy settlement cost, and which way each figure rounds.

Pure arithmetic (no SQL): the storage code reads the books, calls these, and
posts what they return. Each rounding is chosen so that it never favours one
side silently, and says which side it protects:

- realised PnL rounds toward minus infinity (floor): rounding never lends the trader money;
- a fee rounds down and is capped at what the trader has left: the fund never
  charges a fee it would then pay for itself;
- collateral sale proceeds round down; the deficit the fund covers rounds down
  (dust below the currency's unit stays on the trader's account, in the books).

Every product is taken at the risk math's precision (``margin.PRECISION``), so
nothing is rounded (half-even, at 28 digits) before the rounding meant here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal, localcontext

from workflows.contract import CollateralSale
from workflows.domain import margin
from workflows.domain.liquidation import Fill, LiquidationOrder
from workflows.domain.portfolio import Collateral

ZERO = Decimal(0)


@contextmanager
def exact_arithmetic() -> Iterator[None]:
    """Decimal arithmetic at the risk math's precision for the block."""
    with localcontext() as ctx:
        ctx.prec = margin.PRECISION
        yield


def quantize(amount: Decimal, places: int, rounding: str) -> Decimal:
    """To the settlement currency's unit, as the ledger's ``assets.decimals`` defines it."""
    with exact_arithmetic():
        return amount.quantize(Decimal(1).scaleb(-places), rounding=rounding)


def fill_order(
    order: LiquidationOrder,
    held: Decimal,
    entry_price: Decimal,
    mark: Decimal,
    slippage: Decimal,
    places: int,
) -> Fill | None:
    """The fill of ``order`` against a position of ``held`` (signed) bought at ``entry_price``.

    Only ever reduces: an order for a side the account no longer holds fills
    nothing (None), and no order sells more than is held. The fill price is the
    mark less slippage against the trader (a long sells lower, a short buys
    back higher); realised PnL is floored to the currency's unit.
    """
    if held == 0 or (order.side == "sell") != (held > 0):
        return None
    sign = 1 if held > 0 else -1
    with exact_arithmetic():
        quantity = min(order.quantity, abs(held))
        fill_price = mark * (1 - sign * slippage)
        pnl = quantize(quantity * sign * (fill_price - entry_price), places, ROUND_FLOOR)
        return Fill(
            instrument=order.instrument,
            side=order.side,
            quantity=quantity,
            mark_price=mark,
            fill_price=fill_price,
            notional=quantity * fill_price,
            realised_pnl=pnl,
        )


def bankruptcy_price(held: Decimal, mark: Decimal, equity: Decimal) -> Decimal | None:
    """The price at which closing all of ``held`` (signed) leaves the account's equity at zero.

    Equity falls by ``|held| x (mark - price)`` for a long sold below the mark
    (a short bought back above it), so the price is ``mark - sign x equity / |held|``.
    None when it bounds nothing: equity at or below zero (the trader has nothing
    left to protect; what the sale loses is the insurance fund's, settled after
    the close-out), or a long's price at or below zero.
    """
    if held == 0 or equity <= 0:
        return None
    sign = 1 if held > 0 else -1
    with exact_arithmetic():
        price = mark - sign * equity / abs(held)
    return price if price > 0 else None


LIMIT_SIGNIFICANT_DIGITS = 6


def limit_price(
    side: str, mark: Decimal, max_slippage: Decimal, bankruptcy: Decimal | None, places: int
) -> Decimal:
    """The limit of a liquidation order: the worst price the trader can be filled at.

    Never worse than the mark by more than ``max_slippage``, nor than the
    bankruptcy price: a sell's limit is the higher of ``mark x (1 - slippage)``
    and the bankruptcy price, a buy's the lower of ``mark x (1 + slippage)`` and
    it. Rounding to ``places`` (or to six significant digits of the mark, if finer) goes toward the trader: a sell's limit rounds up
    (ceiling), a buy's down (floor), so the rounded limit never breaks a bound;
    the cost is a fill that may not happen at a price a hair beyond it.
    """
    # At least six significant digits whatever the settlement currency's places: a cheap
    # instrument's slippage is not rounded away, nor its buy limit down to zero.
    places = max(places, LIMIT_SIGNIFICANT_DIGITS - 1 - mark.adjusted())
    with exact_arithmetic():
        if side == "sell":
            bound = mark * (1 - max_slippage)
            if bankruptcy is not None:
                bound = max(bound, bankruptcy)
            return quantize(bound, places, ROUND_CEILING)
        bound = mark * (1 + max_slippage)
        if bankruptcy is not None:
            bound = min(bound, bankruptcy)
        return quantize(bound, places, ROUND_FLOOR)


def venue_fill(
    order: LiquidationOrder,
    held: Decimal,
    entry_price: Decimal,
    mark: Decimal,
    filled: Decimal,
    average_price: Decimal,
    places: int,
) -> Fill | None:
    """The fill a venue reported (``filled`` at ``average_price``) against a position of ``held``.

    Like ``fill_order`` but at the venue's price and quantity: never more than
    is held (a reduce-only order cannot flip), realised PnL floored.
    """
    if filled <= 0 or held == 0 or (order.side == "sell") != (held > 0):
        return None
    sign = 1 if held > 0 else -1
    with exact_arithmetic():
        quantity = min(filled, abs(held))
        pnl = quantize(quantity * sign * (average_price - entry_price), places, ROUND_FLOOR)
        return Fill(
            instrument=order.instrument,
            side=order.side,
            quantity=quantity,
            mark_price=mark,
            fill_price=average_price,
            notional=quantity * average_price,
            realised_pnl=pnl,
        )


def position_change(fill: Fill) -> Decimal:
    """How the fill moves the signed position: a sale lowers a long, a buy raises a short toward zero."""
    return -fill.quantity if fill.side == "sell" else fill.quantity


def sold_notional(fills: Sequence[Fill]) -> Decimal:
    with exact_arithmetic():
        return sum((f.notional for f in fills), ZERO)


def stage_fee(sold: Decimal, fee_rate: Decimal, equity_after_sale: Decimal, places: int) -> Decimal:
    """What the rate asks of the notional sold, capped at what the trader has left, rounded down."""
    with exact_arithmetic():
        leftover = max(ZERO, equity_after_sale)
        return quantize(min(sold * fee_rate, leftover), places, ROUND_DOWN)


def fill_fee(fee: Decimal, fill: Fill, sold: Decimal) -> Decimal:
    """The part of a stage's fee recorded on one fill, by notional (a record, not a posting)."""
    with exact_arithmetic():
        return fee * fill.notional / sold if sold else ZERO


def sell_collateral(
    items: Sequence[Collateral],
    settlement_price: Decimal,
    balance: Decimal,
    fee_rate: Decimal,
    places: int,
) -> list[CollateralSale]:
    """Sell ``items`` (non-settlement collateral) for the settlement currency, with one fee on the whole.

    ``balance`` is the trader's settlement balance before the sale; asset prices
    are in one unit of account, and the settlement currency has its own price
    (``settlement_price``) in it. Proceeds round down. One fee on the whole
    sale, capped at what is left after it whatever the order of the assets,
    shared out by proceeds (down, the rest on the last) so each sale records its
    part; neither the fund nor the trader gains from rounding.
    """
    with exact_arithmetic():
        proceeds = [quantize(c.amount * c.price / settlement_price, places, ROUND_DOWN) for c in items]
        total = sum(proceeds, ZERO)
        fee = quantize(min(total * fee_rate, max(ZERO, balance + total)), places, ROUND_DOWN)
        shares = [quantize(fee * p / total, places, ROUND_DOWN) if total else ZERO for p in proceeds]
        if shares:
            shares[-1] = fee - sum(shares[:-1], ZERO)
        return [
            CollateralSale(asset=c.asset, amount=c.amount, price=c.price, proceeds=amount, fee=share)
            for c, amount, share in zip(items, proceeds, shares, strict=True)
        ]


@dataclass(frozen=True)
class DeficitCover:
    """Who pays a bankrupt trader's deficit: the insurance fund as far as it goes, the rest is uncovered."""

    deficit: Decimal
    covered_by_fund: Decimal
    uncovered: Decimal


def cover_deficit(balance: Decimal, fund: Decimal, places: int) -> DeficitCover:
    """The deficit of a settlement ``balance``, rounded down so the fund never pays more than the loss."""
    with exact_arithmetic():
        deficit = quantize(max(ZERO, -balance), places, ROUND_DOWN)
        covered = min(deficit, max(ZERO, fund))
        return DeficitCover(deficit=deficit, covered_by_fund=covered, uncovered=deficit - covered)
