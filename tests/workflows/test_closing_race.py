"""A deposit signalled while the case is closing is ignored, never fails the case.

The case is closed (its state says so) before its close is on the ledger: the
``close_case`` activity still runs. A deposit reported by signal (``wait=False``)
in that window meets the closed-case refusal, which a signal cannot answer: it
goes to the worker's log, and the case completes with its outcome.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal

from temporalio import activity
from temporalio.worker import Worker

from activities.ledger import LedgerActivities
from tests.helpers import TEST_POLICIES, CaseStack, account_with, fast_policy
from workflows import contract
from workflows.case import MarginCallWorkflow
from workflows.contract import CaseClosing, CaseInput, CaseOutcome, CaseState, Deposit


async def test_a_deposit_signalled_while_the_case_closes_is_ignored(stack: CaseStack) -> None:
    account = await account_with(stack, "closing", "1000")  # above maintenance: closes CURED at once
    ledger = LedgerActivities(stack.pool, TEST_POLICIES)
    closing, release = asyncio.Event(), asyncio.Event()

    @activity.defn(name=contract.ACTIVITY_CLOSE_CASE)
    async def close_case(case: CaseClosing) -> None:
        """The ledger's close, held until the test has signalled the deposit."""
        closing.set()
        await release.wait()
        await ledger.close_case(case)

    queue = f"closing-{uuid.uuid4().hex[:8]}"
    async with Worker(
        stack.client,
        task_queue=queue,
        workflows=[MarginCallWorkflow],
        activities=[ledger.open_case, ledger.load_margin_snapshot, close_case],
    ):
        handle = await stack.client.start_workflow(
            contract.WORKFLOW_TYPE,
            CaseInput(account_id=account, call_id="closing-1", policy=fast_policy()),
            id=contract.workflow_id(account),
            task_queue=queue,
            # A local activity longer than this keeps the workflow task alive by
            # completing it: the signal then reaches the case while it closes.
            task_timeout=timedelta(seconds=2),
            result_type=CaseOutcome,
        )
        await asyncio.wait_for(closing.wait(), timeout=30)
        late = Deposit(account_id=account, deposit_id=f"{account}-late", amount=Decimal("5"), currency="USDT")
        await handle.signal(contract.SIGNAL_DEPOSIT, late)
        await asyncio.sleep(4)  # past two workflow task heartbeats: the handler has run
        release.set()
        outcome = await asyncio.wait_for(handle.result(), timeout=30)
    assert outcome.state == CaseState.CURED
    assert outcome.status.deposits_counted == []
