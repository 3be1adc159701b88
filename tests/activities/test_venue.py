"""A liquidation stage through the ``http`` venue: the limit price, partial fills, idempotent retries.

The limit price is pure arithmetic (unit tests); every stage test runs against
the venue simulator served on loopback over HTTP, on a real PostgreSQL ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError

from activities.ledger import STAGE_ORDER_SENT, LedgerActivities, collateral_account
from activities.ledger._pricing import bankruptcy_price, limit_price
from activities.ledger.audit import check_invariants
from activities.venue import (
    HttpVenue,
    OrderReport,
    OrderStatus,
    VenueOrder,
    VenueUnavailable,
    client_order_id,
    report_problem,
    venue_http_client,
)
from tests.helpers import balance, free_port, open_case
from worker.market import Trader, move_market, onboard
from worker.serving import serving
from worker.stack.venue import VenueSimulator
from workflows import contract
from workflows.contract import StageRequest
from workflows.domain.liquidation import LiquidationOrder, LiquidationPlan

D = Decimal

# --- the limit price (pure) ----------------------------------------------------


def test_a_sells_limit_is_the_mark_less_the_maximum_slippage_rounded_up() -> None:
    # 40100 x 0.999 = 40059.9; 40100 x 0.99877 = 40050.677, at six significant digits rounded up
    # (toward the trader), never down.
    assert limit_price("sell", D("40100"), D("0.001"), None, 6) == D("40059.900000")
    assert limit_price("sell", D("40100"), D("0.00123"), None, 0) == D("40050.7")


def test_a_buys_limit_is_the_mark_plus_the_maximum_slippage_rounded_down() -> None:
    assert limit_price("buy", D("40100"), D("0.00123"), None, 0) == D("40149.3")  # 40149.323 floored
    # No slippage: the limit is the mark itself, not rounded below it to the currency's cents.
    assert limit_price("buy", D("33.333"), D("0"), None, 2) == D("33.3330")


def test_the_bankruptcy_price_binds_when_it_is_nearer_the_mark_than_the_slippage() -> None:
    # Long 0.1 at mark 40100 with equity 10: bankrupt at 40000; 1 % slippage would allow 39699.
    bankrupt = bankruptcy_price(D("0.1"), D("40100"), D("10"))
    assert bankrupt == D("40000")
    assert limit_price("sell", D("40100"), D("0.01"), bankrupt, 6) == D("40000")
    # A short of 0.1 at 40100 with equity 10: bankrupt at 40200, above which buying back costs more.
    short_bankrupt = bankruptcy_price(D("-0.1"), D("40100"), D("10"))
    assert short_bankrupt == D("40200")
    assert limit_price("buy", D("40100"), D("0.01"), short_bankrupt, 6) == D("40200")
    assert limit_price("buy", D("40100"), D("0.001"), short_bankrupt, 6) == D("40140.1")


def test_no_bankruptcy_bound_once_equity_is_gone() -> None:
    """Equity at or below zero: the bound would sit beyond the mark and nothing would ever fill."""
    assert bankruptcy_price(D("1"), D("40100"), D("0")) is None
    assert bankruptcy_price(D("1"), D("40100"), D("-5")) is None
    assert bankruptcy_price(D("0.001"), D("100"), D("1000")) is None  # would be below zero: no bound


def test_client_order_ids_are_deterministic_bounded_and_distinct() -> None:
    first = client_order_id("acct/" + "x" * 300, 3, "BTCUSDT")
    assert first == client_order_id("acct/" + "x" * 300, 3, "BTCUSDT")
    assert len(first) == 35 and first.startswith("mc-")
    others = {
        client_order_id("acct/" + "x" * 300, 4, "BTCUSDT"),
        client_order_id("acct/" + "x" * 300, 3, "ETHUSDT"),
        client_order_id("acct/" + "x" * 300, 3, "BTCUSDT", attempt=1),
    }
    assert first not in others and len(others) == 3


def test_a_report_the_ledger_cannot_trust_is_named() -> None:
    sell = VenueOrder(
        client_order_id="mc-1", instrument="BTCUSDT", side="sell", quantity=D("2"), limit_price=D("100")
    )
    buy = sell.model_copy(update={"side": "buy"})

    def report(status: str, filled: str, price: str | None) -> OrderReport:
        return OrderReport(
            client_order_id="mc-1",
            status=OrderStatus(status),
            filled_quantity=D(filled),
            average_price=None if price is None else D(price),
        )

    assert report_problem(sell, report("filled", "2", "100")) is None
    assert report_problem(sell, report("partially_filled", "1", "101")) is None
    assert report_problem(buy, report("partially_filled", "1", "99")) is None
    assert report_problem(sell, report("cancelled", "0", None)) is None
    assert "3 filled of 2" in str(report_problem(sell, report("filled", "3", "100")))
    assert "beyond the sell limit" in str(report_problem(sell, report("filled", "2", "99.99")))
    assert "beyond the buy limit" in str(report_problem(buy, report("filled", "2", "100.01")))
    assert "status rejected with 1 filled" in str(report_problem(sell, report("rejected", "1", "100")))
    assert "status cancelled with 1 filled" in str(report_problem(sell, report("cancelled", "1", "100")))
    assert "status filled with 1 of 2" in str(report_problem(sell, report("filled", "1", "100")))
    assert "at average price None" in str(report_problem(sell, report("partially_filled", "1", None)))


def test_a_cheap_instruments_limit_keeps_its_slippage_and_stays_above_zero() -> None:
    # Two places for the settlement currency: the limit keeps six significant digits of the mark.
    assert limit_price("sell", D("0.123"), D("0.0005"), None, 2) == D("0.122939")
    assert limit_price("buy", D("0.004"), D("0.0005"), None, 2) == D("0.00400200")
    assert limit_price("sell", D("10.00"), D("0.0005"), None, 2) == D("9.99500")


# --- stages against the simulator -------------------------------------------------


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[VenueSimulator, str]]:
    sim = VenueSimulator()
    port = free_port()
    async with serving(sim.app(), port):
        yield sim, f"http://127.0.0.1:{port}"


@pytest.fixture
async def gateway(simulator: tuple[VenueSimulator, str]) -> AsyncIterator[HttpVenue]:
    async with venue_http_client() as http:
        yield HttpVenue(http, simulator[1])


def sell_all(account: str) -> LiquidationPlan:
    return LiquidationPlan(
        account_id=account,
        orders=[LiquidationOrder(instrument="BTCUSDT", quantity=D("0.1"), side="sell")],
        fee_rate=D("0.002"),
        slippage=D("0.001"),
        target_equity=D("0"),
        reason="test",
    )


async def breached(pool: asyncpg.Pool, account: str, ledger: LedgerActivities) -> StageRequest:
    """Long 0.1 BTCUSDT from 50,000 with 1,000 USDT, marked at 40,100: equity 10 < maintenance 16.04."""
    await onboard(pool, Trader(account, D("1000"), {"BTCUSDT": (D("0.1"), D("50000"))}))
    async with pool.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("40100")})
    await open_case(ledger, account, f"case-{account}")
    return StageRequest(case_id=f"case-{account}", stage=1, plan=sell_all(account))


async def position(pool: asyncpg.Pool, account: str) -> Decimal:
    async with pool.acquire() as conn:
        held: Decimal = await conn.fetchval(
            "SELECT quantity FROM positions WHERE account_id = $1 AND instrument = 'BTCUSDT'", account
        )
    return held


async def order_rows(pool: asyncpg.Pool, case_id: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(
            await conn.fetch("SELECT * FROM venue_orders WHERE case_id = $1 ORDER BY attempt", case_id)
        )


async def test_a_stage_books_the_partial_fill_the_book_gives_within_the_limit(
    venue: asyncpg.Pool, simulator: tuple[VenueSimulator, str], gateway: HttpVenue
) -> None:
    sim, _ = simulator
    # The limit is 40059.9 (mark less 0.1 %, above the bankruptcy price 40000): 40050 is out of reach.
    sim.set_book("BTCUSDT", [(D("40080"), D("0.03")), (D("40060"), D("0.03")), (D("40050"), D("1"))])
    ledger = LedgerActivities(venue, venue=gateway)
    request = await breached(venue, "partial", ledger)

    result = await ledger.execute_liquidation_stage(request)

    [fill] = result.fills
    assert (fill.quantity, fill.fill_price, fill.realised_pnl) == (D("0.06"), D("40070"), D("-595.8"))
    assert result.fee == D("4.8084")  # 0.2 % of 2,404.2, under the 8.2 of equity left
    assert await position(venue, "partial") == D("0.04")
    assert await balance(venue, collateral_account("partial", "USDT")) == D("1000") - D("595.8") - D("4.8084")
    [row] = await order_rows(venue, "case-partial")
    assert (row["status"], row["filled_quantity"], row["limit"], row["booked"]) == (
        "partially_filled",
        D("0.06"),
        D("40059.900000"),
        True,
    )
    # The rest is the account's, still in breach: the workflow plans it again in its next stage.
    assert result.snapshot_after.in_breach
    assert await ledger.execute_liquidation_stage(request) == result  # a retry returns the booked stage


async def test_a_crash_between_sending_and_booking_sends_no_second_order_and_books_once(
    venue: asyncpg.Pool, simulator: tuple[VenueSimulator, str], gateway: HttpVenue
) -> None:
    sim, _ = simulator
    sim.set_book("BTCUSDT", [(D("40080"), D("0.05"))])

    async def crash(name: str) -> None:
        if name == STAGE_ORDER_SENT:
            raise ConnectionResetError("worker killed after the venue answered")

    request = await breached(venue, "crashy", LedgerActivities(venue, venue=gateway))
    with pytest.raises(ConnectionResetError):
        await LedgerActivities(venue, checkpoint=crash, venue=gateway).execute_liquidation_stage(request)
    assert await position(venue, "crashy") == D("0.1")  # answered, not booked

    # The retry (Temporal's, on another worker) asks for the same order and books it once.
    sim.set_book("BTCUSDT", [(D("40080"), D("1"))])  # a second order would now fill all of it
    result = await LedgerActivities(venue, venue=gateway).execute_liquidation_stage(request)

    coid = client_order_id("case-crashy", 1, "BTCUSDT")
    assert list(sim.orders) == [coid], "one order at the venue"
    assert sim.orders_for(coid) == 2, "asked twice, under the same id"
    assert [f.quantity for f in result.fills] == [D("0.05")]
    assert await position(venue, "crashy") == D("0.05")
    async with venue.acquire() as conn:
        pnl_postings = await conn.fetchval(
            "SELECT count(*) FROM transfers WHERE case_id = 'case-crashy' AND kind = 'realised_pnl'"
        )
    assert pnl_postings == 1


async def test_a_rejection_moves_nothing_and_the_next_try_is_a_new_order(
    venue: asyncpg.Pool, simulator: tuple[VenueSimulator, str], gateway: HttpVenue
) -> None:
    sim, _ = simulator
    sim.set_book("BTCUSDT", [(D("40080"), D("1"))])
    sim.behaviour.reject_next = 1
    sim.behaviour.reject_reason = "price band"
    ledger = LedgerActivities(venue, venue=gateway)
    request = await breached(venue, "rejected", ledger)

    with pytest.raises(ApplicationError) as refused:
        await ledger.execute_liquidation_stage(request)
    assert refused.value.type == contract.ORDER_REJECTED and refused.value.non_retryable
    assert "price band" in str(refused.value)
    assert await position(venue, "rejected") == D("0.1")
    assert await balance(venue, collateral_account("rejected", "USDT")) == D("1000")

    result = await ledger.execute_liquidation_stage(request)  # the case tries again
    assert [f.quantity for f in result.fills] == [D("0.1")]
    rows = await order_rows(venue, "case-rejected")
    assert [(r["attempt"], r["status"]) for r in rows] == [(0, "rejected"), (1, "filled")]


async def test_an_outage_fails_the_stage_then_the_same_order_is_resent(
    venue: asyncpg.Pool, simulator: tuple[VenueSimulator, str], gateway: HttpVenue
) -> None:
    sim, _ = simulator
    sim.set_book("BTCUSDT", [(D("40080"), D("1"))])
    sim.behaviour.down = True
    ledger = LedgerActivities(venue, venue=gateway)
    request = await breached(venue, "outage", ledger)

    with pytest.raises(ApplicationError) as down:
        await ledger.execute_liquidation_stage(request)
    assert down.value.type == contract.VENUE_UNAVAILABLE
    assert sim.refused_while_down == 3  # the activity's bounded tries
    assert await position(venue, "outage") == D("0.1")
    [row] = await order_rows(venue, "case-outage")
    assert (row["status"], row["booked"]) == ("new", False)

    sim.behaviour.down = False
    result = await ledger.execute_liquidation_stage(request)
    assert [f.quantity for f in result.fills] == [D("0.1")]
    assert list(sim.orders) == [row["client_order_id"]]


async def test_two_attempts_of_one_stage_at_once_make_one_order_booked_once(
    venue: asyncpg.Pool, simulator: tuple[VenueSimulator, str], gateway: HttpVenue
) -> None:
    """A retry started while the first attempt still waits on the venue (a start-to-close timeout)."""
    sim, _ = simulator
    sim.set_book("BTCUSDT", [(D("40080"), D("1"))])
    sim.behaviour.latency_seconds = 0.5  # both attempts are in flight together
    ledger = LedgerActivities(venue, venue=gateway)
    request = await breached(venue, "twice", ledger)

    first, second = await asyncio.gather(
        ledger.execute_liquidation_stage(request), ledger.execute_liquidation_stage(request)
    )

    assert first == second
    coid = client_order_id("case-twice", 1, "BTCUSDT")
    assert list(sim.orders) == [coid], "one order at the venue"
    assert sim.orders_for(coid) == 2, "both attempts asked, under the same id"
    assert [f.quantity for f in first.fills] == [D("0.1")]
    assert await position(venue, "twice") == D("0")
    async with venue.acquire() as conn:
        postings = await conn.fetch(
            "SELECT kind FROM transfers WHERE case_id = 'case-twice' AND kind <> 'deposit' ORDER BY kind"
        )
        assert (await check_invariants(conn)).holds
    assert [p["kind"] for p in postings] == ["liquidation_fee", "realised_pnl"]


async def test_a_gateway_answer_that_is_not_a_report_is_no_answer(
    simulator: tuple[VenueSimulator, str], gateway: HttpVenue
) -> None:
    """A 409 for an id it has seen, an expired key: the order may exist, so it is never a rejection."""
    sim, _ = simulator
    order = VenueOrder(
        client_order_id="mc-x", instrument="BTCUSDT", side="sell", quantity=D("1"), limit_price=D("1")
    )
    for status in (401, 404, 409, 422):
        sim.behaviour.answer_status = status
        with pytest.raises(VenueUnavailable, match=f"HTTP {status}"):
            await gateway.place(order)


async def test_a_fill_beyond_the_limit_is_not_booked(
    venue: asyncpg.Pool, simulator: tuple[VenueSimulator, str], gateway: HttpVenue
) -> None:
    sim, _ = simulator
    sim.set_book("BTCUSDT", [(D("40080"), D("1"))])
    sim.behaviour.misreport_price_by = D("500")  # reports 39,580 for a sell limited at 40,059.9
    ledger = LedgerActivities(venue, venue=gateway)
    request = await breached(venue, "misreported", ledger)

    with pytest.raises(ApplicationError) as refused:
        await ledger.execute_liquidation_stage(request)
    assert refused.value.type == contract.VENUE_REPORT_INVALID and refused.value.non_retryable
    assert "beyond the sell limit" in str(refused.value)
    assert await position(venue, "misreported") == D("0.1")
    assert await balance(venue, collateral_account("misreported", "USDT")) == D("1000")
    [row] = await order_rows(venue, "case-misreported")
    assert (row["status"], row["booked"]) == ("new", False)  # out, for people to settle


async def test_no_stage_sells_at_the_mark_while_an_order_is_out(
    venue: asyncpg.Pool, simulator: tuple[VenueSimulator, str], gateway: HttpVenue
) -> None:
    """An order out (unbooked) is booked before anything else is sold, whichever venue and case asks."""
    sim, _ = simulator
    sim.set_book("BTCUSDT", [(D("40080"), D("0.04"))])

    async def crash(name: str) -> None:
        if name == STAGE_ORDER_SENT:
            raise ConnectionResetError("worker killed after the venue answered")

    request = await breached(venue, "out", LedgerActivities(venue, venue=gateway))
    with pytest.raises(ConnectionResetError):
        await LedgerActivities(venue, checkpoint=crash, venue=gateway).execute_liquidation_stage(request)

    # A worker on the ledger venue (a config change, a rolling deploy) refuses to sell at the mark.
    with pytest.raises(ApplicationError) as held:
        await LedgerActivities(venue).execute_liquidation_stage(request)
    assert held.value.type == contract.VENUE_UNAVAILABLE and "not booked" in str(held.value)
    assert await position(venue, "out") == D("0.1")

    # A case that ended with the order out (terminated, say): the account's next case, even sent to
    # the backstop, books the order out first through the venue, and sells nothing else in that stage.
    ledger = LedgerActivities(venue, venue=gateway)
    await open_case(ledger, "out", "case-out-next")
    later = request.model_copy(update={"case_id": "case-out-next", "backstop": True})
    result = await ledger.execute_liquidation_stage(later)
    assert [f.quantity for f in result.fills] == [D("0.04")]
    assert list(sim.orders) == [client_order_id("case-out", 1, "BTCUSDT")], "no new order"
    assert await position(venue, "out") == D("0.06")
