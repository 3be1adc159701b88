"""The risk monitor opens one case per breached account and escalates past the hard line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from activities.ledger import LedgerActivities, LedgerFeeds, reference
from tests.helpers import TEST_POLICIES, VIP_DEADLINE, CaseStack, account_with, fast_policy, wait_state
from worker.market import LISTINGS, Trader, onboard
from worker.monitor import RiskMonitor
from workflows.client import MarginCallClient
from workflows.contract import CaseState


async def test_monitor_opens_cases_once_and_escalates(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    healthy = await account_with(stack, "mon-ok", "700")
    breached = await account_with(stack, "mon-breach", "550")
    deep = await account_with(stack, "mon-deep", "450")
    monitor = RiskMonitor(LedgerActivities(stack.pool), api, fast_policy(deadline=timedelta(minutes=10)))
    first = await monitor.tick()
    assert first.breaches >= 2 and first.opened >= 2
    ours = {breached, deep}
    runs = {a: (await api.handle(a).describe()).run_id for a in ours}
    monitor._opened.clear()  # forget, so the next tick starts again: it must join, not duplicate
    await monitor.tick()
    assert {a: (await api.handle(a).describe()).run_id for a in ours} == runs
    # An open case whose account falls past the hard line is told by the next scan.
    async with stack.pool.acquire() as conn:
        from activities.ledger import collateral_account, post_transfer

        await post_transfer(
            conn,
            f"{breached}-fee",
            collateral_account(breached, "USDT"),
            "external:USDT",
            "USDT",
            D("120"),
            "withdrawal",
        )
    third = await monitor.tick()
    assert third.escalated >= 1
    breached_outcome = await api.handle(breached).result()
    assert breached_outcome.status.stages
    assert breached_outcome.status.stages[0].executed_at < breached_outcome.status.deadline  # type: ignore[operator]
    deep_outcome = await api.handle(deep).result()
    assert deep_outcome.status.stages and deep_outcome.state != CaseState.CURED
    assert deep_outcome.status.stages[0].executed_at < deep_outcome.status.deadline  # type: ignore[operator]
    try:
        await api.handle(healthy).describe()
        raise AssertionError("a healthy account got a case")
    except Exception as error:
        assert "not found" in str(error).lower()
    # Close every case this monitor opened for other tests' leftover accounts too.
    for case in await api.list_cases():
        if case.running:
            try:
                await api.handle(case.account_id or "").terminate("monitor test done")
            except RPCError as error:  # visibility lags: it may have completed since the list
                assert "already completed" in str(error), error
    assert (await api.handle(breached).describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_the_monitor_calls_no_one_on_a_stale_mark(stack: CaseStack) -> None:
    """An account in breach only at a mark the exchange no longer stands behind gets no case."""
    api = MarginCallClient(stack.client)
    # An instrument of this test's own, so that its old mark holds no other test's accounts.
    async with stack.pool.acquire() as conn:
        await reference.add_instrument(conn, "MONSTALE", "USDT", LISTINGS["ETHUSDT"][1], D("3000"))
        await reference.set_mark_price(conn, "MONSTALE", D("2950"), datetime.now(UTC) - timedelta(minutes=5))
    await onboard(stack.pool, Trader("mon-stale", D("50"), {"MONSTALE": (D("10"), D("3000"))}))
    monitor = RiskMonitor(LedgerActivities(stack.pool), api, fast_policy(deadline=timedelta(minutes=10)))
    report = await monitor.tick()
    assert report.unpriced >= 1
    try:
        await api.handle("mon-stale").describe()
        raise AssertionError("an account breached only on a stale mark got a case")
    except RPCError as error:
        assert "not found" in str(error).lower(), error


async def test_the_monitor_holds_each_account_to_the_policy_the_exchange_named(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    vip = await account_with(stack, "mon-vip", "550")
    feeds = LedgerFeeds(stack.pool, TEST_POLICIES)
    account = {"kind": "account", "account_id": vip, "settlement_currency": "USDT"}
    named = await feeds.reference([{**account, "policy_name": "vip"}], operator="test")
    assert named.applied == 1, named
    # A name the operator's book does not have is refused, naming the field; the account keeps "vip".
    unknown = await feeds.reference([{**account, "policy_name": "gold"}], operator="test")
    assert unknown.refused == 1 and (unknown.records[0].detail or "").startswith("policy_name: 'gold'")

    standard = fast_policy(deadline=timedelta(minutes=10))
    monitor = RiskMonitor(LedgerActivities(stack.pool), api, standard, policies=TEST_POLICIES)
    assert (await monitor.tick()).opened >= 1
    status = await wait_state(api.handle(vip), CaseState.AWAITING_DEPOSIT)
    assert status.deadline is not None and status.deadline - status.opened_at == VIP_DEADLINE
    await api.handle(vip).terminate("monitor test done")
