"""Support staff actions: accepted and refused, with operator and reason on record."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError

from tests.helpers import (
    CaseStack,
    account_with,
    fast_policy,
    finish,
    history_event_types,
    notice_kinds,
    settled,
    wait_state,
)
from workflows import contract
from workflows.client import MarginCallClient
from workflows.contract import CaseState, DeadlineExtension, StaffAction

ALICE = StaffAction(operator="alice@support", reason="client's wire is in transit, ref 8812")


async def case_events(stack: CaseStack, case_id: str) -> list[tuple[str, str, str]]:
    async with stack.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT kind, operator, reason FROM case_events WHERE case_id = $1 ORDER BY at", case_id
        )
    return [(r["kind"], r["operator"], r["reason"]) for r in rows]


async def test_waive_closes_without_liquidation_with_operator_on_record(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "waive", "550")
    handle = await api.open_case(account, "call-1", fast_policy(deadline=timedelta(seconds=60)))
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    status = await api.waive(account, ALICE)
    assert status.state == CaseState.WAIVED
    outcome = await finish(handle, "waived")
    assert outcome.state == CaseState.WAIVED and outcome.status.stages == []
    assert any("alice@support" in e.what and "8812" in e.what for e in outcome.status.timeline)
    assert await case_events(stack, outcome.case_id) == [("waive", ALICE.operator, ALICE.reason)]
    await notice_kinds(stack, account)  # the staff notice may still be in the outbox
    staff_notices = stack.receiver.of_kind("margin_call.staff_action", outcome.case_id)
    assert staff_notices and staff_notices[0]["operator"] == ALICE.operator
    assert staff_notices[0]["reason"] == ALICE.reason
    # The update and its arguments are in the history, operator and reason included.
    found = False
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            payload = event.workflow_execution_update_accepted_event_attributes.accepted_request.input.args
            found = found or b"alice@support" in payload.payloads[0].data
    assert found


async def test_extend_deadline_moves_it_later_and_refuses_earlier_or_too_far(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "extend", "550")
    policy = fast_policy(deadline=timedelta(seconds=3), max_deadline_extension=timedelta(seconds=30))
    handle = await api.open_case(account, "call-1", policy)
    status = await settled(handle)
    assert status.deadline is not None
    before = len(await history_event_types(handle))
    refusals = [
        (status.deadline - timedelta(seconds=1), "later than the current deadline"),
        (status.deadline + timedelta(minutes=5), "policy allows at most"),
    ]
    for new_deadline, words in refusals:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await api.extend_deadline(
                account, DeadlineExtension(operator="bob", reason="test", new_deadline=new_deadline)
            )
        assert words in str(refused.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            contract.UPDATE_EXTEND_DEADLINE,
            {"operator": "", "reason": "x", "new_deadline": status.deadline.isoformat()},
        )
    assert "operator" in str(refused.value.cause)
    assert len(await history_event_types(handle)) == before  # refusals left nothing
    later = status.deadline + timedelta(seconds=4)
    extended = await api.extend_deadline(
        account, DeadlineExtension(operator="bob", reason="wire confirmed", new_deadline=later)
    )
    assert extended.deadline == later
    outcome = await finish(handle, "extended_then_liquidated")
    assert outcome.status.stages and outcome.status.stages[0].executed_at >= later
    assert await case_events(stack, outcome.case_id) == [("extend_deadline", "bob", "wire confirmed")]
    # Once liquidation has begun (here: closed), staff actions are refused.
    with pytest.raises(Exception, match=r"cannot|completed|not found"):
        await api.waive(account, ALICE)


async def test_force_liquidation_starts_now(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "force", "550")
    handle = await api.open_case(account, "call-1", fast_policy(deadline=timedelta(minutes=10)))
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    await api.force_liquidation(account, ALICE)
    outcome = await finish(handle, "forced")
    assert outcome.status.stages
    assert outcome.status.stages[0].executed_at < outcome.status.deadline  # type: ignore[operator]
    assert await case_events(stack, outcome.case_id) == [("force_liquidation", ALICE.operator, ALICE.reason)]


async def test_waive_refused_once_liquidating(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "late-waive", "550")
    policy = fast_policy(deadline=timedelta(seconds=1), pause_between_stages=timedelta(seconds=3))
    handle = await api.open_case(account, "call-1", policy)
    await wait_state(handle, CaseState.LIQUIDATING)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await api.waive(account, ALICE)
    assert "cannot waive" in str(refused.value.cause)
    outcome = await finish(handle, "liquidated_despite_late_waive")
    assert outcome.state != CaseState.WAIVED
    assert Decimal(0) < outcome.status.fees_to_insurance_fund
