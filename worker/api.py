"""HTTP API for exchange services that do not use a Temporal SDK (``margin-call api``).

Bearer tokens carry scopes (``cases:open``, ``deposits:write``, ``cases:read``,
``cases:act``). Every body is a pydantic model, so a bad one is a 422 naming the
field; nothing is written before the request has been validated and the
account found.

Every error, 4xx or 5xx, is one ``Problem``: ``{"detail": "field.path: problem"}``,
a single string that names the field (``amount``, ``opened_since``,
``account_id``; a problem with the body as a whole names ``body``). It never
repeats what was sent nor another account's data, and never shows internals
(see ``worker.serving.one_error_shape``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ValidationError
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.exceptions import CurrencyMismatch, IdempotencyConflict, InvalidAmount, UnknownAccount
from activities.ledger import PostgresDeposits
from worker.api_tokens import SCOPES as SCOPES
from worker.api_tokens import scopes_of
from worker.serving import BodyLimit, Refused, naming_a_field, one_error_shape
from worker.serving import Problem as Problem
from workflows import contract
from workflows.client import MarginCallClient
from workflows.contract import (
    CaseState,
    CaseStatus,
    CaseSummary,
    Deposit,
    DepositBooking,
    DepositReceipt,
    StaffAction,
    Waiver,
)
from workflows.domain.message import CallId, FreeText, Identifier, Message
from workflows.domain.policies import (
    DEFAULT_POLICY,
    STANDARD_BOOK,
    PolicyBook,
    PolicyError,
    PolicyName,
    PolicyOverrides,
)
from workflows.domain.validation import describe_validation_error

MAX_BODY_BYTES = 64 * 1024
# Module level: FastAPI resolves the (string) annotations of dependencies in module globals.
BEARER = HTTPBearer(auto_error=False)


class OpenCase(Message):
    """A case to open: the operator's policy by name, and any overrides it allows (within its bounds)."""

    account_id: Identifier
    call_id: CallId
    policy_name: PolicyName = DEFAULT_POLICY
    overrides: PolicyOverrides | None = None


class CaseOpened(BaseModel):
    workflow_id: str
    run_id: str | None
    account_id: str
    call_id: str
    state: str


class DepositReport(BaseModel):
    booking: DepositBooking
    receipt: DepositReceipt | None
    case_open: bool


class Extension(Message):
    operator: FreeText
    reason: FreeText
    # A time without a zone has no single meaning: a 422 here, not a comparison failing in the case.
    new_deadline: AwareDatetime


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or wrong bearer token"},
    403: {"model": Problem, "description": "token lacks the scope"},
    404: {"model": Problem, "description": "unknown account or case"},
    409: {"model": Problem, "description": "refused by the case or an idempotency conflict"},
    413: {"model": Problem, "description": "body too large"},
    422: {"model": Problem, "description": "the body or a parameter is invalid"},
    500: {"model": Problem, "description": "our fault; the request may be retried"},
}


def create_app(
    cases: MarginCallClient,
    pool: asyncpg.Pool,
    tokens: dict[str, frozenset[str]],
    policies: PolicyBook = STANDARD_BOOK,
) -> FastAPI:
    app = FastAPI(
        title="Margin call case manager",
        version="1",
        description="Open margin call cases, report deposits, find cases and act on them.",
    )
    one_error_shape(app)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    def require(scope: str) -> Callable[..., Awaitable[None]]:
        async def check(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
        ) -> None:
            granted = scopes_of(tokens, credentials.credentials) if credentials else None
            if granted is None:
                raise Refused(
                    401, "authorization: missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
                )
            if scope not in granted:
                raise Refused(403, f"authorization: this token lacks the {scope} scope")

        return check

    async def account_exists(account_id: str) -> None:
        async with pool.acquire() as conn:
            found = await conn.fetchval("SELECT 1 FROM accounts WHERE account_id = $1", account_id)
        if not found:
            raise Refused(404, "account_id: no such account")

    async def case_status(account_id: str) -> CaseStatus:
        handle = cases.handle(account_id)
        try:
            description = await handle.describe()
            if description.status == WorkflowExecutionStatus.RUNNING:
                return await cases.status(account_id)
            return (await handle.result()).status
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise Refused(404, "account_id: the account has no case") from None
            raise
        except Exception as error:  # terminated or failed: no outcome to show
            raise Refused(404, "account_id: the account's case ended without an outcome") from error

    async def staff_update(account_id: str, update: str, action: StaffAction) -> CaseStatus:
        await account_exists(account_id)
        handle = cases.handle(account_id)
        try:
            status: CaseStatus = await handle.execute_update(update, action, result_type=CaseStatus)
            return status
        except WorkflowUpdateFailedError as error:
            # The case's validators name the field ("new_deadline: ...", "state: ...").
            raise Refused(409, naming_a_field(str(error.cause), "case")) from None
        except RPCError as error:
            if error.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                raise Refused(404, "account_id: the account has no open case") from None
            raise

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
        await cases.client.count_workflows(f"WorkflowType = '{contract.WORKFLOW_TYPE}'")
        return {"status": "ok"}

    @app.post(
        "/v1/margin-calls", status_code=202, responses=ERRORS, tags=["cases"],
        dependencies=[Depends(require("cases:open"))],
    )  # fmt: skip
    async def open_case(body: OpenCase) -> CaseOpened:
        """Open the account's case, idempotent on account and call id (an open case is joined)."""
        await account_exists(body.account_id)
        case_id = contract.case_id(body.account_id, body.call_id)
        async with pool.acquire() as conn:
            closed = await conn.fetchval(
                "SELECT state FROM margin_call_cases WHERE case_id = $1 AND closed_at IS NOT NULL", case_id
            )
        if closed:
            return CaseOpened(
                workflow_id=contract.workflow_id(body.account_id), run_id=None, account_id=body.account_id,
                call_id=body.call_id, state=closed,
            )  # fmt: skip
        try:
            policy = policies.resolve(body.policy_name, body.overrides)
        except PolicyError as error:
            raise Refused(422, str(error)) from None
        try:
            handle = await cases.open_case(
                body.account_id, body.call_id, policy, policy_name=body.policy_name
            )
        except ValidationError as error:  # the case's own input model is stricter than this body
            raise Refused(422, describe_validation_error(error)) from None
        return CaseOpened(
            workflow_id=handle.id, run_id=handle.result_run_id, account_id=body.account_id,
            call_id=body.call_id, state=CaseState.OPEN.value,
        )  # fmt: skip

    @app.post(
        "/v1/deposits", responses=ERRORS, tags=["deposits"], dependencies=[Depends(require("deposits:write"))]
    )
    async def deposit(body: Deposit) -> DepositReport:
        """Credit the ledger (idempotent on deposit id), then report the deposit to the open case."""
        try:
            report = await cases.report_deposit(PostgresDeposits(pool), body)
        # The ledger's words are for the operator's logs: they may name another
        # account or repeat the input, so the caller gets ours.
        except UnknownAccount:
            raise Refused(404, "account_id: no such account") from None
        except IdempotencyConflict:
            raise Refused(409, "deposit_id: already used for another deposit") from None
        except CurrencyMismatch:
            async with pool.acquire() as conn:
                settles = await conn.fetchval(
                    "SELECT settlement_currency FROM accounts WHERE account_id = $1", body.account_id
                )
            raise Refused(422, f"currency: this account settles in {settles}") from None
        except InvalidAmount as error:
            # money_amount's words, the same the body's validators use ("amount: ...").
            raise Refused(422, naming_a_field(str(error), "amount")) from None
        return DepositReport(booking=report.booking, receipt=report.receipt, case_open=report.case_open)

    @app.get(
        "/v1/cases/{account_id}",
        responses=ERRORS,
        tags=["cases"],
        dependencies=[Depends(require("cases:read"))],
    )
    async def show_case(account_id: Identifier) -> CaseStatus:
        """The account's latest case: status and timeline."""
        await account_exists(account_id)
        return await case_status(account_id)

    @app.get("/v1/cases", responses=ERRORS, tags=["cases"], dependencies=[Depends(require("cases:read"))])
    async def list_cases(
        state: Annotated[CaseState | None, Query()] = None,
        account_id: Annotated[Identifier | None, Query()] = None,
        opened_since: Annotated[AwareDatetime | None, Query()] = None,
        deadline_before: Annotated[AwareDatetime | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[CaseSummary]:
        found = await cases.list_cases(
            state=state.value if state else None, account_id=account_id, opened_since=opened_since,
            deadline_before=deadline_before, limit=limit,
        )  # fmt: skip
        return found

    @app.post(
        "/v1/cases/{account_id}/extend", responses=ERRORS, tags=["staff"],
        dependencies=[Depends(require("cases:act"))],
    )  # fmt: skip
    async def extend(account_id: Identifier, body: Extension) -> CaseStatus:
        from workflows.contract import DeadlineExtension

        extension = DeadlineExtension(
            operator=body.operator, reason=body.reason, new_deadline=body.new_deadline
        )
        return await staff_update(account_id, contract.UPDATE_EXTEND_DEADLINE, extension)

    @app.post(
        "/v1/cases/{account_id}/waive", responses=ERRORS, tags=["staff"],
        dependencies=[Depends(require("cases:act"))],
    )  # fmt: skip
    async def waive(account_id: Identifier, body: Waiver) -> CaseStatus:
        """Close without liquidation; no new case for the account until ``until`` (or its recovery)."""
        return await staff_update(account_id, contract.UPDATE_WAIVE, body)

    @app.post(
        "/v1/cases/{account_id}/force-liquidation", responses=ERRORS, tags=["staff"],
        dependencies=[Depends(require("cases:act"))],
    )  # fmt: skip
    async def force(account_id: Identifier, body: StaffAction) -> CaseStatus:
        return await staff_update(account_id, contract.UPDATE_FORCE_LIQUIDATION, body)

    return app
