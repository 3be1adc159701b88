"""Cases liquidated through the ``http`` venue against the simulator: real Temporal, worker and PostgreSQL.

A second worker in this process, configured with the ``http`` venue, serves
its own task queue beside the suite's (``ledger`` venue) worker; these cases
are started on it. What they show: partial fills are booked as they come and
the rest is planned again in the next stage; a rejection and an outage are
retried and written in the case's timeline; every order is booked once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import WorkflowHandle

from activities.ledger.audit import check_invariants
from tests.helpers import (
    TEST_POLICIES,
    CaseStack,
    account_with,
    fast_policy,
    finish,
    free_port,
    until,
    wait_state,
)
from worker.config import DEV_WEBHOOK_SECRET
from worker.serving import serving
from worker.stack.venue import Misbehaviour, VenueSimulator
from worker.worker import running_worker
from workflows import contract
from workflows.contract import CLOSED_STATES, CaseInput, CaseOutcome, CaseState, CaseStatus

D = Decimal
VENUE_QUEUE = "margin-calls-http-venue"


@pytest.fixture(scope="module")
async def simulator(case_worker: CaseStack) -> AsyncIterator[VenueSimulator]:
    """The simulator, and a worker with the ``http`` venue on its own task queue, for this module."""
    sim = VenueSimulator()
    port = free_port()
    async with (
        serving(sim.app(), port),
        running_worker(
            case_worker.client,
            case_worker.database_url,
            case_worker.notifier_url,
            DEV_WEBHOOK_SECRET,
            sandboxed=True,
            policies=TEST_POLICIES,
            venue_url=f"http://127.0.0.1:{port}",
            task_queue=VENUE_QUEUE,
        ),
    ):
        yield sim


@pytest.fixture
async def sim(simulator: VenueSimulator, stack: CaseStack) -> VenueSimulator:
    simulator.books.clear()
    simulator.behaviour = Misbehaviour()
    return simulator


async def open_on_venue(stack: CaseStack, account: str) -> WorkflowHandle[Any, CaseOutcome]:
    """Long 1 BTCUSDT at 49,500 with equity 50 (below the hard line): liquidated at once."""
    policy = fast_policy(deadline=timedelta(minutes=10), pause_between_stages=timedelta(milliseconds=200))
    return await stack.client.start_workflow(
        contract.WORKFLOW_TYPE,
        CaseInput(account_id=account, call_id="call-1", policy=policy),
        id=contract.workflow_id(account),
        task_queue=VENUE_QUEUE,
        result_type=CaseOutcome,
    )


async def finished(handle: WorkflowHandle[Any, CaseOutcome], record: str) -> CaseOutcome:
    """The outcome (its history kept for the replay tests with MARGIN_CALL_RECORD_HISTORIES=1)."""
    try:
        return await finish(handle, record, timeout=60)
    except TimeoutError:
        raise AssertionError(f"case not closed: {(await status(handle)).timeline}") from None


async def status(handle: WorkflowHandle[Any, CaseOutcome]) -> CaseStatus:
    result: CaseStatus = await handle.query(contract.QUERY_STATUS, result_type=CaseStatus)
    return result


async def orders_booked_once(stack: CaseStack, sim: VenueSimulator, account: str) -> list[Any]:
    """Every order the ledger wrote is one order at the venue, booked (and each venue order is ours)."""
    async with stack.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM venue_orders WHERE account_id = $1 ORDER BY stage, attempt", account
        )
        assert (await check_invariants(conn)).holds
    assert rows and all(r["booked"] for r in rows)
    for row in rows:
        report = sim.orders[row["client_order_id"]]
        assert report.filled_quantity == row["filled_quantity"]
    return list(rows)


async def test_partial_fills_are_booked_and_the_rest_is_sold_in_the_next_stages(
    stack: CaseStack, sim: VenueSimulator
) -> None:
    # Within the limit (49,475.25: mark less 0.05 %) only 0.1 at first; the rest of the book is too low.
    sim.set_book("BTCUSDT", [(D("49490"), D("0.1")), (D("49000"), D("10"))])
    account = await account_with(stack, "venue-partial", "450")
    handle = await open_on_venue(stack, account)

    async def first_stage() -> CaseStatus | None:
        now = await status(handle)
        return now if now.stages else None

    first = (await until(first_stage)).stages[0]
    assert [f.quantity for f in first.fills] == [D("0.1")]  # planned more: a partial fill
    sim.set_book("BTCUSDT", [(D("49490"), D("10"))])  # liquidity comes back
    outcome = await finished(handle, "venue_partial_fills")

    assert outcome.state in CLOSED_STATES and outcome.state != CaseState.CURED
    stages = outcome.status.stages
    assert len(stages) >= 2 and all(f.fill_price == D("49490") for s in stages[1:] for f in s.fills)
    rows = await orders_booked_once(stack, sim, account)
    sold = sum((f.quantity for s in stages for f in s.fills), D(0))
    assert sold == sum((r["filled_quantity"] for r in rows), D(0))
    async with stack.pool.acquire() as conn:
        left = await conn.fetchval(
            "SELECT quantity FROM positions WHERE account_id = $1 AND instrument = 'BTCUSDT'", account
        )
    assert left == D(1) - sold


async def test_a_rejection_and_an_outage_are_retried_and_shown_in_the_timeline(
    stack: CaseStack, sim: VenueSimulator
) -> None:
    # Bids at the mark: the fee eats the equity stage by stage, and the bankruptcy price rises to the
    # mark (a book below it fills nothing, and the backstop takes over: see the test after this one).
    sim.set_book("BTCUSDT", [(D("49500"), D("10"))])
    sim.behaviour = Misbehaviour(reject_next=1, reject_reason="price band", down=False)
    account = await account_with(stack, "venue-trouble", "450")
    handle = await open_on_venue(stack, account)

    async def rejected() -> CaseStatus | None:
        now = await status(handle)
        return now if any("rejected" in e.what for e in now.timeline) else None

    await until(rejected)
    sim.behaviour.down = True

    async def told_down() -> CaseStatus | None:
        now = await status(handle)
        return now if any("venue unavailable" in e.what for e in now.timeline) else None

    # The case waits at least a second after the rejection: its next try finds the gateway down.
    held = await until(told_down)
    assert held.hold == contract.HOLD_VENUE and held.state == CaseState.LIQUIDATING
    description = await handle.describe()
    assert description.typed_search_attributes.get(contract.MARGIN_CALL_HOLD) == contract.HOLD_VENUE
    sim.behaviour.down = False
    outcome = await finished(handle, "venue_rejection_and_outage")
    timeline = [e.what for e in outcome.status.timeline]
    assert any("stage 1 rejected: " in w and "price band" in w for w in timeline), timeline
    assert any("stage 1 venue unavailable: " in w and "no answer after 3 tries" in w for w in timeline), (
        timeline
    )
    assert outcome.status.stages
    rows = await orders_booked_once(stack, sim, account)
    assert rows[0]["status"] == "rejected" and rows[0]["attempt"] == 0
    await wait_state(handle, outcome.state)


async def test_a_market_that_fills_nothing_hands_the_stage_to_the_backstop(
    stack: CaseStack, sim: VenueSimulator
) -> None:
    # Every bid far below the limit: each IOC order is cancelled unfilled, stage after stage.
    sim.set_book("BTCUSDT", [(D("40000"), D("10"))])
    account = await account_with(stack, "venue-backstop", "450")
    handle = await open_on_venue(stack, account)
    outcome = await finished(handle, "venue_backstop")

    stages = outcome.status.stages
    timeline = [e.what for e in outcome.status.timeline]
    assert [bool(s.fills) for s in stages] == [False, False, False, True], timeline
    assert any("the backstop takes every position over" in w for w in timeline), timeline
    # The backstop took the position at the mark less the policy's slippage, never at the book's 40,000.
    assert all(f.fill_price > D("49000") for f in stages[-1].fills)
    assert outcome.state in (CaseState.CLOSED_OUT, CaseState.BANKRUPT)
    rows = await orders_booked_once(stack, sim, account)
    assert [r["status"] for r in rows] == ["cancelled"] * 3
    async with stack.pool.acquire() as conn:
        left = await conn.fetchval(
            "SELECT quantity FROM positions WHERE account_id = $1 AND instrument = 'BTCUSDT'", account
        )
    assert left == 0
