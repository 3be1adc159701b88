"""The sample exchange's market: marks kept fresh through the marks feed, books quoted around them.

A case never sells on a mark older than its policy's ``max_mark_age`` (60 s by
default), and a real exchange publishes marks every second; the sample one
re-publishes, through the marks feed, every mark it has not seen move for
``republish_after``. It stamps that mark with the moment it *read* it, so a
mark someone fed by hand after that moment (a crash typed into ``margin-call
feed marks``) is newer and wins.

Liquidation orders go to the venue simulator, whose book stands still unless
told otherwise. A market maker requotes it around the latest marks on every
tick, through the simulator's admin routes (``PUT /admin/books/{instrument}``):
the depth the liquidations took comes back, and after a crash the book follows
the price down. So that no order meets a book quoted around the price before a
crash, the dev stack also calls ``follow`` as each order arrives at the
simulator: a book whose mark has moved is requoted first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import httpx
from pydantic import BaseModel

from worker.exchange.api import ApiClient, ApiError, all_applied
from workflows.contract import FeedAnswer

log = logging.getLogger("margin_call.exchange")

PRICE_TICK = Decimal("0.01")


@dataclass(frozen=True)
class BookShape:
    """One instrument's book as ``(distance from the mark, quantity)`` per level; asks mirror the bids.

    A distance is a fraction of the mark (``0.001`` is 0.1 % below it for a
    bid, above it for an ask).
    """

    levels: tuple[tuple[Decimal, Decimal], ...]

    def around(self, mark: Decimal) -> dict[str, list[tuple[str, str]]]:
        bids = [(_price(mark * (1 - d), ROUND_FLOOR), str(q)) for d, q in self.levels]
        asks = [(_price(mark * (1 + d), ROUND_CEILING), str(q)) for d, q in self.levels]
        return {"bids": bids, "asks": asks}


def _price(value: Decimal, rounding: str) -> str:
    return str(value.quantize(PRICE_TICK, rounding=rounding))


def shape(*levels: tuple[str, str]) -> BookShape:
    return BookShape(tuple((Decimal(d), Decimal(q)) for d, q in levels))


class VenueOrderView(BaseModel):
    """An order as the simulator's ``GET /admin/orders`` lists it."""

    client_order_id: str
    status: str
    filled_quantity: Decimal
    average_price: Decimal | None = None
    reason: str | None = None


class VenueAdmin:
    """The venue simulator's admin routes over HTTP (books, and the orders it has matched)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def set_book(self, instrument: str, book: Mapping[str, Any]) -> None:
        response = await self.http.put(f"/admin/books/{instrument}", json=dict(book))
        response.raise_for_status()

    async def orders(self) -> list[VenueOrderView]:
        response = await self.http.get("/admin/orders")
        response.raise_for_status()
        return [VenueOrderView.model_validate(o) for o in response.json()]


class Market:
    """Publishes marks, keeps them fresh and quotes the simulator's books around them."""

    def __init__(
        self,
        api: ApiClient,
        venue: VenueAdmin,
        books: Mapping[str, BookShape],
        republish_after: timedelta = timedelta(seconds=15),
    ) -> None:
        self.api = api
        self.venue = venue
        self.books = dict(books)
        self.republish_after = republish_after
        self.marks: dict[str, Decimal] = {}
        self._lock = asyncio.Lock()  # a publish and a tick never interleave their read and write

    async def publish(self, marks: Mapping[str, Decimal]) -> FeedAnswer:
        """New prices through the marks feed, as of now, and the books requoted around them."""
        async with self._lock:
            as_of = datetime.now(UTC).isoformat()
            answer = all_applied(
                "/v1/feeds/marks",
                await self.api.marks(
                    [{"instrument": i, "price": str(p), "as_of": as_of} for i, p in marks.items()]
                ),
            )
            await self._quote(marks)
            return answer

    async def tick(self) -> None:
        """Re-publish the marks that have not moved for a while and requote every book around its mark."""
        async with self._lock:
            read_at = datetime.now(UTC)
            current: dict[str, Decimal] = {}
            stale: list[dict[str, str]] = []
            for view in await self.api.instruments():
                if view.mark_price is None or view.halted:
                    continue
                current[view.instrument] = view.mark_price
                if view.mark_as_of is None or read_at - view.mark_as_of >= self.republish_after:
                    price = str(view.mark_price)
                    stale.append(
                        {"instrument": view.instrument, "price": price, "as_of": read_at.isoformat()}
                    )
            if stale:
                await self.api.marks(stale)  # a newer mark fed meanwhile is kept: these are answered ignored
            await self._quote(current)

    async def follow(self, instrument: str) -> None:
        """Requote ``instrument``'s book if its mark moved since it was quoted (an order is about to match).

        Marks fed by others (``margin-call feed marks``) reach the books on the
        next tick; an order for the instrument must not wait for it.
        """
        try:
            async with self._lock:
                for view in await self.api.instruments():
                    moved = view.mark_price is not None and view.mark_price != self.marks.get(view.instrument)
                    if view.instrument == instrument and moved and not view.halted:
                        assert view.mark_price is not None
                        await self._quote({instrument: view.mark_price})
        except (httpx.HTTPError, ApiError) as error:
            log.warning("sample market: could not requote %s: %s", instrument, error)

    async def _quote(self, marks: Mapping[str, Decimal]) -> None:
        for instrument, mark in marks.items():
            self.marks[instrument] = mark
            book = self.books.get(instrument)
            if book is not None:
                await self.venue.set_book(instrument, book.around(mark))

    async def run(self, stop: asyncio.Event, every: float) -> None:
        """Tick every ``every`` seconds until ``stop``; a failed tick is logged and the next one tried."""
        while not stop.is_set():
            try:
                await self.tick()
            except (httpx.HTTPError, ApiError) as error:
                log.warning("sample market: tick failed: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
