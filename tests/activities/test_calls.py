"""The record of each margin call, written by the transaction that opens a case on an account in breach."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import pytest

from activities.ledger import LedgerActivities, _calls, calls_on
from activities.ledger import reference as exchange
from worker.market import Trader, move_market, onboard
from workflows.contract import CaseOpening
from workflows.domain.policies import CasePolicy

D = Decimal
POLICY = CasePolicy(deadline=timedelta(minutes=30))


async def trader(pool: asyncpg.Pool, account: str, collateral: str) -> None:
    await onboard(pool, Trader(account, D(collateral), {"BTCUSDT": (D(1), D("49900"))}))
    async with pool.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49500")})  # maintenance 198, equity collateral - 400


def opening(account: str, at: datetime) -> CaseOpening:
    return CaseOpening(case_id=f"{account}/c1", account_id=account, call_id="c1", opened_at=at, policy=POLICY)


async def call_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT case_id, shortfall, deposit_asked, called_at, due_at FROM margin_calls ORDER BY case_id"
        )


async def test_a_case_opened_in_breach_records_its_call_and_a_healthy_one_none(venue: asyncpg.Pool) -> None:
    ledger = LedgerActivities(venue)
    await trader(venue, "short", "550")
    await trader(venue, "fine", "700")
    async with venue.acquire() as conn:  # maintenance 198.0000004, equity 150.0001: shortfall 47.9999004
        await exchange.set_mark_price(conn, "BTCUSDT", D("49500.0001"))
    at = datetime.now(UTC).replace(microsecond=0)
    await ledger.open_case(opening("short", at))
    await ledger.open_case(opening("fine", at))
    [call] = await call_rows(venue)
    assert call["case_id"] == "short/c1" and call["called_at"] == at
    assert call["shortfall"] == D("47.9999004")
    assert call["deposit_asked"] == D("47.999901")  # rounded up to the unit: paying it cures
    assert call["due_at"] == at + POLICY.deadline

    # The opening retried after the market moved: the case goes on with the account its first
    # attempt recorded (the statement's opening), and the call says the same.
    async with venue.acquire() as conn:
        await exchange.set_mark_price(conn, "BTCUSDT", D("49400"))  # maintenance 197.6, equity 50
    await ledger.open_case(opening("short", at))
    [again] = await call_rows(venue)
    assert again["shortfall"] == call["shortfall"] and again["called_at"] == at


async def test_a_failed_opening_records_no_call_and_no_case(
    venue: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await trader(venue, "fails", "550")

    async def broken(*_args: object) -> None:
        raise RuntimeError("the call could not be written")

    monkeypatch.setattr(_calls, "record_call", broken)
    with pytest.raises(RuntimeError):
        await LedgerActivities(venue).open_case(opening("fails", datetime.now(UTC)))
    async with venue.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM margin_call_cases") == 0
    assert await call_rows(venue) == []


async def test_a_day_runs_from_midnight_to_midnight_utc_whatever_the_sessions_zone(
    venue: asyncpg.Pool, ledger_url: str
) -> None:
    ledger = LedgerActivities(venue)
    utc = UTC
    times = {
        "first": datetime(2025, 11, 28, 0, 0, tzinfo=utc),
        "last": datetime(2025, 11, 28, 23, 59, 59, 999999, tzinfo=utc),
        "east": datetime(2025, 11, 29, 1, 0, tzinfo=timezone(timedelta(hours=2))),  # 23:00 UTC on the 28th
        "before": datetime(2025, 11, 27, 23, 59, 59, 999999, tzinfo=utc),
        "after": datetime(2025, 11, 29, 0, 0, tzinfo=utc),
    }
    for name, at in times.items():
        await trader(venue, name, "550")
        await ledger.open_case(opening(name, at))
    # Read as a desk in Tokyo would be connected: the day is still UTC's.
    tokyo = await asyncpg.create_pool(
        ledger_url, min_size=1, max_size=1, server_settings={"timezone": "Asia/Tokyo"}
    )
    try:
        calls = await calls_on(tokyo, date(2025, 11, 28))
    finally:
        await tokyo.close()
    assert [c.account_id for c in calls] == ["first", "east", "last"]
    assert all(c.met_by == "still open" and c.call_amount == D(48) for c in calls)
    assert calls[1].called_at == times["east"]
