"""The ledger's guard against a bad price: stale marks and halted instruments, on a real PostgreSQL.

A stage refuses inside its own transaction (nothing written), the snapshot
reports each mark's age and halt, halts are audited, and the breach scan
flags accounts it must not call on such a price.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError

from activities.exceptions import InvalidReferenceData
from activities.ledger import LedgerActivities, collateral_account, load_margin_snapshot
from activities.ledger import reference as exchange
from activities.ledger.halts import halt_instrument, list_instruments, resume_instrument
from tests.helpers import balance, open_case
from worker.market import Trader, move_market, onboard
from workflows import contract
from workflows.contract import BreachScan, StageRequest
from workflows.domain.liquidation import LiquidationOrder, LiquidationPlan

D = Decimal
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def plan(account: str, *orders: tuple[str, str]) -> LiquidationPlan:
    return LiquidationPlan(
        account_id=account,
        orders=[LiquidationOrder(instrument=i, quantity=D(q), side="sell") for i, q in orders],
        fee_rate=D("0.005"),
        slippage=D("0.001"),
        target_equity=D("0"),
        reason="test",
    )


async def written(pool: asyncpg.Pool, account: str) -> tuple[int, int, int]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM transfers) AS t,"
            " (SELECT count(*) FROM liquidation_stages WHERE account_id = $1) AS s,"
            " (SELECT count(*) FROM liquidation_fills WHERE account_id = $1) AS f",
            account,
        )
    return row["t"], row["s"], row["f"]


async def test_a_stage_on_a_stale_mark_sells_nothing_and_names_it(venue: asyncpg.Pool) -> None:
    ledger = LedgerActivities(venue)
    await onboard(venue, Trader("stan", D("600"), {"BTCUSDT": (D("1"), D("50000"))}))
    async with venue.acquire() as conn:
        await exchange.set_mark_price(conn, "BTCUSDT", D("49500"), datetime.now(UTC) - timedelta(minutes=5))
    await open_case(ledger, "stan", "case-stan")
    before = await written(venue, "stan")
    request = StageRequest(
        case_id="case-stan",
        stage=1,
        plan=plan("stan", ("BTCUSDT", "0.25")),
        max_mark_age=timedelta(seconds=60),
    )
    with pytest.raises(ApplicationError) as refused:
        await ledger.execute_liquidation_stage(request)
    assert refused.value.type == contract.STALE_MARKS and refused.value.non_retryable
    assert "BTCUSDT" in str(refused.value) and "nothing sold" in str(refused.value)
    assert await written(venue, "stan") == before
    async with venue.acquire() as conn:
        assert await conn.fetchval("SELECT quantity FROM positions WHERE account_id = 'stan'") == D(1)
    assert await balance(venue, collateral_account("stan", "USDT")) == D("600")
    # A request without an age (recorded before marks had one) is held to the default: still refused.
    with pytest.raises(ApplicationError):
        await ledger.execute_liquidation_stage(request.model_copy(update={"max_mark_age": None}))
    # A fresh mark: the same stage sells.
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49500")})
    result = await ledger.execute_liquidation_stage(request)
    assert result.fills[0].quantity == D("0.25")


async def test_a_halted_instrument_is_refused_and_another_of_the_account_sold(venue: asyncpg.Pool) -> None:
    ledger = LedgerActivities(venue)
    positions = {"BTCUSDT": (D("1"), D("50000")), "ETHUSDT": (D("10"), D("3000"))}
    await onboard(venue, Trader("hana", D("700"), positions))
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49500"), "ETHUSDT": D("2950")})
        assert await halt_instrument(conn, "BTCUSDT", "ops", "wick under investigation")
        snapshot = await load_margin_snapshot(conn, "hana")
    assert [p.instrument for p in snapshot.halted_positions] == ["BTCUSDT"]
    assert all(p.mark_as_of is not None for p in snapshot.portfolio.positions)
    await open_case(ledger, "hana", "case-hana")
    before = await written(venue, "hana")
    with pytest.raises(ApplicationError) as refused:
        await ledger.execute_liquidation_stage(
            StageRequest(
                case_id="case-hana", stage=1, plan=plan("hana", ("ETHUSDT", "1"), ("BTCUSDT", "0.5"))
            )
        )
    assert refused.value.type == contract.INSTRUMENT_HALTED and "BTCUSDT" in str(refused.value)
    assert await written(venue, "hana") == before
    # Its halted mark is old by now, yet ETHUSDT still sells: a halted instrument's age does not count.
    async with venue.acquire() as conn:
        await conn.execute("UPDATE mark_prices SET as_of = $1 WHERE instrument = 'BTCUSDT'", LONG_AGO)
    result = await ledger.execute_liquidation_stage(
        StageRequest(case_id="case-hana", stage=1, plan=plan("hana", ("ETHUSDT", "1")))
    )
    assert [f.instrument for f in result.fills] == ["ETHUSDT"]
    async with venue.acquire() as conn:
        assert await resume_instrument(conn, "BTCUSDT", "ops", "cleared")
        await move_market(conn, {"BTCUSDT": D("49500")})


async def test_halts_are_audited_idempotent_and_bad_input_is_named(venue: asyncpg.Pool) -> None:
    async with venue.acquire() as conn:
        assert await halt_instrument(conn, "SOLUSDT", "ops@x", "outage")
        assert not await halt_instrument(conn, "SOLUSDT", "ops@x", "outage again")
        [state] = await list_instruments(conn, halted_only=True)
        assert (state.instrument, state.halted, state.halt_reason, state.halted_by) == (
            "SOLUSDT",
            True,
            "outage",
            "ops@x",
        )
        with pytest.raises(InvalidReferenceData, match="instrument: 'NOPE' is not listed"):
            await halt_instrument(conn, "NOPE", "ops", "x")
        with pytest.raises(InvalidReferenceData, match="reason"):
            await halt_instrument(conn, "ETHUSDT", "ops", "  ")
        with pytest.raises(InvalidReferenceData, match="operator"):
            await resume_instrument(conn, "SOLUSDT", "", "x")
        assert await resume_instrument(conn, "SOLUSDT", "lead", "back")
        assert not await resume_instrument(conn, "SOLUSDT", "lead", "back")
        audit = await conn.fetch(
            "SELECT instrument, action, operator, reason FROM instrument_halts ORDER BY event_id"
        )
        assert [tuple(r) for r in audit] == [
            ("SOLUSDT", "halt", "ops@x", "outage"),
            ("SOLUSDT", "resume", "lead", "back"),
        ]
        assert await list_instruments(conn, halted_only=True) == []
        with pytest.raises(InvalidReferenceData, match="as_of"):
            await exchange.set_mark_price(conn, "SOLUSDT", D(1), datetime(2030, 1, 1))


async def test_the_scan_calls_no_one_on_a_stale_or_halted_mark(venue: asyncpg.Pool) -> None:
    ledger = LedgerActivities(venue)
    await onboard(venue, Trader("fresh", D("100"), {"BTCUSDT": (D("1"), D("50000"))}))
    await onboard(venue, Trader("old", D("100"), {"ETHUSDT": (D("10"), D("3000"))}))
    await onboard(venue, Trader("halted", D("50"), {"SOLUSDT": (D("100"), D("150"))}))
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49500"), "SOLUSDT": D("145")})
        await exchange.set_mark_price(conn, "ETHUSDT", D("2950"), datetime.now(UTC) - timedelta(minutes=2))
        await halt_instrument(conn, "SOLUSDT", "ops", "outage")
    breaches = {b.account_id: b for b in await ledger.scan_breaches(BreachScan(limit=10))}
    assert set(breaches) == {"fresh", "old", "halted"}  # all in breach at their marks ...
    # ... but only the fresh one may be called on its price.
    assert {a for a, b in breaches.items() if not b.unpriced} == {"fresh"}
    longer = await ledger.scan_breaches(BreachScan(limit=10, max_mark_age=timedelta(minutes=5)))
    assert {b.account_id for b in longer if not b.unpriced} == {"fresh", "old"}
