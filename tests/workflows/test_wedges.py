"""Nothing a caller sends can wedge a case, and cases that should open do.

A wedged case is one whose workflow task fails on every retry: it stays
RUNNING, writes nothing, and later opens for the account join it. The
``no_wedged_case`` check in conftest fails any of these tests that leaves a
WorkflowTaskFailed event behind; each test here also asserts where the case
ended up.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError

from activities.ledger import (
    LedgerActivities,
    collateral_account,
    credit_deposit,
    ensure_collateral_account,
    post_transfer,
)
from activities.ledger import reference as exchange
from tests.helpers import (
    CaseStack,
    account_with,
    fast_policy,
    finish,
    free_port,
    notice_kinds,
    start_raw,
    wait_state,
)
from worker.api import create_app
from worker.market import Trader, move_market, onboard, tiers
from worker.monitor import RiskMonitor
from worker.receiver import Behaviour
from worker.serving import serving
from workflows import contract
from workflows.client import MarginCallClient
from workflows.contract import CaseInput, CaseOutcome, CaseState, Deposit, Waiver
from workflows.domain.policies import STANDARD_BOOK, PolicyError, PolicyOverrides

CLOSED = {CaseState.CURED, CaseState.RESTORED, CaseState.CLOSED_OUT, CaseState.BANKRUPT, CaseState.WAIVED}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"call_id": "a/b"}, "call_id"),
        ({"call_id": "c" * 129}, "call_id"),
        ({"policy": {"deadline": "P3000000D"}}, "deadline"),
        ({"policy": {"reminders_before_deadline": ["P3000000D"]}}, "reminders_before_deadline"),
        ({"policy": {"pause_between_stages": "P3000000D"}}, "pause_between_stages"),
        ({"policy": {"hard_threshold": "NaN"}}, "hard_threshold"),
        ({"policy_name": "gold"}, "gold"),
        ({"unknown": 1}, "unknown"),
    ],
)
async def test_a_malformed_start_fails_the_case_at_once_naming_the_field(
    stack: CaseStack, change: dict[str, Any], named: str
) -> None:
    """Items 3 and 4: what used to raise in workflow code (or overflow) now fails the case, once."""
    account = await account_with(stack, "raw", "550")
    handle = await start_raw(stack, account, {"account_id": account, "call_id": "raw-1", **change})
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 20)
    message = str(failed.value.cause)
    assert named in message, message
    # The account is not held: a proper case opens at once.
    api = MarginCallClient(stack.client)
    again = await api.open_case(account, "raw-2", fast_policy(deadline=timedelta(seconds=60)))
    assert again.result_run_id != handle.result_run_id
    await wait_state(again, CaseState.AWAITING_DEPOSIT)
    await again.terminate("test done")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([], "input"),
        (["acct"], "JSON object"),
        ([None], "JSON object"),
        ([[1, 2]], "JSON object"),
        ([{"account_id": "x", "call_id": "y"}, {}], "one argument"),
    ],
    ids=["no input", "a string", "null", "a list", "two arguments"],
)
async def test_an_input_that_is_no_case_at_all_fails_at_once(
    stack: CaseStack, args: list[Any], named: str
) -> None:
    """Review finding: a non-object input used to fail decoding, hence every workflow task."""
    account = stack.account("shapeless")
    handle = await stack.client.start_workflow(
        contract.WORKFLOW_TYPE,
        args=args,
        id=contract.workflow_id(account),
        task_queue=contract.TASK_QUEUE,
        result_type=CaseOutcome,
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 20)
    assert named in str(failed.value.cause), failed.value.cause


async def test_the_longest_ids_open_liquidate_and_close(stack: CaseStack) -> None:
    """Item 3: a 128-character account id with a 128-character call id is a case like any other."""
    account = ("long-" + stack.account("x")).ljust(128, "z")
    await onboard(stack.pool, Trader(account, D(0), {"BTCUSDT": (D(1), D("49900"))}))
    deposit = Deposit(account_id=account, deposit_id=f"seed-{account[:100]}", amount=D(550), currency="USDT")
    await credit_deposit(stack.pool, deposit)
    api = MarginCallClient(stack.client)
    handle = await api.open_case(account, "c" * 128, fast_policy(deadline=timedelta(seconds=1)))
    outcome = await finish(handle, "long_ids")
    assert outcome.state in {CaseState.RESTORED, CaseState.CLOSED_OUT} and outcome.status.stages
    assert len(outcome.case_id) == 257
    # Two pairs can no longer name the same case: "/" is refused in a call id.
    with pytest.raises(ValidationError, match="call_id"):
        CaseInput(account_id="a", call_id="b/c")


async def test_figures_beyond_input_limits_do_not_stop_a_case(stack: CaseStack) -> None:
    """Item 5: a bankruptcy price of 2e15 used to fail validation on every read of the account."""
    account = stack.account("whale")
    await onboard(
        stack.pool,
        Trader(
            account,
            D("20000000"),
            {"BTCUSDT": (D("10000"), D("49900")), "ETHUSDT": (D("-0.00000001"), D("3000"))},
        ),
    )
    api = MarginCallClient(stack.client)
    outcome = await finish(await api.open_case(account, "w-1", fast_policy()), "whale")
    assert outcome.state == CaseState.CURED  # healthy: closed before any notice


async def test_a_settlement_currency_outside_the_decimals_table_is_liquidated(stack: CaseStack) -> None:
    """Item 6: a DAI account (the ledger says 18 decimals) used to fail every stage for ever."""
    account = stack.account("dai")
    async with stack.pool.acquire() as conn:
        await exchange.add_asset(conn, "DAI", 18, D(1))
        await exchange.add_instrument(conn, "BTCDAI", "DAI", tiers(("0", "0.004", "0.008")), D("49500"))
        await exchange.open_account(conn, account, "DAI")
        await exchange.set_position(conn, account, "BTCDAI", D(1), D("49900"))
        await post_transfer(
            conn,
            f"seed:{account}",
            "external:DAI",
            await ensure_collateral_account(conn, account, "DAI"),
            "DAI",
            D("550.000000000000000001"),
            "collateral_transfer",
        )
    api = MarginCallClient(stack.client)
    handle = await api.open_case(account, "dai-1", fast_policy(deadline=timedelta(seconds=1)))
    status = await wait_state(handle, CaseState.AWAITING_DEPOSIT, *CLOSED)
    assert status.deposit_needed == D("48.000000000000000000")  # 198 - 150.000000000000000001, rounded up
    outcome = await finish(handle, "dai")
    assert outcome.state in {CaseState.RESTORED, CaseState.CLOSED_OUT} and outcome.status.stages


async def test_a_closed_case_frees_the_account_at_once_while_the_notifier_is_down(stack: CaseStack) -> None:
    """Item 7: the close no longer waits for its notices; they are delivered from the outbox."""
    api = MarginCallClient(stack.client)
    stack.receiver.behaviour = Behaviour(status=503)
    account = await account_with(stack, "dark-close", "550")
    policy = fast_policy(deadline=timedelta(seconds=60), notice_delivery_window=timedelta(minutes=10))
    handle = await api.open_case(account, "d-1", policy)
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    async with stack.pool.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49900")})  # the market recovers: equity 550 > 199.6
    try:
        await api.handle(account).signal(contract.SIGNAL_RISK_ESCALATED, {})  # wake it to re-read
        outcome = await asyncio.wait_for(handle.result(), 10)  # not the 10-minute notice window
        assert outcome.state == CaseState.CURED
        assert f"{outcome.case_id}:opened" in outcome.status.notices_owed
        async with stack.pool.acquire() as conn:
            await move_market(conn, {"BTCUSDT": D("49500")})
        fresh = await api.open_case(account, "d-2", policy)
        assert fresh.result_run_id != handle.result_run_id
        await wait_state(fresh, CaseState.AWAITING_DEPOSIT)
        await fresh.terminate("test done")
    finally:
        stack.receiver.behaviour = Behaviour()
        async with stack.pool.acquire() as conn:
            await move_market(conn, {"BTCUSDT": D("49500")})
    # The notifier is back: the outbox delivers what the closed case owed.
    assert "margin_call.closed" in await notice_kinds(stack, account)


async def monitor_for(stack: CaseStack, **kwargs: Any) -> RiskMonitor:
    return RiskMonitor(
        LedgerActivities(stack.pool),
        MarginCallClient(stack.client),
        fast_policy(deadline=timedelta(minutes=10)),
        **kwargs,
    )


async def close_all_running(stack: CaseStack) -> None:
    """The shared ledger holds other tests' breached accounts: end what a monitor opened for them."""
    api = MarginCallClient(stack.client)
    for case in await api.list_cases():
        if case.running:
            try:
                await api.handle(case.account_id or "").terminate("monitor test done")
            except RPCError as error:  # visibility lags: it may have completed since the list
                assert "already completed" in str(error), error


async def test_every_breached_account_gets_a_case_whatever_the_count(stack: CaseStack) -> None:
    """Item 8: accounts whose cases are open no longer fill the scan and starve the rest."""
    api = MarginCallClient(stack.client)
    worst = [await account_with(stack, f"worst-{i}", "420") for i in range(3)]  # deepest shortfall first
    for account in worst:
        await api.open_case(account, "already-open", fast_policy(deadline=timedelta(minutes=10)))
    mild = await account_with(stack, "mild", "560")
    try:
        monitor = await monitor_for(stack, limit=1)  # one row per page: the scan must still read them all
        report = await monitor.tick()
        assert report.breaches >= 4
        handle = api.handle(mild)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    finally:
        await close_all_running(stack)


async def test_a_waive_holds_until_its_time_or_recovery_unless_the_hard_line_is_crossed(
    stack: CaseStack,
) -> None:
    """Item 9: after a waive the monitor opens no new case on the still-short account."""
    api = MarginCallClient(stack.client)
    staff = {"operator": "alice@support", "reason": "goodwill, approved by risk"}
    open_ended = await account_with(stack, "waive-open", "550")
    timed = await account_with(stack, "waive-timed", "550")
    try:
        for account, until in ((open_ended, None), (timed, datetime.now(UTC) + timedelta(seconds=3))):
            handle = await api.open_case(account, "w-1", fast_policy(deadline=timedelta(minutes=10)))
            await wait_state(handle, CaseState.AWAITING_DEPOSIT)
            await api.waive(account, Waiver(**staff, until=until))
            assert (await finish(handle, "waived_with_scope")).state == CaseState.WAIVED
        runs = {a: (await api.handle(a).describe()).run_id for a in (open_ended, timed)}
        monitor = await monitor_for(stack)
        report = await monitor.tick()
        assert report.waived >= 2
        assert {a: (await api.handle(a).describe()).run_id for a in runs} == runs  # no new case

        # Past the waive's time, the still-short account gets a new case.
        await asyncio.sleep(3.5)
        monitor._opened.clear()
        await monitor.tick()
        assert (await api.handle(timed).describe()).run_id != runs[timed]
        assert (await api.handle(open_ended).describe()).run_id == runs[open_ended]

        # The hard threshold overrides a waive: the account falls past half of maintenance.
        async with stack.pool.acquire() as conn:
            await post_transfer(
                conn,
                f"{open_ended}-out",
                collateral_account(open_ended, "USDT"),
                "external:USDT",
                "USDT",
                D("100"),
                "withdrawal",
            )
        await monitor.tick()
        assert (await api.handle(open_ended).describe()).run_id != runs[open_ended]
        async with stack.pool.acquire() as conn:
            waiver = await conn.fetchrow("SELECT ended_at FROM waivers WHERE account_id = $1", timed)
        assert waiver["ended_at"] is not None
    finally:
        await close_all_running(stack)


def test_the_operators_policies_bound_what_a_caller_may_ask() -> None:
    """Item 4: a caller names a policy and may override only within the operator's bounds."""
    book = STANDARD_BOOK
    assert book.resolve("standard", PolicyOverrides(deadline=timedelta(hours=1))).deadline == timedelta(
        hours=1
    )
    refusals = {
        "overrides.deadline": PolicyOverrides(deadline=timedelta(days=3_000_000)),
        "policy.deadline": PolicyOverrides(deadline=timedelta(days=10)),
        "policy.hard_threshold": PolicyOverrides(hard_threshold=D(0)),
        "policy.reminders_before_deadline": PolicyOverrides(reminders_before_deadline=[timedelta(days=10)]),
    }
    for words, overrides in refusals.items():
        with pytest.raises(PolicyError, match=words):
            book.resolve("standard", overrides)
    with pytest.raises(PolicyError, match="unknown policy"):
        book.resolve("gold")
    pausing = book.named("standard").defaults.model_copy(update={"pause_between_stages": timedelta(hours=1)})
    with pytest.raises(PolicyError, match="pause_between_stages: set by the operator"):
        book.check("standard", pausing)


async def test_the_http_api_opens_cases_only_within_the_operators_policies(stack: CaseStack) -> None:
    """Item 4 at the HTTP API: a caller names a policy; what the operator does not allow is a 422."""
    token = "open-and-act-0123456789"
    app = create_app(
        MarginCallClient(stack.client),
        stack.pool,
        {token: frozenset({"cases:open", "cases:act"})},
        STANDARD_BOOK,
    )
    account = await account_with(stack, "http-policy", "550")
    port = free_port()
    headers = {"Authorization": f"Bearer {token}"}
    async with serving(app, port), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        refusals: list[tuple[dict[str, Any], str]] = [
            ({"overrides": {"deadline": "P3000000D"}}, "overrides"),
            ({"overrides": {"deadline": "P20D"}}, "policy.deadline"),
            ({"overrides": {"hard_threshold": "0"}}, "policy.hard_threshold"),
            ({"overrides": {"pause_between_stages": "P3000000D"}}, "overrides"),
            ({"overrides": {"pause_between_stages": "PT0S"}}, "overrides.pause_between_stages"),
            ({"policy_name": "gold"}, "policy"),
            ({"policy": {"deadline": "PT1S"}}, "policy"),
        ]
        for extra, named in refusals:
            response = await http.post(
                "/v1/margin-calls", json={"account_id": account, "call_id": "h-1", **extra}, headers=headers
            )
            assert response.status_code == 422, (extra, response.text)
            assert response.json()["detail"].startswith(named), (extra, response.text)
        with pytest.raises(RPCError, match="not found"):
            await MarginCallClient(stack.client).handle(account).describe()  # nothing started
        opened = await http.post(
            "/v1/margin-calls",
            json={"account_id": account, "call_id": "h-1", "overrides": {"deadline": "PT1H"}},
            headers=headers,
        )
        assert opened.status_code == 202, opened.text
        handle = MarginCallClient(stack.client).handle(account)
        status = await wait_state(handle, CaseState.AWAITING_DEPOSIT)
        assert status.deadline is not None and status.deadline - status.opened_at == timedelta(hours=1)
        naive = await http.post(
            f"/v1/cases/{account}/waive",
            json={"operator": "alice", "reason": "goodwill", "until": "2030-01-01T00:00:00"},
            headers=headers,
        )
        assert naive.status_code == 422 and naive.json()["detail"].startswith("until"), naive.text
        until = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        waived = await http.post(
            f"/v1/cases/{account}/waive",
            json={"operator": "alice", "reason": "goodwill", "until": until},
            headers=headers,
        )
        assert waived.status_code == 200 and waived.json()["state"] == "WAIVED", waived.text
    async with stack.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT until, operator FROM waivers WHERE account_id = $1", account)
    assert row["operator"] == "alice" and row["until"] == datetime.fromisoformat(until)
