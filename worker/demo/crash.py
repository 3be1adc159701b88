"""The demo's exchange at work: open the accounts, crash the market, play the roles, wait for every case to close.

All of it through the HTTP API (``ApiClient``) and the venue simulator's admin
routes; the progress shown while it runs is the API's case listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import httpx

from worker.demo.exchange import (
    ACCOUNTS,
    BOOKS,
    CRASH,
    INSURANCE_FUND,
    OPENING_MARKS,
    OPERATOR,
    PERSONAS,
    REBOUND,
    TICK_SECONDS,
)
from worker.demo.roles import Roles
from worker.exchange.api import ApiClient
from worker.exchange.listings import LISTINGS
from worker.exchange.market import Market, VenueAdmin
from worker.exchange.sample import load

Say = Callable[[str], None]
# How long after the crash the SOL rebound comes: after the cases open, before their deadline.
REBOUND_AFTER = 8.0


async def play(
    api_url: str,
    token: str,
    venue_url: str,
    say: Say,
    timeout: float = 150,
    on_market: Callable[[Market | None], None] = lambda _: None,
) -> bool:
    """The crash from the exchange's side; True when every case it opened has closed within ``timeout``.

    ``on_market`` is told the market once it quotes, and None before it stops:
    the operator's stack lets it requote a book as an order arrives (``Market.follow``).
    """
    async with (
        ApiClient.connect(api_url, token) as api,
        httpx.AsyncClient(base_url=venue_url, timeout=10) as venue_http,
    ):
        market = Market(api, VenueAdmin(venue_http), BOOKS, republish_after=timedelta(seconds=10))
        await load(market, ACCOUNTS, OPENING_MARKS, INSURANCE_FUND, OPERATOR)
        say(
            f"\nThe exchange opened {len(ACCOUNTS)} accounts over {', '.join(LISTINGS)} through the API"
            f" (reference data, collateral movements, opening fills, marks) and paid {INSURANCE_FUND:,} USDT"
            " into the insurance fund; its market quotes the venue simulator's books around the marks."
        )
        on_market(market)
        stop_market = asyncio.Event()
        ticking = asyncio.create_task(market.run(stop_market, TICK_SECONDS))
        started = time.monotonic()
        await market.publish(CRASH)
        say("t=   0s  CRASH through the marks feed: " + ", ".join(f"{k} -> {v:,}" for k, v in CRASH.items()))
        done = asyncio.Event()
        roles = Roles(api, PERSONAS, started, say)
        tasks = [
            asyncio.create_task(roles.play(done)),
            asyncio.create_task(_progress(api, market.venue, started, done, say)),
        ]
        try:
            await asyncio.sleep(REBOUND_AFTER)
            await market.publish(REBOUND)
            say(
                f"t={time.monotonic() - started:4.0f}s  REBOUND through the marks feed: "
                + ", ".join(f"{k} -> {v:,}" for k, v in REBOUND.items())
            )
            finished = await _all_closed(api, {p.name for p in PERSONAS if p.breached}, timeout)
        finally:
            on_market(None)
            done.set()
            stop_market.set()
            await asyncio.gather(*tasks, ticking)
        say(f"t={time.monotonic() - started:4.0f}s  " + ("every case closed" if finished else "TIMED OUT"))
        return finished


async def _progress(api: ApiClient, venue: VenueAdmin, started: float, done: asyncio.Event, say: Say) -> None:
    """Every 3 s: the cases by state (the API's listing) and the liquidation orders the simulator matched."""
    while not done.is_set():
        counts = Counter(c.state for c in await api.cases())
        line = " · ".join(f"{state} {n}" for state, n in sorted(counts.items()) if state) or "none yet"
        orders = await venue.orders()
        if orders:
            filled = sum(1 for o in orders if o.filled_quantity > 0)
            line += f"  |  venue simulator: {len(orders)} orders, {filled} with fills"
        say(f"t={time.monotonic() - started:4.0f}s  cases: {line}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 3)


async def _all_closed(api: ApiClient, accounts: set[str], timeout: float) -> bool:
    """Every account in ``accounts`` has had a case, and no case is running (as the API lists them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cases = await api.cases()
        if accounts <= {c.account_id for c in cases} and not any(c.running for c in cases):
            return True
        await asyncio.sleep(1)
    return False
