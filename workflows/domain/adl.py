"""The auto-deleveraging ranking: who on the other side of a bankruptcy is deleveraged first.

When the insurance fund cannot cover a bankrupt trader's loss, the exchange
closes positions on the opposite side of the bankrupt account's instruments,
most profitable and most leveraged first. The score is Binance's (its
"ADL ranking", the same as BitMEX's and close to Hyperliquid's
``(mark / entry) x (notional / account value)``)::

    PnL ratio           = unrealised PnL / |quantity x entry price|
    effective leverage  = |quantity x mark price| / account equity
    score               = PnL ratio x effective leverage

for positions in profit on accounts with positive equity (equity as
``margin.assess`` has it: haircut collateral plus every position's unrealised
PnL). Positions in loss are never deleveraged, so they are not ranked. Higher
score first; ties by account id, so a ranking is the same whoever computes it.

Pure arithmetic at the risk math's precision: the ledger ranks with it, and a
statement's reader can check each score from the figures beside it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, localcontext

from workflows.domain import margin

FORMULA = (
    "score = PnL ratio x effective leverage; PnL ratio = unrealised PnL / |quantity x entry price|;"
    " effective leverage = |quantity x mark price| / account equity; profitable positions only, highest first"
)


@dataclass(frozen=True)
class AdlScore:
    unrealised_pnl: Decimal
    pnl_ratio: Decimal
    effective_leverage: Decimal
    score: Decimal


def adl_score(
    quantity: Decimal, entry_price: Decimal, mark_price: Decimal, equity: Decimal
) -> AdlScore | None:
    """The position's score, or None when it is not ranked (not in profit, or no positive equity)."""
    with localcontext() as ctx:
        ctx.prec = margin.PRECISION
        pnl = quantity * (mark_price - entry_price)
        if pnl <= 0 or equity <= 0 or entry_price <= 0:
            return None
        ratio = pnl / (abs(quantity) * entry_price)
        leverage = abs(quantity) * mark_price / equity
        return AdlScore(
            unrealised_pnl=pnl, pnl_ratio=ratio, effective_leverage=leverage, score=ratio * leverage
        )


@dataclass(frozen=True)
class Holder:
    """A position on the opposite side, with its account's equity."""

    account_id: str
    quantity: Decimal
    entry_price: Decimal
    mark_price: Decimal
    equity: Decimal


def rank(holders: Iterable[Holder]) -> list[tuple[Holder, AdlScore]]:
    """The holders that are ranked at all, highest score first (ties by account id)."""
    scored = [(h, s) for h in holders if (s := adl_score(h.quantity, h.entry_price, h.mark_price, h.equity))]
    return sorted(scored, key=lambda pair: (-pair[1].score, pair[0].account_id))
