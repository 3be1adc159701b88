"""Messages that race each other and the clock: nothing counted twice, nothing lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from temporalio.api.enums.v1 import EventType

from activities.ledger import PostgresDeposits, collateral_account, credit_deposit
from tests.helpers import CaseStack, account_with, fast_policy, history_event_types, wait_state
from workflows import contract
from workflows.client import MarginCallClient
from workflows.contract import CaseState, Deposit, StaffAction

D = Decimal


async def balance(stack: CaseStack, account: str) -> Decimal:
    async with stack.pool.acquire() as conn:
        value: Decimal = await conn.fetchval(
            "SELECT balance FROM ledger_accounts WHERE ledger_account = $1",
            collateral_account(account, "USDT"),
        )
    return value


async def test_same_deposit_reported_concurrently_counts_once(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "twice", "550")
    handle = await api.open_case(account, "r-1", fast_policy(deadline=timedelta(seconds=60)))
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    deposit = Deposit(account_id=account, deposit_id=f"{account}-same", amount=D("5"), currency="USDT")
    reports = await asyncio.gather(
        *(api.report_deposit(PostgresDeposits(stack.pool), deposit) for _ in range(5)),
        *(api.report_deposit(PostgresDeposits(stack.pool), deposit, wait=False) for _ in range(5)),
    )
    assert sum(not r.booking.already_credited for r in reports) == 1
    receipts = [r.receipt for r in reports if r.receipt]
    assert sum(r.counted for r in receipts) <= 1
    status = await api.status(account)
    assert status.deposits_counted == [deposit.deposit_id]
    assert await balance(stack, account) == D("555")
    await handle.terminate("race test done")


async def test_a_deposit_landing_at_the_deadline_is_never_lost(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "photo", "550")
    handle = await api.open_case(account, "r-1", fast_policy(deadline=timedelta(seconds=3)))
    status = await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    assert status.deadline is not None
    # Credited and signalled as close to the deadline as we can aim: in the same workflow task or just after.
    await asyncio.sleep(max(0.0, (status.deadline - datetime.now(UTC)).total_seconds() - 0.02))
    await credit_deposit(
        stack.pool, Deposit(account_id=account, deposit_id=f"{account}-d", amount=D("60"), currency="USDT")
    )
    await handle.signal(
        contract.SIGNAL_DEPOSIT,
        Deposit(account_id=account, deposit_id=f"{account}-d", amount=D("60"), currency="USDT"),
    )
    outcome = await asyncio.wait_for(handle.result(), 30)
    # The ledger decides: the deadline re-read or the stage's own check sees the money; nothing is sold.
    assert outcome.state == CaseState.CURED, outcome.status.timeline
    assert outcome.status.stages == []
    assert await balance(stack, account) == D("610")


async def test_a_deposit_credited_without_a_message_still_cures_at_the_deadline(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "quiet", "550")
    handle = await api.open_case(account, "r-1", fast_policy(deadline=timedelta(seconds=2)))
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    await credit_deposit(
        stack.pool, Deposit(account_id=account, deposit_id=f"{account}-q", amount=D("60"), currency="USDT")
    )
    outcome = await asyncio.wait_for(handle.result(), 30)
    assert outcome.state == CaseState.CURED and outcome.status.stages == []


async def test_staff_waive_racing_a_curing_deposit(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "race", "550")
    handle = await api.open_case(account, "r-1", fast_policy(deadline=timedelta(seconds=60)))
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    deposit = Deposit(account_id=account, deposit_id=f"{account}-cure", amount=D("100"), currency="USDT")
    results = await asyncio.gather(
        api.waive(account, StaffAction(operator="zoe", reason="race test")),
        api.report_deposit(PostgresDeposits(stack.pool), deposit),
        return_exceptions=True,
    )
    outcome = await asyncio.wait_for(handle.result(), 30)
    assert outcome.state in (CaseState.WAIVED, CaseState.CURED), results
    assert outcome.status.stages == []
    assert await balance(stack, account) == D("650")  # the deposit counted exactly once either way
    types = await history_event_types(handle)
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in types
