"""The exchange side of the dev stack against a real API and venue simulator: the sample load and its market.

Also ``margin-call feed marks --as-of``, the way the README crashes a price by hand.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from activities.ledger.audit import check_invariants
from tests.helpers import TEST_POLICIES, free_port, margin_call
from worker.api import create_app
from worker.cli._services import sample_token
from worker.config import load_settings
from worker.exchange.api import ApiClient
from worker.exchange.market import Market, VenueAdmin, shape
from worker.exchange.sample import SAMPLE_ACCOUNTS, SAMPLE_BOOKS, SAMPLE_INSURANCE_FUND, SAMPLE_MARKS, load
from worker.serving import serving
from worker.stack.venue import VenueSimulator
from workflows.client import MarginCallClient

TOKEN = "exchange-token-0123456789"


async def _market_on(
    pool: asyncpg.Pool, republish_after: timedelta
) -> AsyncIterator[tuple[Market, VenueSimulator]]:
    # The exchange's routes never ask Temporal: a client that connects only when used is enough.
    cases = MarginCallClient(await Client.connect("127.0.0.1:1", lazy=True))
    simulator = VenueSimulator()
    api_port, venue_port = free_port(), free_port()
    app = create_app(cases, pool, {TOKEN: frozenset({"admin", "feed:write"})}, TEST_POLICIES)
    async with (
        serving(app, api_port),
        serving(simulator.app(), venue_port),
        ApiClient.connect(f"http://127.0.0.1:{api_port}", TOKEN) as api,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{venue_port}") as venue_http,
    ):
        yield Market(api, VenueAdmin(venue_http), SAMPLE_BOOKS, republish_after), simulator


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_market(pool: asyncpg.Pool) -> AsyncIterator[tuple[Market, VenueSimulator]]:
    """The market over an empty ledger; the ledger must balance afterwards."""
    async for market in _market_on(pool, timedelta(seconds=15)):
        yield market
    async with pool.acquire() as conn:
        report = await check_invariants(conn)
    assert report.holds, report


async def test_the_sample_loads_through_the_feeds_once(
    pool: asyncpg.Pool, fresh_market: tuple[Market, VenueSimulator]
) -> None:
    market, simulator = fresh_market
    assert await load(market, SAMPLE_ACCOUNTS, SAMPLE_MARKS, SAMPLE_INSURANCE_FUND) is True
    for account in SAMPLE_ACCOUNTS:
        held = {
            r["instrument"]: (r["quantity"], r["entry_price"])
            for r in await pool.fetch(
                "SELECT instrument, quantity, entry_price FROM positions WHERE account_id = $1",
                account.account_id,
            )
        }
        assert held == {i: (q, e) for i, q, e in account.positions}, account
        collateral = await pool.fetchval(
            "SELECT balance FROM ledger_accounts WHERE ledger_account = $1",
            f"collateral:{account.account_id}:USDT",
        )
        assert collateral == account.collateral, account
    marks = {
        r["instrument"]: r["price"] for r in await pool.fetch("SELECT instrument, price FROM mark_prices")
    }
    assert marks == SAMPLE_MARKS
    fund = await pool.fetchval(
        "SELECT balance FROM ledger_accounts WHERE ledger_account = 'insurance_fund:USDT'"
    )
    assert fund == SAMPLE_INSURANCE_FUND
    best_bid = max(price for price, _ in simulator.books["BTCUSDT"].bids)
    assert SAMPLE_MARKS["BTCUSDT"] * Decimal("0.999") < best_bid < SAMPLE_MARKS["BTCUSDT"]

    # A second load (a second `up` on the same data) books nothing and leaves moved marks alone.
    transfers = await pool.fetchval("SELECT count(*) FROM transfers")
    crash = {"instrument": "BTCUSDT", "price": "46000", "as_of": datetime.now(UTC).isoformat()}
    assert (await market.api.marks([crash])).applied == 1
    assert await load(market, SAMPLE_ACCOUNTS, SAMPLE_MARKS, SAMPLE_INSURANCE_FUND) is False
    assert await pool.fetchval("SELECT count(*) FROM transfers") == transfers
    assert await pool.fetchval("SELECT price FROM mark_prices WHERE instrument = 'BTCUSDT'") == Decimal(46000)
    assert max(price for price, _ in simulator.books["BTCUSDT"].bids) < Decimal(
        46000
    )  # quoted around the crash


async def test_a_tick_keeps_marks_fresh_and_a_newer_mark_wins(venue: asyncpg.Pool) -> None:
    async for market, simulator in _market_on(venue, timedelta(0)):
        market.books = {"BTCUSDT": shape(("0.001", "1"))}
        before = await venue.fetchval("SELECT as_of FROM mark_prices WHERE instrument = 'BTCUSDT'")
        await market.tick()
        price, as_of = await venue.fetchrow(
            "SELECT price, as_of FROM mark_prices WHERE instrument = 'BTCUSDT'"
        )
        assert as_of > before and price == Decimal(50000)  # re-published at the same price
        assert simulator.books["BTCUSDT"].bids == [(Decimal("49950.00"), Decimal(1))]
        assert simulator.books["BTCUSDT"].asks == [(Decimal("50050.00"), Decimal(1))]

        # A mark fed by someone else after the tick's read is newer than the tick's re-publication.
        later = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
        assert (
            await market.api.marks([{"instrument": "BTCUSDT", "price": "45000", "as_of": later}])
        ).applied == 1
        await market.tick()
        assert await venue.fetchval("SELECT price FROM mark_prices WHERE instrument = 'BTCUSDT'") == Decimal(
            45000
        )
        assert simulator.books["BTCUSDT"].bids == [(Decimal("44955.00"), Decimal(1))]


async def test_feed_marks_as_of_now(venue: asyncpg.Pool, ledger_url: str, tmp_path: Path) -> None:
    env = {"MARGIN_CALL_DATABASE_URL": ledger_url}
    crash = tmp_path / "crash.json"
    crash.write_text(json.dumps({"instrument": "BTCUSDT", "price": "46000"}))
    code, _, err = await margin_call(env, "feed", "marks", str(crash))
    assert code == 2 and err.strip() == "error: record 0 (BTCUSDT): as_of: missing required field", err
    sent = datetime.now(UTC)
    code, out, err = await margin_call(env, "feed", "marks", str(crash), "--as-of", "now")
    assert code == 0 and out.startswith("applied 1"), err
    price, as_of = await venue.fetchrow("SELECT price, as_of FROM mark_prices WHERE instrument = 'BTCUSDT'")
    assert price == Decimal(46000) and sent < as_of < datetime.now(UTC)
    code, _, err = await margin_call(env, "feed", "marks", str(crash), "--as-of", "2020-01-01T00:00:00Z")
    assert code == 0  # an older mark: reported ignored, never applied
    assert await venue.fetchval("SELECT price FROM mark_prices WHERE instrument = 'BTCUSDT'") == Decimal(
        46000
    )
    code, _, err = await margin_call(env, "feed", "trades", str(crash), "--as-of", "now")
    assert code == 2 and err.strip() == "error: --as-of: only marks carry a time", err
    code, _, err = await margin_call(env, "feed", "marks", str(crash), "--as-of", "2020-01-01")
    assert code == 2 and "--as-of" in err and "no time zone" in err, err


def test_up_loads_the_sample_with_a_token_that_may() -> None:
    """``up --sample-exchange`` loads with the development token, or a configured one with both scopes."""
    assert sample_token(load_settings({})) == ""  # none configured: up makes one with every scope
    tokens = "reader-token-0123456789=cases:read;loader-token-0123456789=admin,feed:write,cases:read"
    assert sample_token(load_settings({"MARGIN_CALL_API_TOKENS": tokens})) == "loader-token-0123456789"
    with pytest.raises(
        ValueError, match=r"^MARGIN_CALL_API_TOKENS: --sample-exchange needs a token with the admin"
    ):
        sample_token(load_settings({"MARGIN_CALL_API_TOKENS": "feed-token-0123456789=feed:write"}))
