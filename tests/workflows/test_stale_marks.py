"""No liquidation on a bad price: a stale mark holds a case at its deadline, a halted instrument is not sold.

Each test lists instruments of its own (same tier table as BTCUSDT), so that
aging or halting them cannot touch another test's cases on the shared ledger.
Accounts are long at 49,900 marked at 49,500, as in ``test_case_workflow``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from activities.ledger import reference as exchange
from activities.ledger.halts import halt_instrument, resume_instrument
from tests.helpers import ENTRY, MARK, CaseStack, fast_policy, finish, until
from worker.market import LISTINGS, SETTLEMENT, Trader, onboard
from workflows import contract
from workflows.client import MarginCallClient
from workflows.contract import CaseState, CaseStatus
from workflows.domain.liquidation import LiquidationPolicy

D = Decimal


async def _instrument(stack: CaseStack, as_of: datetime | None = None) -> str:
    name = f"T{uuid.uuid4().hex[:10].upper()}USDT"
    async with stack.pool.acquire() as conn:
        await exchange.add_instrument(conn, name, SETTLEMENT, LISTINGS["BTCUSDT"][1], MARK)
        await exchange.set_mark_price(conn, name, MARK, as_of)
    return name


async def _status_where(handle: object, check: object) -> CaseStatus:
    async def probe() -> CaseStatus | None:
        status = await handle.query(contract.QUERY_STATUS, result_type=CaseStatus)  # type: ignore[attr-defined]
        return status if check(status) else None  # type: ignore[operator]

    result: CaseStatus = await until(probe)
    return result


async def _held_cases(stack: CaseStack, account: str, query: str) -> list[str]:
    return [w.id async for w in stack.client.list_workflows(f"{query} AND AccountId = '{account}'")]


async def test_a_stale_mark_holds_the_case_at_its_deadline_and_a_fresh_one_resumes_it(
    stack: CaseStack,
) -> None:
    old = datetime.now(UTC) - timedelta(minutes=10)
    instrument = await _instrument(stack, as_of=old)
    account = stack.account("stale")
    await onboard(stack.pool, Trader(account, D(550), {instrument: (D(1), ENTRY)}))
    api = MarginCallClient(stack.client)
    policy = fast_policy(deadline=timedelta(seconds=1), max_mark_age=timedelta(seconds=30))
    handle = await api.open_case(account, "call-1", policy)

    held = await _status_where(handle, lambda s: s.hold is not None)
    assert held.hold == contract.HOLD_STALE_MARKS and held.state == CaseState.LIQUIDATING
    assert held.stages == [] and instrument in (held.hold_reason or "")
    assert any("liquidation held" in e.what and instrument in e.what for e in held.timeline)
    # Staff find it in one query; nothing was sold meanwhile.
    hold_query = f"MarginCallHold = '{contract.HOLD_STALE_MARKS}'"
    assert await until(lambda: _found(stack, account, hold_query)) == [contract.workflow_id(account)]
    async with stack.pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM liquidation_stages WHERE account_id = $1", account) == 0
        )
        assert await conn.fetchval("SELECT quantity FROM positions WHERE account_id = $1", account) == D(1)

    # A fresh mark arrives: the case resumes by itself and liquidates.
    async with stack.pool.acquire() as conn:
        await exchange.set_mark_price(conn, instrument, MARK)
    outcome = await finish(handle, "stale_mark_resumed")
    assert outcome.state in (CaseState.RESTORED, CaseState.CLOSED_OUT) and outcome.status.stages
    assert outcome.status.hold is None
    whats = [e.what for e in outcome.status.timeline]
    held_at = next(i for i, w in enumerate(whats) if "liquidation held" in w)
    resumed_at = next(i for i, w in enumerate(whats) if "liquidation resumes" in w)
    assert held_at < resumed_at < next(i for i, w in enumerate(whats) if w.startswith("stage 1 "))
    assert await until(lambda: _gone(stack, account, "MarginCallHold IS NOT NULL"))


async def _found(stack: CaseStack, account: str, query: str) -> list[str] | None:
    return await _held_cases(stack, account, query) or None


async def _gone(stack: CaseStack, account: str, query: str) -> bool:
    return not await _held_cases(stack, account, query)


async def test_a_halted_instrument_is_not_sold_while_another_is(stack: CaseStack) -> None:
    big, small = await _instrument(stack), await _instrument(stack)
    account = stack.account("halt")
    # 2 of ``big`` and 1 of ``small``: maintenance 396 + 198, equity 1700 - 1200 = 500. Unhalted,
    # the planner would sell ``big`` first (it frees the most maintenance).
    await onboard(stack.pool, Trader(account, D(1700), {big: (D(2), ENTRY), small: (D(1), ENTRY)}))
    async with stack.pool.acquire() as conn:
        assert await halt_instrument(conn, big, "ops@exchange", "wick under investigation")
    api = MarginCallClient(stack.client)
    policy = fast_policy(
        deadline=timedelta(seconds=1), liquidation=LiquidationPolicy(fraction_per_stage=D(1))
    )
    handle = await api.open_case(account, "call-1", policy)
    try:
        held = await _status_where(handle, lambda s: s.hold == contract.HOLD_HALTED)
        sold = {f.instrument for s in held.stages for f in s.fills}
        assert sold == {small}, sold
        assert big in (held.hold_reason or "")
        assert await until(lambda: _found(stack, account, f"MarginCallHold = '{contract.HOLD_HALTED}'"))
        async with stack.pool.acquire() as conn:
            sold_rows = await conn.fetch(
                "SELECT DISTINCT instrument FROM liquidation_fills WHERE account_id = $1", account
            )
        assert [r["instrument"] for r in sold_rows] == [small]
    finally:
        async with stack.pool.acquire() as conn:
            await resume_instrument(conn, big, "ops@exchange", "cleared")
    outcome = await finish(handle, "halt_resumed")
    assert outcome.state in (CaseState.RESTORED, CaseState.CLOSED_OUT, CaseState.BANKRUPT)
    assert big in {f.instrument for s in outcome.status.stages for f in s.fills}
    assert outcome.status.hold is None
