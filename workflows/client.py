"""The client API for exchange services, deposit handlers and staff tools.

Everything a caller needs to open, feed, find and act on cases, over any
Temporal client connected with the pydantic data converter. Crediting a deposit
is the ledger's job: ``report_deposit`` takes the ledger as a ``DepositLedger``
so that this package never depends on the database driver.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from temporalio.client import (
    Client,
    RPCError,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.runtime import Runtime
from temporalio.service import RetryConfig, RPCStatusCode, TLSConfig

from workflows import contract
from workflows.asking import ask as _ask
from workflows.asking import not_ready as _not_ready
from workflows.contract import (
    CaseInput,
    CaseOutcome,
    CaseState,
    CaseStatus,
    CaseSummary,
    DeadlineExtension,
    Deposit,
    DepositBooking,
    DepositReceipt,
    StaffAction,
)
from workflows.domain.message import Message
from workflows.domain.policies import DEFAULT_POLICY, CasePolicy
from workflows.listing import (
    ENDED_WITHOUT_OUTCOME,
    EXECUTION_STATUS_NAMES,
    LISTED_STATES,
    EndedCase,
    failure_reason,
    listed_state,
)

SUBMIT_DEPOSIT_ATTEMPTS = 5
NOT_READY_ATTEMPTS = 5


CALL_RETRY = RetryConfig(max_interval_millis=5_000, max_elapsed_time_millis=60_000, max_retries=50)


async def connect(
    address: str, namespace: str = "default", tls: TLSConfig | bool = False, runtime: Runtime | None = None
) -> Client:
    """A Temporal client that speaks our models (decimals travel as strings).

    Calls are retried for up to a minute (the SDK's default gives up after 10 s):
    in a crash thousands of traders deposit at once, and a server that answers
    RESOURCE_EXHAUSTED for a while must not turn a credited deposit into an
    error. Every call we make is safe to repeat (update ids are reused, the
    deposit id is counted once, a second start joins the open case).
    """
    return await Client.connect(
        address,
        namespace=namespace,
        tls=tls,
        data_converter=pydantic_data_converter,
        runtime=runtime,
        retry_config=CALL_RETRY,
    )


class DepositLedger(Protocol):
    """Whatever books a deposit in the ledger, idempotent by deposit id."""

    async def credit(self, deposit: Deposit) -> DepositBooking: ...


class DepositReport(Message):
    """What became of a reported deposit: the ledger's booking, and the case's receipt if it had one open.

    ``receipt`` is None when the case was told by signal or when no case was
    open (``case_open`` says which).
    """

    booking: DepositBooking
    receipt: DepositReceipt | None
    case_open: bool


def case_message(deposit: Deposit) -> dict[str, Any]:
    """The deposit as its account's case is told it: the account is the case's own, so it is left out."""
    return deposit.model_dump(mode="json", exclude={"account_id"})


def _refused_as_closed(cause: BaseException | None) -> bool:
    """The case had closed: by type, or by the words workers of the previous release refuse with."""
    if not isinstance(cause, ApplicationError):
        return False
    return cause.type == contract.CASE_CLOSED or "case is closed" in cause.message


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class MarginCallClient:
    """Open, feed, find and act on margin call cases."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def handle(self, account_id: str) -> WorkflowHandle[object, CaseOutcome]:
        return self.client.get_workflow_handle(contract.workflow_id(account_id), result_type=CaseOutcome)

    async def open_case(
        self,
        account_id: str,
        call_id: str,
        policy: CasePolicy | None = None,
        *,
        policy_name: str = DEFAULT_POLICY,
        shortfall: Decimal | None = None,
    ) -> WorkflowHandle[object, CaseOutcome]:
        """Start the account's case, or join the one already open (same workflow id).

        ``policy`` is the operator's policy ``policy_name`` as resolved with the
        caller's overrides (``PolicyBook.resolve``); the worker refuses a case
        whose policy the operator's book does not allow.
        """
        case = CaseInput(
            account_id=account_id, call_id=call_id, policy=policy or CasePolicy(), policy_name=policy_name
        )
        summary = f"Margin call on {account_id}"
        if shortfall is not None:
            summary += f": shortfall {shortfall:,.2f}"
        summary += f", deadline {case.policy.deadline} after opening"
        return await self.client.start_workflow(
            contract.WORKFLOW_TYPE,
            case,
            id=contract.workflow_id(account_id),
            task_queue=contract.TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            result_type=CaseOutcome,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(contract.ACCOUNT_ID, account_id),
                    SearchAttributePair(contract.MARGIN_CALL_STATE, CaseState.OPEN.value),
                ]
            ),
            static_summary=summary,
            static_details=(
                f"account `{account_id}` · call `{call_id}` · policy `{policy_name}`: {case.policy.model_dump_json()}"
            ),
        )

    async def report_deposit(
        self, ledger: DepositLedger, deposit: Deposit, *, wait: bool = True
    ) -> DepositReport:
        """Credit the ledger first, then tell the open case (update if ``wait``, else signal).

        With no open case the deposit stays credited and no case is started.
        """
        booking = await ledger.credit(deposit)
        handle = self.client.get_workflow_handle(contract.workflow_id(deposit.account_id))
        # The case is the account's own: it is told the deposit without the account, as workers of
        # the release before the account was carried expect it (a rolling deploy mixes both).
        message = case_message(deposit)
        try:
            if wait:
                receipt = await self._submit_deposit(handle, deposit.deposit_id, message)
                return DepositReport(booking=booking, receipt=receipt, case_open=True)
            await handle.signal(contract.SIGNAL_DEPOSIT, message)
            return DepositReport(booking=booking, receipt=None, case_open=True)
        except RPCError as error:
            # "Workflow not ready" is a FAILED_PRECONDITION too, but of a case that is open: never "no case".
            closed = error.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION)
            if closed and not _not_ready(error):
                return DepositReport(booking=booking, receipt=None, case_open=False)
            raise
        except WorkflowUpdateFailedError as error:
            if _refused_as_closed(error.cause):
                return DepositReport(booking=booking, receipt=None, case_open=False)
            raise

    @staticmethod
    async def _submit_deposit(
        handle: WorkflowHandle[Any, Any], deposit_id: str, message: dict[str, Any]
    ) -> DepositReceipt:
        """The update, asked again under the same update id if the case is slow to answer.

        An overloaded case can take longer than one call's deadline to answer;
        the deposit is already credited, so we keep asking, a bounded number of
        times, and the server joins each retry to the same update. (Each report
        has its own id: a second report of the deposit is answered "not counted".)
        """
        update_id = f"deposit:{deposit_id}:{uuid.uuid4().hex}"
        return await _ask(
            handle,
            contract.UPDATE_SUBMIT_DEPOSIT,
            message,
            update_id,
            DepositReceipt,
            SUBMIT_DEPOSIT_ATTEMPTS,
        )

    async def status(self, account_id: str) -> CaseStatus:
        status: CaseStatus = await self.handle(account_id).query(
            contract.QUERY_STATUS, result_type=CaseStatus
        )
        return status

    async def _staff_update(self, account_id: str, update: str, action: StaffAction) -> CaseStatus:
        """The update, asked again under the same id when the server says the case was not ready.

        A workflow task that the server turned down for its own reasons (a new
        event arrived as it completed) fails the updates it carried with
        "workflow not ready"; the server joins a retry with the same id to the
        same update, so the action is taken once.
        """
        update_id = f"{update}:{uuid.uuid4().hex}"
        return await _ask(self.handle(account_id), update, action, update_id, CaseStatus, NOT_READY_ATTEMPTS)

    async def extend_deadline(self, account_id: str, extension: DeadlineExtension) -> CaseStatus:
        return await self._staff_update(account_id, contract.UPDATE_EXTEND_DEADLINE, extension)

    async def waive(self, account_id: str, action: StaffAction) -> CaseStatus:
        """Close without liquidation; above the policy's ``waive_approval_above`` the waive is only
        requested (``pending_waiver`` in the status) until a second operator's ``approve_waive``."""
        return await self._staff_update(account_id, contract.UPDATE_WAIVE, action)

    async def approve_waive(self, account_id: str, approval: StaffAction) -> CaseStatus:
        """A second operator puts the case's pending waive into effect (a waive above the policy's amount).

        Refused (``WorkflowUpdateFailedError``, naming the field) when no waive
        is pending, when it has expired or lapsed, or when ``approval.operator``
        is the operator who asked for it.
        """
        return await self._staff_update(account_id, contract.UPDATE_APPROVE_WAIVE, approval)

    async def force_liquidation(self, account_id: str, action: StaffAction) -> CaseStatus:
        return await self._staff_update(account_id, contract.UPDATE_FORCE_LIQUIDATION, action)

    async def show(self, account_id: str) -> CaseStatus | EndedCase:
        """The account's latest case: its status, or how its workflow ended when it has no outcome.

        A running case answers the status query and a completed one carries its
        outcome; a failed, terminated, timed-out or canceled workflow has
        neither, only the reason it ended. Raises ``RPCError`` (NOT_FOUND)
        when the account never had a case.
        """
        described = await self.handle(account_id).describe()
        handle = self.client.get_workflow_handle(
            described.id, run_id=described.run_id, result_type=CaseOutcome
        )
        if described.status == WorkflowExecutionStatus.RUNNING:
            status: CaseStatus = await handle.query(contract.QUERY_STATUS, result_type=CaseStatus)
            return status
        ended = ENDED_WITHOUT_OUTCOME.get(described.status) if described.status else None
        if ended is None:
            outcome: CaseOutcome = await handle.result(follow_runs=False)
            return outcome.status
        try:
            await handle.result(follow_runs=False)
            reason = "ended without a reason on record"
        except WorkflowFailureError as error:
            reason = failure_reason(error.cause)
        return EndedCase(
            workflow_id=described.id,
            run_id=described.run_id,
            account_id=account_id,
            state=ended,
            reason=reason,
            started_at=described.start_time,
            closed_at=described.close_time,
        )

    async def list_cases(
        self,
        *,
        state: str | None = None,
        account_id: str | None = None,
        opened_since: datetime | None = None,
        deadline_before: datetime | None = None,
        limit: int = 1000,
    ) -> list[CaseSummary]:
        """Cases by their search attributes (a visibility query; no worker needed).

        ``state`` is one of ``LISTED_STATES``. A workflow that ended without
        completing is listed under its execution status (FAILED, ...), never
        under the state it last upserted: a case that failed while OPEN is not open.
        """
        if state is not None and state not in LISTED_STATES:
            raise ValueError(f"state: unknown state {state[:40]!r} (known: {', '.join(LISTED_STATES)})")
        clauses = [f"WorkflowType = {_quote(contract.WORKFLOW_TYPE)}"]
        if state in EXECUTION_STATUS_NAMES:
            clauses.append(f"ExecutionStatus = {_quote(EXECUTION_STATUS_NAMES[state])}")
        elif state:
            clauses.append(f"MarginCallState = {_quote(state)}")
            clauses.append("ExecutionStatus IN ('Running', 'Completed')")
        if account_id:
            clauses.append(f"AccountId = {_quote(account_id)}")
        if opened_since:
            clauses.append(f"StartTime >= {_quote(opened_since.isoformat())}")
        if deadline_before:
            clauses.append(f"DepositDeadline < {_quote(deadline_before.isoformat())}")
        cases: list[CaseSummary] = []
        async for execution in self.client.list_workflows(" AND ".join(clauses), limit=limit):
            attributes = execution.typed_search_attributes
            listed = listed_state(execution.status, attributes.get(contract.MARGIN_CALL_STATE))
            if state and listed != state:
                continue  # the server's view changed between the query and the row
            cases.append(
                CaseSummary(
                    workflow_id=execution.id,
                    run_id=execution.run_id,
                    account_id=attributes.get(contract.ACCOUNT_ID),
                    state=listed,
                    shortfall=attributes.get(contract.MARGIN_SHORTFALL),
                    deadline=attributes.get(contract.DEPOSIT_DEADLINE),
                    stage=attributes.get(contract.LIQUIDATION_STAGE),
                    started_at=execution.start_time,
                    closed_at=execution.close_time,
                    running=execution.status == WorkflowExecutionStatus.RUNNING,
                    hold=attributes.get(contract.MARGIN_CALL_HOLD),
                )
            )
        return cases


__all__ = [
    "CaseSummary",
    "DepositLedger",
    "DepositReport",
    "MarginCallClient",
    "connect",
]
