"""The deposit receipt is asked for again, under the same update id, when a slow case misses a call's deadline.

A pure unit: a stand-in handle plays the server, so the retry rule is checked
without having to overload a real one (``make bench`` at N=2,000 is where it was seen).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from workflows import contract
from workflows.client import SUBMIT_DEPOSIT_ATTEMPTS, MarginCallClient, case_message
from workflows.contract import CaseState, Deposit, DepositBooking, DepositReceipt

DEPOSIT = Deposit(account_id="acct-1", deposit_id="d-1", amount=Decimal("100"), currency="USDT")
# What the case is told: the deposit without the account (the case is the account's own).
MESSAGE = case_message(DEPOSIT)
RECEIPT = DepositReceipt(
    deposit_id="d-1",
    counted=True,
    state=CaseState.CURED,
    equity=Decimal("900"),
    maintenance_margin=Decimal("800"),
    shortfall=Decimal("0"),
)


class SlowCase:
    """Times out ``timeouts`` times, then answers; records the update ids it was asked under."""

    def __init__(self, timeouts: int) -> None:
        self.timeouts = timeouts
        self.update_ids: list[str] = []

    async def execute_update(self, update: str, arg: Any, *, id: str, result_type: type) -> DepositReceipt:
        assert update == contract.UPDATE_SUBMIT_DEPOSIT and arg == MESSAGE and result_type is DepositReceipt
        self.update_ids.append(id)
        if len(self.update_ids) <= self.timeouts:
            raise WorkflowUpdateRPCTimeoutOrCancelledError()
        return RECEIPT


async def test_a_slow_case_is_asked_again_under_the_same_update_id() -> None:
    case = SlowCase(timeouts=2)
    receipt = await MarginCallClient._submit_deposit(case, "d-1", MESSAGE)  # type: ignore[arg-type]
    assert receipt == RECEIPT
    assert len(case.update_ids) == 3 and len(set(case.update_ids)) == 1
    assert case.update_ids[0].startswith("deposit:d-1:")


async def test_asking_gives_up_after_a_bounded_number_of_calls() -> None:
    case = SlowCase(timeouts=SUBMIT_DEPOSIT_ATTEMPTS)
    with pytest.raises(WorkflowUpdateRPCTimeoutOrCancelledError):
        await MarginCallClient._submit_deposit(case, "d-1", MESSAGE)  # type: ignore[arg-type]
    assert len(case.update_ids) == SUBMIT_DEPOSIT_ATTEMPTS


async def test_each_report_has_its_own_update_id() -> None:
    first, second = SlowCase(timeouts=0), SlowCase(timeouts=0)
    await MarginCallClient._submit_deposit(first, "d-1", MESSAGE)  # type: ignore[arg-type]
    await MarginCallClient._submit_deposit(second, "d-1", MESSAGE)  # type: ignore[arg-type]
    assert first.update_ids != second.update_ids


def test_a_workflow_not_ready_answer_is_asked_again_and_nothing_else_is() -> None:
    """A staff update the server turned down with "workflow not ready" (seen in CI) is retried under its id."""
    from workflows.asking import not_ready as _not_ready

    assert _not_ready(RPCError("not ready", RPCStatusCode.FAILED_PRECONDITION, NOT_READY))
    assert not _not_ready(RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b""))


def test_the_case_is_told_a_deposit_without_its_account() -> None:
    """Workers of the release before the account was carried refuse an unknown field: a rolling deploy must
    not turn a credited deposit into a refused report."""
    assert MESSAGE == {"deposit_id": "d-1", "amount": "100", "currency": "USDT"}


NOT_READY = (
    b"\x08\t\x12TUnable to perform workflow execution update due to unexpected workflow task failure."
    b"\x1aJ\nHtype.googleapis.com/temporal.api.errordetails.v1.WorkflowNotReadyFailure"
)


class BusyCase(SlowCase):
    """Answers "workflow not ready" (a FAILED_PRECONDITION, as the server does) ``times`` times, then answers."""

    async def execute_update(self, update: str, arg: Any, *, id: str, result_type: type) -> DepositReceipt:
        self.update_ids.append(id)
        if len(self.update_ids) <= self.timeouts:
            raise RPCError("not ready", RPCStatusCode.FAILED_PRECONDITION, NOT_READY)
        return RECEIPT


class Credited:
    """The ledger's side of a report: the deposit credited (the money is in before the case is told)."""

    async def credit(self, deposit: Deposit) -> DepositBooking:
        return DepositBooking(
            deposit_id=deposit.deposit_id,
            account_id=deposit.account_id,
            amount=deposit.amount,
            currency=deposit.currency,
            already_credited=False,
        )


class OneCase:
    def __init__(self, handle: BusyCase) -> None:
        self.handle = handle

    def get_workflow_handle(self, workflow_id: str) -> BusyCase:
        assert workflow_id == contract.workflow_id(DEPOSIT.account_id)
        return self.handle


async def test_a_deposit_the_case_was_not_ready_for_is_asked_again_and_counted() -> None:
    """Seen in the bench: the update's workflow task turned down by the server; the case must still hear of it."""
    case = BusyCase(timeouts=2)
    client = MarginCallClient(OneCase(case))  # type: ignore[arg-type]
    report = await client.report_deposit(Credited(), DEPOSIT)  # type: ignore[arg-type]
    assert report.case_open and report.receipt == RECEIPT
    assert len(case.update_ids) == 3 and len(set(case.update_ids)) == 1


async def test_a_case_never_ready_is_an_error_never_no_open_case() -> None:
    """ "No open case" would tell the deposit handler its report is done while the case never heard of it."""
    case = BusyCase(timeouts=SUBMIT_DEPOSIT_ATTEMPTS)
    client = MarginCallClient(OneCase(case))  # type: ignore[arg-type]
    with pytest.raises(RPCError):
        await client.report_deposit(Credited(), DEPOSIT)  # type: ignore[arg-type]
    assert len(case.update_ids) == SUBMIT_DEPOSIT_ATTEMPTS


class GoneCase(BusyCase):
    """The case closed: the server's FAILED_PRECONDITION without the not-ready detail."""

    async def execute_update(self, update: str, arg: Any, *, id: str, result_type: type) -> DepositReceipt:
        self.update_ids.append(id)
        raise RPCError("workflow execution already completed", RPCStatusCode.FAILED_PRECONDITION, b"")


async def test_a_closed_case_still_reads_as_no_open_case() -> None:
    case = GoneCase(timeouts=0)
    report = await MarginCallClient(OneCase(case)).report_deposit(Credited(), DEPOSIT)  # type: ignore[arg-type]
    assert not report.case_open and report.receipt is None and len(case.update_ids) == 1


class CancelledCall(SlowCase):
    """The SDK's answer when the caller was cancelled: the same error as a timeout, caused by the cancel."""

    async def execute_update(self, update: str, arg: Any, *, id: str, result_type: type) -> DepositReceipt:
        self.update_ids.append(id)
        try:
            raise asyncio.CancelledError
        except asyncio.CancelledError as cancel:
            raise WorkflowUpdateRPCTimeoutOrCancelledError() from cancel


async def test_a_cancelled_caller_is_not_asked_again() -> None:
    """Ctrl-C on the CLI or a server shutting down stops the call at once."""
    case = CancelledCall(timeouts=0)
    with pytest.raises(WorkflowUpdateRPCTimeoutOrCancelledError):
        await MarginCallClient._submit_deposit(case, "d-1", MESSAGE)  # type: ignore[arg-type]
    assert len(case.update_ids) == 1
