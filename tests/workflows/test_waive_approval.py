"""Two people for a large waive: above the policy's amount a waive waits for a second operator.

Real parts throughout: the case on the shared Temporal dev server, its ledger in
PostgreSQL, its notices over HTTP. The accounts here are 48 USDT short of
maintenance, so a policy amount of 10 makes every waive "large" and 100 keeps
it "small".
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from pydantic import ValidationError
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from activities.ledger import LedgerActivities
from tests.helpers import (
    TEST_POLICIES,
    CaseStack,
    account_with,
    fast_policy,
    finish,
    history_event_types,
    notice_kinds,
    open_case,
    settled,
    until,
    wait_state,
)
from worker.config import DEV_WEBHOOK_SECRET
from worker.market import Trader, onboard
from worker.worker import running_worker
from workflows import contract
from workflows.client import MarginCallClient
from workflows.contract import (
    CaseClosing,
    CaseOutcome,
    CaseState,
    CaseStatus,
    StaffAction,
    Waiver,
    WaiverApproval,
)
from workflows.domain.policies import STANDARD_BOOK, CasePolicy, PolicyError, PolicyOverrides

ALICE = Waiver(operator="alice@support", reason="fee dispute upheld, ticket 77")
BOB = StaffAction(operator="bob@risk", reason="checked ticket 77 against the fee schedule")
LARGE = Decimal("10")  # the accounts' shortfall (48 USDT) is above it
SMALL = Decimal("100")  # and below this


async def refusal(call: Any) -> str:
    """The words of the case's refusal of an update."""
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await call
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError)
    return cause.message


async def case_events(stack: CaseStack, case_id: str) -> list[tuple[str, str, str]]:
    async with stack.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT kind, operator, reason FROM case_events WHERE case_id = $1 ORDER BY at", case_id
        )
    return [(r["kind"], r["operator"], r["reason"]) for r in rows]


async def waiver_row(stack: CaseStack, case_id: str) -> asyncpg.Record | None:
    async with stack.pool.acquire() as conn:
        row: asyncpg.Record | None = await conn.fetchrow("SELECT * FROM waivers WHERE case_id = $1", case_id)
    return row


async def open_awaiting(
    stack: CaseStack, name: str, **policy: Any
) -> tuple[str, WorkflowHandle[Any, CaseOutcome]]:
    account = await account_with(stack, name, "550")
    values: dict[str, Any] = {"deadline": timedelta(seconds=60), **policy}
    handle = await MarginCallClient(stack.client).open_case(account, "call-1", fast_policy(**values))
    await settled(handle)
    return account, handle


def said(status: CaseStatus, *words: str) -> bool:
    return any(all(w in entry.what for w in words) for entry in status.timeline)


async def test_a_small_waive_acts_at_once_as_before(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account, handle = await open_awaiting(stack, "waive-small", waive_approval_above=SMALL)
    status = await api.waive(account, ALICE)
    assert status.state == CaseState.WAIVED and status.pending_waiver is None
    assert status.waiver is not None and status.waiver.operator == ALICE.operator
    assert status.waiver_approval is None
    outcome = await finish(handle, "waive_small_under_the_rule")
    row = await waiver_row(stack, outcome.case_id)
    assert row is not None and row["operator"] == ALICE.operator and row["approved_by"] is None


async def test_a_large_waive_waits_for_a_second_operator_and_both_names_are_on_record(
    stack: CaseStack,
) -> None:
    api = MarginCallClient(stack.client)
    within = timedelta(minutes=5)
    account, handle = await open_awaiting(
        stack, "waive-large", waive_approval_above=LARGE, waive_approval_within=within
    )

    requested = await api.waive(account, ALICE)
    # Requested, not in effect: the case still waits for money and its deadline runs on.
    assert requested.state == CaseState.AWAITING_DEPOSIT and requested.waiver is None
    pending = requested.pending_waiver
    assert pending is not None
    assert (pending.operator, pending.reason, pending.shortfall) == (
        ALICE.operator,
        ALICE.reason,
        Decimal(48),
    )
    assert pending.expires_at - pending.requested_at == within
    assert said(requested, "waive requested", "second operator", ALICE.operator)

    before = len(await history_event_types(handle))
    # A second waive while one is pending is refused, naming the one pending.
    second = await refusal(api.waive(account, Waiver(operator="carol@support", reason="same ticket")))
    assert second.startswith("state:") and "pending approval" in second and ALICE.operator in second
    # The requester cannot approve their own waive, however the name is cased or spaced.
    for name in (ALICE.operator, "ALICE@Support", "  alice@support "):
        own = await refusal(api.approve_waive(account, StaffAction(operator=name, reason="ok")))
        assert own.startswith("operator:") and "second operator" in own, own
    blank = await refusal(
        handle.execute_update(contract.UPDATE_APPROVE_WAIVE, {"operator": "", "reason": "x"})
    )
    assert "operator" in blank
    assert len(await history_event_types(handle)) == before  # refusals leave nothing in history

    approved = await api.approve_waive(account, BOB)
    assert approved.state == CaseState.WAIVED and approved.pending_waiver is None
    assert approved.waiver is not None and approved.waiver.operator == ALICE.operator
    assert approved.waiver_approval is not None and approved.waiver_approval.operator == BOB.operator
    assert approved.waiver_approval.requested_at == pending.requested_at

    outcome = await finish(handle, "waive_approved")
    status = outcome.status
    assert outcome.state == CaseState.WAIVED and status.stages == []
    assert said(status, f"waive by {ALICE.operator} approved", f"by {BOB.operator}: {BOB.reason}")
    assert said(status, "closed WAIVED", ALICE.operator, f"approved by {BOB.operator}")
    # The ledger: the audit trail, the case record and the waiver's row carry both names.
    assert await case_events(stack, outcome.case_id) == [
        ("waive", ALICE.operator, ALICE.reason),
        ("approve_waive", BOB.operator, BOB.reason),
    ]
    row = await waiver_row(stack, outcome.case_id)
    assert row is not None
    assert (row["operator"], row["reason"]) == (ALICE.operator, ALICE.reason)
    assert (row["approved_by"], row["approval_reason"]) == (BOB.operator, BOB.reason)
    assert row["requested_at"] == pending.requested_at and row["approved_at"] >= row["requested_at"]
    async with stack.pool.acquire() as conn:
        recorded = json.loads(
            await conn.fetchval("SELECT outcome FROM margin_call_cases WHERE case_id = $1", outcome.case_id)
        )
    assert recorded["waiver"]["operator"] == ALICE.operator
    assert recorded["waiver_approval"]["operator"] == BOB.operator
    # The trader hears of the waive once it is in effect (the approval), never of the request.
    await notice_kinds(stack, account)
    staff = stack.receiver.of_kind("margin_call.staff_action", outcome.case_id)
    assert [(n["operator"], n["reason"]) for n in staff] == [(BOB.operator, BOB.reason)]


async def test_an_approval_with_nothing_pending_is_refused(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account, handle = await open_awaiting(stack, "waive-none", waive_approval_above=LARGE)
    before = len(await history_event_types(handle))
    words = await refusal(api.approve_waive(account, BOB))
    assert words.startswith("state:") and "no waive is pending approval" in words
    assert len(await history_event_types(handle)) == before
    await api.force_liquidation(account, BOB)
    outcome = await finish(handle, "approval_with_nothing_pending")
    assert outcome.state != CaseState.WAIVED


async def test_an_unapproved_waive_expires_in_the_timeline_and_a_late_approval_is_refused(
    stack: CaseStack,
) -> None:
    api = MarginCallClient(stack.client)
    account, handle = await open_awaiting(
        stack, "waive-expiry", waive_approval_above=LARGE, waive_approval_within=timedelta(seconds=2)
    )
    requested = await api.waive(account, ALICE)
    assert requested.pending_waiver is not None

    async def expired() -> CaseStatus | None:
        status = await api.status(account)
        return status if status.pending_waiver is None else None

    # The case's own timer ends the request at its time, with nobody asking.
    status = await until(expired)
    assert status.state == CaseState.AWAITING_DEPOSIT
    assert said(status, f"waive requested by {ALICE.operator} lapsed without approval", "expired")
    late = await refusal(api.approve_waive(account, BOB))
    assert late.startswith("state:") and "no waive is pending" in late and "expired" in late
    # A new request may follow, and a second operator may approve that one.
    carol = Waiver(operator="carol@support", reason="ticket 77, asked again")
    assert (await api.waive(account, carol)).pending_waiver is not None
    assert (await api.approve_waive(account, BOB)).state == CaseState.WAIVED
    outcome = await finish(handle, "waive_expired_then_approved")
    row = await waiver_row(stack, outcome.case_id)
    assert row is not None and (row["operator"], row["approved_by"]) == (carol.operator, BOB.operator)


async def test_an_approval_that_reaches_the_case_with_its_expiry_is_refused(stack: CaseStack) -> None:
    """The expiry and a late approval in one workflow task: the approval is checked first, and refused.

    The case runs on a worker of its own that is stopped while the request
    expires, so that the timer's firing and the approval wait for the same task.
    """
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "waive-race", "550")
    queue = f"waive-race-{account}"
    policy = fast_policy(
        deadline=timedelta(seconds=60), waive_approval_above=LARGE, waive_approval_within=timedelta(seconds=2)
    )

    def worker() -> Any:
        return running_worker(
            stack.client,
            stack.database_url,
            stack.notifier_url,
            DEV_WEBHOOK_SECRET,
            sandboxed=True,
            policies=TEST_POLICIES,
            task_queue=queue,
        )

    async with worker():
        handle = await stack.client.start_workflow(
            contract.WORKFLOW_TYPE,
            {"account_id": account, "call_id": "call-1", "policy": policy.model_dump(mode="json")},
            id=contract.workflow_id(account),
            task_queue=queue,
            result_type=CaseOutcome,
        )
        await settled(handle)
        pending = (await api.waive(account, ALICE)).pending_waiver
        assert pending is not None
    await asyncio.sleep(max((pending.expires_at - datetime.now(UTC)).total_seconds(), 0) + 1)
    approval = asyncio.create_task(api.approve_waive(account, BOB))
    await asyncio.sleep(0.5)
    async with worker():
        late = await refusal(approval)
        assert late.startswith("state:") and "expired" in late, late

        async def lapsed() -> CaseStatus | None:
            status = await api.status(account)
            return status if status.pending_waiver is None else None

        status = await until(lapsed)
        assert status.state == CaseState.AWAITING_DEPOSIT
        assert said(status, "lapsed without approval", "expired")
        await api.force_liquidation(account, BOB)
        outcome = await finish(handle, "approval_with_expiry")
    assert outcome.state != CaseState.WAIVED


async def test_a_waive_pending_at_the_deadline_never_holds_up_liquidation(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "waive-deadline", "550")
    policy = fast_policy(
        deadline=timedelta(seconds=4),
        pause_between_stages=timedelta(seconds=3),
        waive_approval_above=LARGE,
        waive_approval_within=timedelta(minutes=10),
    )
    handle = await api.open_case(account, "call-1", policy)
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    assert (await api.waive(account, ALICE)).pending_waiver is not None
    liquidating = await wait_state(handle, CaseState.LIQUIDATING)
    assert liquidating.pending_waiver is None
    assert said(liquidating, "lapsed without approval", "liquidation starts (deadline)")
    words = await refusal(api.approve_waive(account, BOB))
    assert words.startswith("state:") and "cannot waive" in words
    outcome = await finish(handle, "waive_pending_at_deadline")
    assert outcome.state != CaseState.WAIVED and outcome.status.stages
    assert outcome.status.stages[0].executed_at >= outcome.status.deadline  # type: ignore[operator]
    assert await waiver_row(stack, outcome.case_id) is None


async def test_an_approval_after_the_waives_own_scope_ended_is_refused(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account, handle = await open_awaiting(stack, "waive-scope", waive_approval_above=LARGE)
    scope = datetime.now(UTC) + timedelta(seconds=2)
    await api.waive(account, Waiver(operator=ALICE.operator, reason=ALICE.reason, until=scope))

    async def past() -> bool | None:
        return True if datetime.now(UTC) > scope + timedelta(seconds=1) else None

    await until(past)
    words = await refusal(api.approve_waive(account, BOB))
    assert words.startswith("until:"), words
    await api.force_liquidation(account, BOB)
    assert (await finish(handle, "approval_after_scope")).state != CaseState.WAIVED


# --- the policy: the operator's amount ---------------------------------------------


def test_the_rule_is_off_unless_the_operator_sets_an_amount() -> None:
    assert CasePolicy().waive_approval_above is None
    assert CasePolicy().waive_approval_within == timedelta(hours=1)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"waive_approval_above": "-1"}, "waive_approval_above"),
        ({"waive_approval_above": "NaN"}, "waive_approval_above"),
        ({"waive_approval_above": 10.5}, "waive_approval_above"),
        ({"waive_approval_within": "PT0S"}, "waive_approval_within"),
        ({"waive_approval_within": "P2D"}, "waive_approval_within"),
    ],
)
def test_a_bad_amount_or_time_limit_is_refused_naming_the_field(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        CasePolicy.model_validate(values)


def test_a_caller_cannot_move_the_operators_amount() -> None:
    with pytest.raises(PolicyError, match=r"overrides\.waive_approval_above"):
        STANDARD_BOOK.resolve("standard", PolicyOverrides(waive_approval_above=Decimal("1000000")))
    with pytest.raises(PolicyError, match=r"policy\.waive_approval_above"):
        STANDARD_BOOK.check("standard", CasePolicy(waive_approval_above=Decimal("1000000")))


# --- the ledger: the approval on the waiver's row ------------------------------------


def waived_status(case_id: str, account: str) -> CaseStatus:
    now = datetime.now(UTC)
    return CaseStatus(
        case_id=case_id,
        account_id=account,
        call_id="c1",
        state=CaseState.WAIVED,
        currency="USDT",
        opened_at=now,
        deadline=None,
        equity=None,
        maintenance_margin=None,
        shortfall=None,
        deposit_needed=None,
        deposits_counted=[],
        stages=[],
        fees_to_insurance_fund=Decimal(0),
        insurance_fund_used=Decimal(0),
        uncovered_loss=Decimal(0),
        notices_sent=0,
        notices_failed=[],
        timeline=[],
        closed_at=now,
    )


async def test_the_ledger_refuses_a_self_approved_waive_and_writes_nothing(venue: asyncpg.Pool) -> None:
    """The ledger's own check behind the case's: a close with the requester as approver leaves nothing."""
    ledger = LedgerActivities(venue)
    await onboard(venue, Trader("frank", Decimal("550"), {}))
    await open_case(ledger, "frank", "frank/c1")
    now = datetime.now(UTC)
    waiver = Waiver(operator="alice", reason="goodwill")
    status = waived_status("frank/c1", "frank")
    notice = {
        "notice_id": "frank/c1:closed",
        "kind": "margin_call.closed",
        "case_id": "frank/c1",
        "account_id": "frank",
        "state": "WAIVED",
        "occurred_at": now.isoformat(),
        "message": "closed",
    }

    def closing(approver: str) -> CaseClosing:
        approval = WaiverApproval(operator=approver, reason="ok", requested_at=now, approved_at=now)
        return CaseClosing.model_validate(
            {"status": status, "notices": [notice], "waiver": waiver, "waiver_approval": approval}
        )

    with pytest.raises(asyncpg.CheckViolationError, match="waivers_second_operator"):
        await ledger.close_case(closing("alice"))
    async with venue.acquire() as conn:
        case = await conn.fetchrow(
            "SELECT state, closed_at FROM margin_call_cases WHERE case_id = 'frank/c1'"
        )
        assert (case["state"], case["closed_at"]) == ("OPEN", None)
        assert await conn.fetchval("SELECT count(*) FROM waivers WHERE case_id = 'frank/c1'") == 0
        assert await conn.fetchval("SELECT count(*) FROM notice_outbox WHERE case_id = 'frank/c1'") == 0

    await ledger.close_case(closing("bob"))
    await ledger.close_case(closing("bob"))  # a retried close writes nothing twice
    async with venue.acquire() as conn:
        rows = await conn.fetch("SELECT operator, approved_by FROM waivers WHERE case_id = 'frank/c1'")
    assert [(r["operator"], r["approved_by"]) for r in rows] == [("alice", "bob")]
