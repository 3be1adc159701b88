"""The port's vocabulary: an order, the venue's report of it, and the one way to name it.

An order's client id is derived from what it is (case, stage, instrument and
the attempt after a rejection), never from when it was sent: a retry after a
crash asks the gateway for the same order and gets that order's result back,
never a second order. The gateway answers an id it has seen with that order's
result; that is the whole idempotency contract between us.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from enum import StrEnum
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from workflows import contract

# Failure types the case workflow matches on (the contract holds the same names).
ORDER_REJECTED = contract.ORDER_REJECTED
VENUE_UNAVAILABLE = contract.VENUE_UNAVAILABLE
VENUE_REPORT_INVALID = contract.VENUE_REPORT_INVALID

# Gateways bound client ids (36 characters is common); ours is 35 whatever the case id's length.
CLIENT_ORDER_ID_PREFIX = "mc-"


def client_order_id(case_id: str, stage: int, instrument: str, attempt: int = 0) -> str:
    """``mc-`` and 32 hex digits of SHA-256 over the order's identity: deterministic and bounded.

    ``attempt`` moves on only after the gateway rejected the previous one (a
    final answer, so a new id cannot double an order); a crash or an outage
    resends the same attempt.
    """
    identity = "\x1f".join((case_id, str(stage), instrument, str(attempt)))
    return CLIENT_ORDER_ID_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:32]


class OrderStatus(StrEnum):
    FILLED = "filled"
    PARTIALLY_FILLED = "partially_filled"  # IOC: the rest is cancelled, final
    CANCELLED = "cancelled"  # IOC with nothing at the limit or better: final, nothing filled
    REJECTED = "rejected"  # refused before it reached the book: final, nothing filled


class VenueOrder(BaseModel):
    """A reduce-only immediate-or-cancel limit order, as the gateway receives it."""

    model_config = ConfigDict(frozen=True)

    client_order_id: str = Field(min_length=1, max_length=64)
    instrument: str
    side: Literal["sell", "buy"]
    quantity: Decimal = Field(gt=0)
    limit_price: Decimal = Field(gt=0)
    reduce_only: Literal[True] = True
    time_in_force: Literal["IOC"] = "IOC"


class OrderReport(BaseModel):
    """What became of an order: every status the gateway answers with is final (IOC)."""

    model_config = ConfigDict(frozen=True)

    client_order_id: str
    status: OrderStatus
    filled_quantity: Decimal = Field(ge=0)
    average_price: Decimal | None = Field(default=None, gt=0)
    reason: str | None = None


class VenueUnavailable(Exception):
    """The gateway did not answer (down, timing out, 5xx): the order may or may not exist there."""


class Venue(Protocol):
    """Where liquidation orders go; ``place`` is idempotent by ``client_order_id``."""

    async def place(self, order: VenueOrder) -> OrderReport: ...


def report_problem(order: VenueOrder, report: OrderReport) -> str | None:
    """What makes ``report`` unbookable for ``order``, or None: checked before anything is booked.

    A report the ledger cannot trust is never booked in part: a fill above the
    order, a fill without a price, a price beyond the order's limit (the limit
    protects the trader), or fills on an answer that says nothing was filled.
    """
    filled, price = report.filled_quantity, report.average_price
    if filled > order.quantity:
        return f"{filled} filled of {order.quantity} ordered"
    if report.status in (OrderStatus.REJECTED, OrderStatus.CANCELLED) and filled != 0:
        return f"status {report.status.value} with {filled} filled"
    if report.status == OrderStatus.FILLED and filled != order.quantity:
        return f"status filled with {filled} of {order.quantity}"
    if (filled > 0) != (price is not None):
        return f"{filled} filled at average price {price}"
    if price is not None:
        beyond = price < order.limit_price if order.side == "sell" else price > order.limit_price
        if beyond:
            return f"average price {price} beyond the {order.side} limit {order.limit_price}"
    return None
