"""Reference data and the processes' reads: bad listings are refused by name, reads answer without SQL elsewhere."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

import asyncpg
import pytest

from activities.exceptions import InvalidReferenceData
from activities.ledger import (
    LedgerActivities,
    account_exists,
    case_counts,
    cases_summary,
    closed_case_state,
    reference,
    settlement_currency,
)
from tests.helpers import open_case
from worker.market import Trader, onboard, tiers

D = Decimal


async def count(pool: asyncpg.Pool, sql: str) -> int:
    value: int = await pool.fetchval(sql)
    return value


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: reference.add_asset(c, "usdt", 6, D(1)), "asset"),
        (lambda c: reference.add_asset(c, "XYZ", 19, D(1)), "decimals"),
        (lambda c: reference.add_asset(c, "XYZ", 2, D(0)), "price"),
        (lambda c: reference.add_asset(c, "XYZ", 2, D("NaN")), "price"),
        (lambda c: reference.add_asset(c, "XYZ", 2, 1.5), "price"),  # a float is not money
        (lambda c: reference.add_asset(c, "XYZ", 2, D(1), D(1)), "haircut"),
        (lambda c: reference.add_asset(c, "USDT", 2, D(1)), "decimals"),  # listed with 6
        (lambda c: reference.add_instrument(c, "X", "USDT", [], D(1)), "tiers"),
        (lambda c: reference.add_instrument(c, "X", "USDT", tiers(("10", "0.01", "0.02")), D(1)), "tiers"),
        (
            lambda c: reference.add_instrument(c, "X", "NOPE", tiers(("0", "0.01", "0.02")), D(1)),
            "quote_asset",
        ),
        (
            lambda c: reference.add_instrument(c, "X", "USDT", tiers(("0", "0.01", "0.02")), D(-1)),
            "mark_price",
        ),
        (lambda c: reference.set_mark_price(c, "NOPE", D(1)), "instrument"),
        (lambda c: reference.set_mark_price(c, "BTCUSDT", D("-5")), "price"),
        (lambda c: reference.open_account(c, "", "USDT"), "account_id"),
        (lambda c: reference.open_account(c, "a", "NOPE"), "currency"),
        (lambda c: reference.set_position(c, "nobody", "BTCUSDT", D(1), D(1)), "account_id"),
        (lambda c: reference.fund_insurance(c, "USDT", D(0), "seed:zero"), "amount"),
    ],
)
async def test_bad_reference_data_is_refused_by_name_and_writes_nothing(
    venue: asyncpg.Pool, call: Callable[[asyncpg.Connection], Awaitable[None]], field: str
) -> None:
    before = await count(venue, "SELECT count(*) FROM assets") + await count(
        venue, "SELECT count(*) FROM instruments"
    )
    async with venue.acquire() as conn:
        with pytest.raises(InvalidReferenceData, match=f"^{field}:"):
            await call(conn)
    after = await count(venue, "SELECT count(*) FROM assets") + await count(
        venue, "SELECT count(*) FROM instruments"
    )
    assert after == before
    async with venue.acquire() as conn:
        assert await conn.fetchval("SELECT price FROM mark_prices WHERE instrument = 'BTCUSDT'") == D("50000")


async def test_reference_writes_are_idempotent(venue: asyncpg.Pool) -> None:
    async with venue.acquire() as conn:
        for _ in range(2):
            await reference.add_asset(conn, "EUR", 2, D("1.1"))
            await reference.open_account(conn, "pierre", "EUR")
            await reference.fund_insurance(conn, "EUR", D("500"), "seed:eur")
        with pytest.raises(InvalidReferenceData, match="currency: account pierre settles in EUR"):
            await reference.open_account(conn, "pierre", "USDT")
        assert (
            await conn.fetchval(
                "SELECT balance FROM ledger_accounts WHERE ledger_account = 'insurance_fund:EUR'"
            )
            == 500
        )


async def test_the_processes_reads(venue: asyncpg.Pool) -> None:
    ledger = LedgerActivities(venue)
    await onboard(venue, Trader("ann", D("100"), {"BTCUSDT": (D("1"), D("50000"))}))
    await onboard(venue, Trader("bo", D("100"), {}))
    assert await account_exists(venue, "ann") and not await account_exists(venue, "nobody")
    assert await settlement_currency(venue, "ann") == "USDT"
    assert await settlement_currency(venue, "nobody") is None
    await open_case(ledger, "ann", "ann/c1")
    await open_case(ledger, "bo", "bo/c1")
    assert await closed_case_state(venue, "ann/c1") is None
    await venue.execute(
        "UPDATE margin_call_cases SET state = 'CURED', closed_at = now(), outcome = '{}' WHERE case_id = 'bo/c1'"
    )
    assert await closed_case_state(venue, "bo/c1") == "CURED"
    counts = await case_counts(venue)
    assert (counts.opened, counts.closed, counts.all_closed) == (2, 1, False)
    summary = await cases_summary(venue, "USDT")
    assert [(o.state, o.cases, o.accounts) for o in summary.outcomes] == [
        ("CURED", 1, ["bo"]),
        ("OPEN", 1, ["ann"]),
    ]
    assert (summary.stages, summary.sold_notional, summary.liquidation_fees) == (0, 0, 0)
    assert summary.insurance_fund == D("1000")
