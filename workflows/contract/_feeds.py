"""What an exchange's systems tell the ledger (the feeds), and what the ledger answers.

Callers of the feeds (the HTTP API, ``margin-call feed``, an exchange service
using ``activities.ledger.LedgerFeeds`` in process) build these records; the
ledger validates each record on its own, so one bad record in a batch is named
in the answer and never stops, or half-applies, the rest. Every record is a
strict message: an unknown field is refused by name. Amounts and prices are
decimal strings (a JSON number cannot carry money exactly).
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints, field_validator, model_validator

from workflows.domain.message import FreeText, Identifier, Message
from workflows.domain.money import DecimalStr, Figure
from workflows.domain.policies import PolicyName
from workflows.domain.portfolio import Tier

Asset = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{2,12}$")]
# A batch is one request's worth of records; bigger feeds are sent in several.
MAX_BATCH = 10_000


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be positive")
    return value


class Mark(Message):
    """An instrument's mark price as of a moment; marks only move forward in ``as_of``."""

    instrument: Identifier
    price: DecimalStr
    as_of: AwareDatetime
    _price = field_validator("price")(_positive)


class AssetPrice(Message):
    """A collateral asset's price (in the unit of account) as of a moment; also only forward."""

    asset: Asset
    price: DecimalStr
    as_of: AwareDatetime
    _price = field_validator("price")(_positive)


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class Trade(Message):
    """A fill from the matching engine for one account; idempotent by ``trade_id``.

    ``fee`` is what the account paid, in the instrument's quote asset (a maker
    rebate is not a trade's fee: send it as a movement).
    """

    trade_id: Identifier
    account_id: Identifier
    instrument: Identifier
    side: Side
    quantity: DecimalStr
    price: DecimalStr
    fee: DecimalStr = Decimal(0)
    _quantity = field_validator("quantity", "price")(_positive)

    @field_validator("fee")
    @classmethod
    def _fee(cls, value: Decimal) -> Decimal:
        if value < 0:
            raise ValueError("must not be negative")
        return value


class MovementKind(StrEnum):
    FUNDING = "funding"
    """A funding payment: positive to the trader, negative from the trader (the market is the other side)."""
    COLLATERAL_IN = "collateral_in"
    """Collateral arriving from outside in any listed asset (positive only; money out is a withdrawal)."""


class Movement(Message):
    """A transfer to or from a trader's collateral that is not a trade; idempotent by ``movement_id``."""

    movement_id: Identifier
    account_id: Identifier
    kind: MovementKind
    asset: Asset
    amount: DecimalStr

    @model_validator(mode="after")
    def _signed(self) -> Movement:
        if self.amount == 0:
            raise ValueError("amount: must not be zero")
        if self.kind is MovementKind.COLLATERAL_IN and self.amount < 0:
            raise ValueError("amount: collateral_in must be positive (money out is a withdrawal)")
        return self


class Withdrawal(Message):
    """Money leaving a trader's collateral; refused during an open case or below initial margin."""

    withdrawal_id: Identifier
    account_id: Identifier
    asset: Asset
    amount: DecimalStr
    _amount = field_validator("amount")(_positive)


class AssetListing(Message):
    kind: Literal["asset"]
    asset: Asset
    decimals: int = Field(ge=0, le=18, strict=True)
    price: DecimalStr
    haircut: DecimalStr = Decimal(0)
    _price = field_validator("price")(_positive)

    @field_validator("haircut")
    @classmethod
    def _haircut(cls, value: Decimal) -> Decimal:
        if not 0 <= value < 1:
            raise ValueError("must be in [0, 1)")
        return value


class InstrumentListing(Message):
    """An instrument and its tier table (replacing the one before); ``mark_price`` is needed to list it."""

    kind: Literal["instrument"]
    instrument: Identifier
    quote_asset: Asset
    quantity_step: DecimalStr = Decimal("0.00000001")
    tiers: list[Tier] = Field(min_length=1, max_length=100)
    mark_price: DecimalStr | None = None
    _step = field_validator("quantity_step")(_positive)

    @field_validator("tiers")
    @classmethod
    def _ascending(cls, tiers: list[Tier]) -> list[Tier]:
        if tiers[0].notional_floor != 0:
            raise ValueError("the first tier's notional_floor must be 0")
        floors = [t.notional_floor for t in tiers]
        if any(b <= a for a, b in itertools.pairwise(floors)):
            raise ValueError("notional_floor must be strictly ascending")
        return tiers

    @field_validator("mark_price")
    @classmethod
    def _mark(cls, value: Decimal | None) -> Decimal | None:
        return None if value is None else _positive(value)


class AccountRecord(Message):
    """A trader's account: its settlement currency (fixed once opened) and the operator's policy name."""

    kind: Literal["account"]
    account_id: Identifier
    settlement_currency: Asset
    policy_name: PolicyName | None = None


ReferenceRecord = Annotated[AssetListing | InstrumentListing | AccountRecord, Field(discriminator="kind")]


class PositionView(Message):
    instrument: Identifier
    quantity: DecimalStr
    entry_price: DecimalStr | None = None


class CollateralView(Message):
    asset: Asset
    amount: DecimalStr


class AccountView(Message):
    """The exchange's own view of one account, to reconcile against the ledger's."""

    account_id: Identifier
    positions: list[PositionView] = Field(default_factory=list, max_length=1000)
    collateral: list[CollateralView] = Field(default_factory=list, max_length=1000)


class Difference(BaseModel):
    """One figure on which the ledger and the exchange disagree (``None``: that side has no such item)."""

    field: str
    ledger: Figure | None
    exchange: Figure | None


class Reconciliation(BaseModel):
    account_id: str
    differences: list[Difference]

    @property
    def agrees(self) -> bool:
        return not self.differences


class RecordStatus(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    """Seen before with the same content: nothing done again."""
    IGNORED = "ignored"
    """Stale (a mark not newer than the one applied): never applied."""
    REFUSED = "refused"
    """Invalid, unknown, a conflict or a guard said no: nothing of it written; ``detail`` names the field."""


class RecordResult(BaseModel):
    index: int
    key: str | None = None
    status: RecordStatus
    detail: str | None = None


class FeedAnswer(BaseModel):
    """What happened to each record of a batch, in the order sent, and how many of each."""

    applied: int = 0
    duplicate: int = 0
    ignored: int = 0
    refused: int = 0
    records: list[RecordResult] = Field(default_factory=list)

    @classmethod
    def of(cls, results: list[RecordResult]) -> FeedAnswer:
        ordered = sorted(results, key=lambda r: r.index)
        counts = {status: 0 for status in RecordStatus}
        for result in ordered:
            counts[result.status] += 1
        return cls(
            applied=counts[RecordStatus.APPLIED],
            duplicate=counts[RecordStatus.DUPLICATE],
            ignored=counts[RecordStatus.IGNORED],
            refused=counts[RecordStatus.REFUSED],
            records=ordered,
        )

    def first_refusal(self) -> RecordResult | None:
        return next((r for r in self.records if r.status is RecordStatus.REFUSED), None)


class Operator(Message):
    """Who changes reference data, for the audit (``reference_changes.changed_by``)."""

    operator: FreeText
