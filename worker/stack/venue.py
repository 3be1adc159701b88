"""A venue simulator: an exchange's order gateway on loopback, for the tests, the demo and the bench.

A test double that lives with the dev stack, never in the product's path: the
worker's ``http`` venue (``activities.venue.HttpVenue``) talks to it exactly as
it would to an exchange's gateway. It keeps a book per instrument (price
levels on each side), matches each reduce-only IOC limit order against it
(partial fills, nothing resting), and remembers every order by client order id:
an id it has seen is answered with that order's result, never matched again.

Tests and the demo drive it through admin routes (or the object itself, in
process): set a book, reject the next orders, add latency, take the gateway
down (503) and bring it back.

``before_match``, when set, is awaited with the instrument before an order is
matched: the dev stack's market maker (``worker.exchange.market``) requotes
there a book whose mark has moved, as a real one would have before any order
arrived; a book left at the old price would buy a crashed position at the
price before the crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from activities.venue import OrderReport, OrderStatus, VenueOrder
from worker.serving import one_error_shape, problem

Level = tuple[Decimal, Decimal]  # (price, quantity)


class BookLevels(BaseModel):
    """One instrument's book: bids best (highest) first, asks best (lowest) first after sorting."""

    bids: list[tuple[Decimal, Decimal]] = []
    asks: list[tuple[Decimal, Decimal]] = []


class Misbehaviour(BaseModel):
    """What the gateway does wrong, on command."""

    down: bool = False
    latency_seconds: float = Field(default=0.0, ge=0, le=60)
    reject_next: int = Field(default=0, ge=0)
    reject_reason: str = "rejected by the simulator"
    # Answer every order with this HTTP status (a problem body) instead of a report: an expired
    # key (401), a duplicate id refused (409), ...
    answer_status: int | None = Field(default=None, ge=300, le=599)
    # Report fills at a price this much worse than the book's (beyond the order's limit): a venue
    # whose report the ledger must refuse to book.
    misreport_price_by: Decimal = Field(default=Decimal(0), ge=0)


@dataclass
class VenueSimulator:
    books: dict[str, BookLevels] = field(default_factory=dict)
    behaviour: Misbehaviour = field(default_factory=Misbehaviour)
    orders: dict[str, OrderReport] = field(default_factory=dict)
    received: list[VenueOrder] = field(default_factory=list)  # every request that reached matching
    refused_while_down: int = 0
    before_match: Callable[[str], Awaitable[None]] | None = None

    def set_book(self, instrument: str, bids: list[Level], asks: list[Level] | None = None) -> None:
        self.books[instrument] = BookLevels(bids=list(bids), asks=list(asks or []))

    def place(self, order: VenueOrder) -> OrderReport:
        """Match ``order`` (once per client order id) against the book; IOC, nothing rests."""
        self.received.append(order)
        seen = self.orders.get(order.client_order_id)
        if seen is not None:
            return seen
        if self.behaviour.reject_next > 0:
            self.behaviour.reject_next -= 1
            report = OrderReport(
                client_order_id=order.client_order_id,
                status=OrderStatus.REJECTED,
                filled_quantity=Decimal(0),
                reason=self.behaviour.reject_reason,
            )
        else:
            report = self._match(order)
        self.orders[order.client_order_id] = report
        return report

    def _match(self, order: VenueOrder) -> OrderReport:
        book = self.books.setdefault(order.instrument, BookLevels())
        if order.side == "sell":
            levels = sorted(book.bids, key=lambda lv: -lv[0])
        else:
            levels = sorted(book.asks, key=lambda lv: lv[0])

        def acceptable(price: Decimal) -> bool:
            return price >= order.limit_price if order.side == "sell" else price <= order.limit_price

        left, filled, cost = order.quantity, Decimal(0), Decimal(0)
        remaining_levels: list[Level] = []
        for price, quantity in levels:
            if left > 0 and acceptable(price):
                take = min(left, quantity)
                left -= take
                filled += take
                cost += take * price
                if quantity > take:
                    remaining_levels.append((price, quantity - take))
            else:
                remaining_levels.append((price, quantity))
        if order.side == "sell":
            book.bids = remaining_levels
        else:
            book.asks = remaining_levels
        if filled == 0:
            status = OrderStatus.CANCELLED
        elif left == 0:
            status = OrderStatus.FILLED
        else:
            status = OrderStatus.PARTIALLY_FILLED
        worse = self.behaviour.misreport_price_by * (-1 if order.side == "sell" else 1)
        return OrderReport(
            client_order_id=order.client_order_id,
            status=status,
            filled_quantity=filled,
            average_price=cost / filled + worse if filled else None,
            reason=None if left == 0 else f"IOC: {left} not filled at {order.limit_price} or better",
        )

    def orders_for(self, client_order_id: str) -> int:
        """How many requests for this client order id reached matching."""
        return sum(1 for o in self.received if o.client_order_id == client_order_id)

    def app(self) -> FastAPI:
        app = FastAPI(title="venue simulator (order gateway)")
        one_error_shape(app)

        @app.post("/orders", response_model=None)
        async def place(order: VenueOrder) -> Any:
            if self.behaviour.down:
                self.refused_while_down += 1
                return problem(503, "gateway: down (simulated outage)")
            if self.behaviour.answer_status is not None:
                return problem(self.behaviour.answer_status, "gateway: refused (simulated)")
            if self.behaviour.latency_seconds:
                await asyncio.sleep(self.behaviour.latency_seconds)
            if self.before_match is not None:
                await self.before_match(order.instrument)
            return self.place(order)

        @app.get("/orders/{client_order_id}", response_model=None)
        async def order(client_order_id: str) -> Any:
            report = self.orders.get(client_order_id)
            return (
                report if report is not None else problem(404, f"client_order_id: no order {client_order_id}")
            )

        @app.put("/admin/books/{instrument}")
        async def book(instrument: str, levels: BookLevels) -> BookLevels:
            self.books[instrument] = levels
            return levels

        @app.get("/admin/books/{instrument}")
        async def read_book(instrument: str) -> BookLevels:
            return self.books.get(instrument, BookLevels())

        @app.put("/admin/behaviour")
        async def misbehave(behaviour: Misbehaviour) -> Misbehaviour:
            self.behaviour = behaviour
            return behaviour

        @app.get("/admin/orders")
        async def listing() -> list[OrderReport]:
            return list(self.orders.values())

        return app
