"""Every path of a case, against a real dev server, PostgreSQL and webhook receiver.

Accounts are long 1 BTCUSDT entered at 49,900 and marked at 49,500 (PnL -400,
maintenance 198, hard threshold at equity 99), so the collateral decides the
path: 700 is healthy, 550 is in breach, 450 is past the hard threshold, 100 is
bankrupt on close-out.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError

from activities.ledger import PostgresDeposits, collateral_account
from activities.ledger import reference as exchange
from tests.helpers import (
    MARK,
    CaseStack,
    account_with,
    fast_policy,
    finish,
    history_event_types,
    notice_kinds,
    settled,
    wait_state,
)
from worker.market import move_market
from worker.receiver import Behaviour
from workflows import contract
from workflows.client import MarginCallClient
from workflows.contract import CaseState, CaseStatus, Deposit, RiskEscalation
from workflows.domain.liquidation import LiquidationPolicy

D = Decimal


async def test_cured_before_notice(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "healthy", "700")
    outcome = await finish(await api.open_case(account, "call-1", fast_policy()), "cured_before_notice")
    assert outcome.state == CaseState.CURED
    assert (await notice_kinds(stack, account)) == []
    async with stack.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT state, closed_at FROM margin_call_cases WHERE account_id = $1", account
        )
    assert row["state"] == "CURED" and row["closed_at"] is not None


async def test_cured_by_deposit_with_a_duplicate_counted_once(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "cure", "550")
    handle = await api.open_case(account, "call-1", fast_policy(deadline=timedelta(seconds=60)))
    status = await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    assert status.deposit_needed == D("48")  # 198 - 150

    small = Deposit(account_id=account, deposit_id=f"{account}-d1", amount=D("10"), currency="USDT")
    first = await api.report_deposit(PostgresDeposits(stack.pool), small)
    assert first.receipt is not None and first.receipt.counted
    assert first.receipt.state == CaseState.AWAITING_DEPOSIT and first.receipt.shortfall == D("38")
    again = await api.report_deposit(PostgresDeposits(stack.pool), small)
    assert again.booking.already_credited and again.receipt is not None and not again.receipt.counted

    enough = Deposit(account_id=account, deposit_id=f"{account}-d2", amount=D("38"), currency="USDT")
    cured = await api.report_deposit(PostgresDeposits(stack.pool), enough)
    assert cured.receipt is not None and cured.receipt.state == CaseState.CURED
    outcome = await finish(handle, "cured_by_deposit")
    assert outcome.state == CaseState.CURED
    assert outcome.status.deposits_counted == [f"{account}-d1", f"{account}-d2"]
    assert outcome.status.stages == []
    assert (await notice_kinds(stack, account)) == ["margin_call.closed", "margin_call.opened"]
    opened = stack.receiver.of_kind("margin_call.opened", outcome.case_id)[0]
    assert D(opened["deposit_needed"]) == D("48") and opened["deadline"] is not None
    async with stack.pool.acquire() as conn:
        balance = await conn.fetchval(
            "SELECT balance FROM ledger_accounts WHERE ledger_account = $1",
            collateral_account(account, "USDT"),
        )
    assert balance == D("598")  # 550 + 10 once + 38

    # After the case closed, a deposit is still credited; no case is started.
    late = Deposit(account_id=account, deposit_id=f"{account}-d3", amount=D("5"), currency="USDT")
    report = await api.report_deposit(PostgresDeposits(stack.pool), late)
    assert not report.case_open and not report.booking.already_credited


async def test_cured_by_the_market_recovering(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "recover", "550")
    handle = await api.open_case(account, "call-1", fast_policy(deadline=timedelta(seconds=2)))
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    async with stack.pool.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49800")})
    outcome = await finish(handle, "cured_by_market_recovery")
    async with stack.pool.acquire() as conn:
        await move_market(conn, {"BTCUSDT": MARK})
    assert outcome.state == CaseState.CURED and outcome.status.stages == []


async def test_restored_after_partial_stages(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "restore", "550")
    policy = fast_policy(deadline=timedelta(seconds=1), pause_between_stages=timedelta(milliseconds=200))
    outcome = await finish(await api.open_case(account, "call-1", policy), "restored_after_stages")
    assert outcome.state == CaseState.RESTORED
    stages = outcome.status.stages
    assert len(stages) >= 2
    assert all(s.fills[0].quantity < 1 for s in stages)
    # Each stage but the last left the account in breach; the last brought it back.
    assert all(s.equity_after < s.maintenance_after for s in stages[:-1])
    assert stages[-1].equity_after >= stages[-1].maintenance_after
    assert outcome.status.fees_to_insurance_fund == sum((s.fee for s in stages), D(0)) > 0
    assert (await notice_kinds(stack, account)).count("margin_call.liquidation_stage") == len(stages)
    async with stack.pool.acquire() as conn:
        fills = await conn.fetchval(
            "SELECT count(*) FROM liquidation_fills WHERE case_id = $1", outcome.case_id
        )
    assert fills == len(stages)


async def test_closed_out_when_every_position_is_sold(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "closeout", "550")
    policy = fast_policy(
        deadline=timedelta(seconds=1),
        liquidation=LiquidationPolicy(fraction_per_stage=D(1), fee_rate=D("0.005"), slippage=D("0.001")),
    )
    outcome = await finish(await api.open_case(account, "call-1", policy), "closed_out")
    assert outcome.state == CaseState.CLOSED_OUT
    assert len(outcome.status.stages) == 1
    assert outcome.status.stages[0].fills[0].quantity == 1
    # The fee was capped at what was left: the trader ends at zero, not below.
    assert outcome.status.equity == 0


async def test_bankrupt_with_the_insurance_fund(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "bankrupt", "100")
    async with stack.pool.acquire() as conn:
        # Other tests' bankruptcies share this fund: make sure it can cover this one in full.
        await exchange.fund_insurance(conn, "USDT", D("1000"), f"top-up:{account}")
        fund_before = await conn.fetchval(
            "SELECT balance FROM ledger_accounts WHERE ledger_account = 'insurance_fund:USDT'"
        )
    handle = await api.open_case(account, "call-1", fast_policy(deadline=timedelta(seconds=60)))
    outcome = await finish(handle, "bankrupt")
    assert outcome.state == CaseState.BANKRUPT
    status = outcome.status
    # 100 collateral - 424.75 realised (1 BTC from 49,900 sold at 49,500 less 0.05 %), no fee left to take
    assert status.insurance_fund_used == D("324.75")
    assert status.uncovered_loss == 0 and status.equity == 0
    async with stack.pool.acquire() as conn:
        fund_after = await conn.fetchval(
            "SELECT balance FROM ledger_accounts WHERE ledger_account = 'insurance_fund:USDT'"
        )
        settled = await conn.fetchrow(
            "SELECT * FROM bankruptcy_settlements WHERE case_id = $1", outcome.case_id
        )
    assert fund_after == fund_before - status.insurance_fund_used
    assert settled["covered_by_fund"] == status.insurance_fund_used


async def test_hard_threshold_liquidates_before_the_deadline(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "hard", "450")  # equity 50 < 99
    handle = await api.open_case(account, "call-1", fast_policy(deadline=timedelta(minutes=10)))
    outcome = await finish(handle, "hard_threshold")
    assert outcome.status.stages, "liquidated"
    assert outcome.status.stages[0].executed_at < outcome.status.deadline  # type: ignore[operator]
    # So far below maintenance that selling costs more than it frees: it runs to the end.
    assert outcome.state in (CaseState.CLOSED_OUT, CaseState.BANKRUPT)


async def test_risk_escalation_from_the_monitor_starts_liquidation(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "escalate", "550")
    handle = await api.open_case(account, "call-1", fast_policy(deadline=timedelta(minutes=10)))
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    # The account's own collateral shrinks past the hard line (e.g. a fee settled elsewhere).
    async with stack.pool.acquire() as conn:
        from activities.ledger import post_transfer

        await post_transfer(
            conn,
            f"{account}-debit",
            collateral_account(account, "USDT"),
            "external:USDT",
            "USDT",
            D("100"),
            "withdrawal",
        )
    await handle.signal(
        contract.SIGNAL_RISK_ESCALATED, RiskEscalation(equity=D(50), maintenance_margin=D(198))
    )
    outcome = await finish(handle, "risk_escalation")
    assert outcome.status.stages and outcome.status.stages[0].executed_at < outcome.status.deadline  # type: ignore[operator]
    # What the monitor saw is on the record; the case acted on the ledger's figures.
    assert any(
        "risk monitor saw equity 50.00 against maintenance 198.00" in e.what for e in outcome.status.timeline
    )


async def test_reminders_before_the_deadline(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "remind", "550")
    policy = fast_policy(
        deadline=timedelta(seconds=4),
        reminders_before_deadline=[timedelta(seconds=3), timedelta(seconds=1)],
    )
    outcome = await finish(await api.open_case(account, "call-1", policy), "reminders")
    await notice_kinds(stack, account)
    reminders = stack.receiver.of_kind("margin_call.reminder", outcome.case_id)
    assert len(reminders) == 2
    assert {r["notice_id"] for r in reminders} == {
        f"{outcome.case_id}:reminder:1",
        f"{outcome.case_id}:reminder:2",
    }
    assert outcome.status.stages  # the deadline passed without a deposit


async def test_refused_deposit_leaves_no_trace_in_history(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "refuse", "550")
    handle = await api.open_case(account, "call-1", fast_policy(deadline=timedelta(seconds=60)))
    await settled(handle)
    before = await history_event_types(handle)
    bad_inputs = [
        ({"deposit_id": "x1", "amount": "10", "currency": "USDC"}, "currency"),
        ({"deposit_id": "x2", "amount": "1.1234567", "currency": "USDT"}, "decimal places"),
        ({"deposit_id": "x3", "amount": "-5", "currency": "USDT"}, "positive"),
        ({"deposit_id": "x4", "amount": "NaN", "currency": "USDT"}, "finite"),
        ({"deposit_id": "x5", "amount": 10.5, "currency": "USDT"}, "decimal string"),
        ({"deposit_id": "x6", "currency": "USDT"}, "amount"),
        # Credited to another account: that account's case counts it, never this one.
        (
            {"account_id": "someone-else", "deposit_id": "x7", "amount": "10", "currency": "USDT"},
            "account_id",
        ),
        ({"account_id": None, "deposit_id": "x8", "amount": "10", "currency": "USDT"}, "account_id"),
    ]
    for payload, words in bad_inputs:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(contract.UPDATE_SUBMIT_DEPOSIT, payload)
        assert words in str(refused.value.cause), (payload, refused.value.cause)
    after = await history_event_types(handle)
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED not in after
    assert len(after) == len(before)
    status = await handle.query(contract.QUERY_STATUS, result_type=CaseStatus)
    assert status.deposits_counted == []
    await handle.terminate("test done")


async def test_second_start_joins_the_open_case(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "join", "550")
    first, second = await asyncio.gather(
        api.open_case(account, "call-1", fast_policy(deadline=timedelta(seconds=60))),
        api.open_case(account, "call-2", fast_policy(deadline=timedelta(seconds=60))),
    )
    assert first.result_run_id == second.result_run_id
    status = await wait_state(first, CaseState.AWAITING_DEPOSIT)
    async with stack.pool.acquire() as conn:
        cases = await conn.fetchval("SELECT count(*) FROM margin_call_cases WHERE account_id = $1", account)
    assert cases == 1 and status.call_id in ("call-1", "call-2")
    await first.terminate("test done")


NOTIFIER_FAULTS = {
    "down": Behaviour(status=503),
    "500": Behaviour(status=500),
    "429": Behaviour(status=429, retry_after=30),
    "410": Behaviour(status=410),
    "hangs": Behaviour(delay_seconds=20),
}


@pytest.mark.parametrize("fault", list(NOTIFIER_FAULTS))
async def test_notifier_faults_for_the_whole_case_do_not_delay_liquidation(
    stack: CaseStack, fault: str
) -> None:
    api = MarginCallClient(stack.client)
    stack.receiver.behaviour = NOTIFIER_FAULTS[fault]
    account = await account_with(stack, "dark", "550")
    policy = fast_policy(deadline=timedelta(seconds=2), notice_delivery_window=timedelta(seconds=4))
    record = "notifier_down" if fault == "down" else f"notifier_{fault}"
    outcome = await finish(await api.open_case(account, "call-1", policy), record)
    status = outcome.status
    assert status.stages
    lateness = status.stages[0].executed_at - status.deadline  # type: ignore[operator]
    assert lateness < timedelta(seconds=2), lateness
    assert (await notice_kinds(stack, account)) == []
    assert status.notices_sent == 0
    # What the case still owed at its close went to the outbox, which gave up after the window.
    owed = set(status.notices_failed) | set(status.notices_owed)
    assert {f"{outcome.case_id}:opened", f"{outcome.case_id}:closed"} <= owed
    async with stack.pool.acquire() as conn:
        given_up = await conn.fetch(
            "SELECT notice_id FROM notice_outbox WHERE case_id = $1 AND failed_at IS NOT NULL",
            outcome.case_id,
        )
    assert set(status.notices_owed) == {r["notice_id"] for r in given_up}
