"""An account as the risk engine sees it: positions, collateral, tiers and the figures over them."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from workflows.domain.message import Identifier, Message
from workflows.domain.money import Figure, currency_decimals


class Tier(Message):
    notional_floor: Figure
    maintenance_rate: Figure
    initial_rate: Figure

    @model_validator(mode="after")
    def _rates_in_range(self) -> Tier:
        if self.notional_floor < 0:
            raise ValueError("notional_floor: must not be negative")
        if not (0 <= self.maintenance_rate < 1):
            raise ValueError("maintenance_rate: must be in [0, 1)")
        if not (self.maintenance_rate <= self.initial_rate <= 1):
            raise ValueError("initial_rate: must be in [maintenance_rate, 1]")
        return self


class Collateral(Message):
    asset: Identifier
    amount: Figure
    price: Figure
    haircut: Figure

    @field_validator("price")
    @classmethod
    def _positive_price(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("haircut")
    @classmethod
    def _haircut_range(cls, value: Decimal) -> Decimal:
        if not (0 <= value < 1):
            raise ValueError("must be in [0, 1)")
        return value


class Position(Message):
    instrument: Identifier
    quantity: Figure
    entry_price: Figure
    mark_price: Figure
    tiers: list[Tier] = Field(min_length=1)
    # When the exchange stood behind the mark, and whether an operator halted
    # the instrument; None and False in snapshots recorded before the ledger
    # reported them (and in portfolios a caller sends to ``margin-call risk``).
    mark_as_of: datetime | None = None
    halted: bool = False

    @field_validator("entry_price", "mark_price")
    @classmethod
    def _positive_price(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("tiers")
    @classmethod
    def _tiers_ascending(cls, tiers: list[Tier]) -> list[Tier]:
        if tiers[0].notional_floor != 0:
            raise ValueError("the first tier's notional_floor must be 0")
        for lower, upper in itertools.pairwise(tiers):
            if upper.notional_floor <= lower.notional_floor:
                raise ValueError("notional_floor: must be strictly ascending")
        return tiers


class Portfolio(Message):
    """Collateral and positions; no size limit here, since the ledger's accounts are what they are.

    Limits on what a caller may send belong to the entry point that reads it
    (``margin-call risk``), not to a model that also carries ledger data.
    """

    collateral: list[Collateral]
    positions: list[Position]


class PositionFigures(Message):
    instrument: str
    notional: Figure
    unrealised_pnl: Figure
    maintenance_margin: Figure
    initial_margin: Figure
    liquidation_price: Figure | None
    bankruptcy_price: Figure | None


class RiskFigures(Message):
    collateral_value: Figure
    equity: Figure
    maintenance_margin: Figure
    initial_margin: Figure
    shortfall: Figure
    margin_ratio: Figure | None
    positions: list[PositionFigures]


class MarginSnapshot(Message):
    """An account as the ledger shows it at current marks, with its figures."""

    account_id: str
    currency: str
    status: str
    portfolio: Portfolio
    figures: RiskFigures
    as_of: datetime
    # The ledger's decimals for the settlement currency (``assets.decimals``);
    # None only in snapshots recorded before the ledger reported it.
    currency_decimals: int | None = Field(default=None, ge=0, le=18)

    @property
    def places(self) -> int:
        """Decimal places of the settlement currency: the ledger's word, else the well-known table."""
        if self.currency_decimals is not None:
            return self.currency_decimals
        return currency_decimals(self.currency)

    @property
    def in_breach(self) -> bool:
        return self.figures.equity < self.figures.maintenance_margin

    def stale_marks(self, max_age: timedelta) -> list[Position]:
        """Open positions of instruments still trading whose mark is older than ``max_age`` at ``as_of``.

        Ages are measured on the ledger's clock (``as_of`` is its now at the
        read), so the answer is the same in a replay. A halted instrument is
        not counted: it is not sold, and its last mark is all there is.
        """
        return [
            p
            for p in self.portfolio.positions
            if p.quantity != 0
            and not p.halted
            and p.mark_as_of is not None
            and self.as_of - p.mark_as_of > max_age
        ]

    @property
    def halted_positions(self) -> list[Position]:
        """Open positions of halted instruments: no stage sells them until they resume."""
        return [p for p in self.portfolio.positions if p.quantity != 0 and p.halted]
