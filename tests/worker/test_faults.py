"""Faults injected for real: SIGKILLed workers, a restarted Temporal server and PostgreSQL.

Each test ends with the invariant check (ledger balanced, deposits once, one set
of fills per stage, cases open or closed with an outcome, no stage on a healthy
account).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from activities.ledger import STAGE_ORDER_SENT
from tests.helpers import free_port, until
from tools.faults import FaultStack, fault_stack
from worker.market import Trader, list_venue, move_market, onboard
from worker.receiver import WebhookReceiver
from worker.serving import serving
from worker.stack.venue import VenueSimulator
from workflows.client import MarginCallClient
from workflows.contract import CaseOutcome, CaseState
from workflows.domain.policies import CasePolicy

D = Decimal
ENTRY, MARK = D("49900"), D("49500")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def faults(
    tmp_path_factory: pytest.TempPathFactory, receiver: tuple[WebhookReceiver, str]
) -> AsyncIterator[FaultStack]:
    async with fault_stack(tmp_path_factory.mktemp("faults"), receiver[1], pool_size=5) as stack:
        async with stack.pool.acquire() as conn:
            await list_venue(conn, insurance_fund=D("100000"))
            await move_market(conn, {"BTCUSDT": MARK})
        yield stack


def policy(**overrides: Any) -> CasePolicy:
    values: dict[str, Any] = {
        "deadline": timedelta(seconds=1),
        "reminders_before_deadline": [],
        "pause_between_stages": timedelta(seconds=0),
        "notice_delivery_window": timedelta(seconds=10),
        "ledger_attempt_timeout": timedelta(seconds=2),
        # The module's marks are set once at its start; these tests are about crashes, not stale prices.
        "max_mark_age": timedelta(days=1),
    }
    values.update(overrides)
    return CasePolicy.model_validate(values)


async def breached(stack: FaultStack, name: str, collateral: str = "550") -> str:
    import uuid

    account = f"{name}-{uuid.uuid4().hex[:6]}"
    await onboard(stack.pool, Trader(account, D(collateral), {"BTCUSDT": (D(1), ENTRY)}))
    return account


async def rows(stack: FaultStack, sql: str, *args: object) -> int:
    async with stack.pool.acquire() as conn:
        value: int = await conn.fetchval(sql, *args)
    return value


async def outcome_of(stack: FaultStack, account: str, timeout: float = 90) -> CaseOutcome:
    handle = MarginCallClient(stack.client).handle(account)
    return await asyncio.wait_for(handle.result(), timeout)


async def assert_one_set_of_fills(stack: FaultStack, outcome: CaseOutcome) -> None:
    stages = await rows(stack, "SELECT count(*) FROM liquidation_stages WHERE case_id = $1", outcome.case_id)
    fills = await rows(stack, "SELECT count(*) FROM liquidation_fills WHERE case_id = $1", outcome.case_id)
    assert stages == len(outcome.status.stages) == fills  # one instrument: one fill per stage
    numbers = [s.stage for s in outcome.status.stages]
    assert numbers == list(range(1, len(numbers) + 1))
    report = await stack.invariants()
    assert report.holds, report


@pytest.mark.parametrize("failpoint", ["stage.after_commit", "stage.in_transaction"])
async def test_worker_sigkilled_during_a_stage(faults: FaultStack, failpoint: str, tmp_path: Path) -> None:
    """After commit: the retry finds its own rows. Mid-transaction: PostgreSQL rolls back, the retry commits once."""
    marker = tmp_path / "reached"
    doomed = await faults.start_worker({failpoint: marker})
    account = await breached(faults, "kill")
    await MarginCallClient(faults.client).open_case(account, "k-1", policy())
    await until(marker.exists, timeout=60)
    await doomed.kill()
    committed = await rows(faults, "SELECT count(*) FROM liquidation_stages WHERE account_id = $1", account)
    assert committed == (1 if failpoint == "stage.after_commit" else 0)
    if failpoint == "stage.in_transaction":
        async with faults.pool.acquire() as conn:
            held = await conn.fetchval("SELECT quantity FROM positions WHERE account_id = $1", account)
        assert held == 1  # nothing of the killed transaction survived
    survivor = await faults.start_worker()
    outcome = await outcome_of(faults, account)
    await survivor.stop()
    assert outcome.state in (CaseState.RESTORED, CaseState.CLOSED_OUT, CaseState.BANKRUPT)
    await assert_one_set_of_fills(faults, outcome)


async def test_temporal_restarted_while_cases_wait_and_while_a_stage_runs(faults: FaultStack) -> None:
    worker = await faults.start_worker()
    api = MarginCallClient(faults.client)
    waiting = [await breached(faults, f"wait{i}") for i in range(3)]
    for account in waiting:
        await api.open_case(account, "t-1", policy(deadline=timedelta(seconds=8)))
    running = await breached(faults, "stages")
    await api.open_case(
        running,
        "t-1",
        policy(pause_between_stages=timedelta(seconds=1), liquidation={"fraction_per_stage": "0.1"}),
    )
    await until(
        lambda: rows(faults, "SELECT count(*) FROM liquidation_stages WHERE account_id = $1", running),
        timeout=30,
    )
    await faults.restart_temporal(down_for=2)
    outcomes = [await outcome_of(faults, a) for a in [*waiting, running]]
    await worker.stop()
    for outcome in outcomes[:3]:
        status = outcome.status
        assert status.stages, outcome.state
        # The deadline timer fired at its original time, not 8 s after the restart.
        lateness = status.stages[0].executed_at - status.deadline  # type: ignore[operator]
        assert lateness < timedelta(seconds=4), lateness
    assert len(outcomes[3].status.stages) >= 2
    for outcome in outcomes:
        await assert_one_set_of_fills(faults, outcome)


async def test_postgres_restarted_and_connections_killed_during_activities(faults: FaultStack) -> None:
    worker = await faults.start_worker()
    api = MarginCallClient(faults.client)
    accounts = [await breached(faults, f"pg{i}") for i in range(3)]
    for account in accounts:
        await api.open_case(
            account,
            "p-1",
            policy(
                pause_between_stages=timedelta(milliseconds=500), liquidation={"fraction_per_stage": "0.1"}
            ),
        )
    await until(
        lambda: rows(faults, "SELECT count(*) FROM liquidation_stages WHERE account_id = ANY($1)", accounts),
        timeout=30,
    )
    assert await faults.kill_connections() >= 1
    await asyncio.sleep(0.7)
    await faults.kill_connections()
    await faults.restart_postgres(down_for=2)
    outcomes = [await outcome_of(faults, a) for a in accounts]
    await worker.stop()
    for outcome in outcomes:
        assert outcome.state in (CaseState.RESTORED, CaseState.CLOSED_OUT, CaseState.BANKRUPT)
        await assert_one_set_of_fills(faults, outcome)
    assert isinstance(faults.pool, asyncpg.Pool)


async def test_worker_sigkilled_between_the_venues_answer_and_booking_it(
    faults: FaultStack, tmp_path: Path
) -> None:
    """The order was filled at the venue, the worker died before booking: no second order, fills booked once."""
    sim = VenueSimulator()
    sim.set_book("BTCUSDT", [(MARK, D("10"))])
    port = free_port()
    async with serving(sim.app(), port):
        gateway = f"http://127.0.0.1:{port}"
        marker = tmp_path / "reached"
        doomed = await faults.start_worker({STAGE_ORDER_SENT: marker}, venue_url=gateway)
        account = await breached(faults, "venue-kill")
        await MarginCallClient(faults.client).open_case(account, "k-1", policy())
        await until(marker.exists, timeout=60)
        await doomed.kill()
        [first] = list(sim.orders)
        assert sim.orders[first].filled_quantity > 0  # filled at the venue ...
        async with faults.pool.acquire() as conn:
            held = await conn.fetchval("SELECT quantity FROM positions WHERE account_id = $1", account)
        assert held == 1  # ... and not booked
        survivor = await faults.start_worker(venue_url=gateway)
        outcome = await outcome_of(faults, account)
        await survivor.stop()
    assert outcome.state in (CaseState.RESTORED, CaseState.CLOSED_OUT, CaseState.BANKRUPT)
    assert sim.orders_for(first) == 2, "the retry asked for the same order"
    async with faults.pool.acquire() as conn:
        orders = await conn.fetch(
            "SELECT client_order_id, booked FROM venue_orders WHERE account_id = $1", account
        )
    assert {r["client_order_id"] for r in orders} == set(sim.orders), "every venue order is one of ours"
    assert all(r["booked"] for r in orders)
    assert outcome.status.stages[0].fills[0].quantity == sim.orders[first].filled_quantity
    await assert_one_set_of_fills(faults, outcome)
