"""HTTP API for exchange services that do not use a Temporal SDK (``margin-call api``).

Bearer tokens carry scopes (``cases:open``, ``deposits:write``, ``cases:read``,
``cases:act``). Every body is a pydantic model, so a bad one is a 422 naming the
field; nothing is written before the request has been validated and the
account found.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.exceptions import CurrencyMismatch, IdempotencyConflict, InvalidAmount, UnknownAccount
from activities.ledger import PostgresDeposits
from worker.api_tokens import SCOPES as SCOPES
from workflows import contract
from workflows.client import MarginCallClient
from workflows.models import (
    CasePolicy,
    CaseState,
    CaseStatus,
    CaseSummary,
    Contract,
    DepositBooking,
    DepositCredit,
    DepositReceipt,
    FreeText,
    Identifier,
    StaffAction,
)

MAX_BODY_BYTES = 64 * 1024
# Module level: FastAPI resolves the (string) annotations of dependencies in module globals.
BEARER = HTTPBearer(auto_error=False)


class OpenCase(Contract):
    account_id: Identifier
    call_id: Identifier
    policy: CasePolicy = CasePolicy()


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


class Extension(Contract):
    operator: FreeText
    reason: FreeText
    new_deadline: datetime


class Problem(BaseModel):
    detail: str = Field(description="what was wrong, naming the field where there is one")


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or wrong bearer token"},
    403: {"model": Problem, "description": "token lacks the scope"},
    404: {"model": Problem, "description": "unknown account or case"},
    409: {"model": Problem, "description": "refused by the case or an idempotency conflict"},
    413: {"model": Problem, "description": "body too large"},
}


def create_app(cases: MarginCallClient, pool: asyncpg.Pool, tokens: dict[str, frozenset[str]]) -> FastAPI:
    app = FastAPI(
        title="Margin call case manager",
        version="1",
        description="Open margin call cases, report deposits, find cases and act on them.",
    )

    def require(scope: str) -> Callable[..., Awaitable[None]]:
        async def check(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
        ) -> None:
            granted = tokens.get(credentials.credentials) if credentials else None
            if granted is None:
                raise HTTPException(
                    401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
                )
            if scope not in granted:
                raise HTTPException(403, f"this token lacks the {scope} scope")

        return check

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"body: larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    async def account_exists(account_id: str) -> None:
        async with pool.acquire() as conn:
            found = await conn.fetchval("SELECT 1 FROM accounts WHERE account_id = $1", account_id)
        if not found:
            raise HTTPException(404, f"account_id: no account {account_id!r}")

    async def case_status(account_id: str) -> CaseStatus:
        handle = cases.handle(account_id)
        try:
            description = await handle.describe()
            if description.status == WorkflowExecutionStatus.RUNNING:
                return await cases.status(account_id)
            return (await handle.result()).status
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise HTTPException(404, f"account_id: no case for {account_id!r}") from None
            raise
        except Exception as error:  # terminated or failed: no outcome to show
            raise HTTPException(
                404, f"account_id: the case for {account_id!r} ended without an outcome"
            ) from error

    async def staff_update(account_id: str, update: str, action: StaffAction) -> CaseStatus:
        await account_exists(account_id)
        handle = cases.handle(account_id)
        try:
            status: CaseStatus = await handle.execute_update(update, action, result_type=CaseStatus)
            return status
        except WorkflowUpdateFailedError as error:
            raise HTTPException(409, f"refused: {error.cause}") from None
        except RPCError as error:
            if error.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                raise HTTPException(404, f"account_id: no open case for {account_id!r}") from None
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
        handle = await cases.open_case(body.account_id, body.call_id, body.policy)
        return CaseOpened(
            workflow_id=handle.id, run_id=handle.result_run_id, account_id=body.account_id,
            call_id=body.call_id, state=CaseState.OPEN.value,
        )  # fmt: skip

    @app.post(
        "/v1/deposits", responses=ERRORS, tags=["deposits"], dependencies=[Depends(require("deposits:write"))]
    )
    async def deposit(body: DepositCredit) -> DepositReport:
        """Credit the ledger (idempotent on deposit id), then report the deposit to the open case."""
        from workflows.models import Deposit

        try:
            report = await cases.report_deposit(
                PostgresDeposits(pool),
                body.account_id,
                Deposit(deposit_id=body.deposit_id, amount=body.amount, currency=body.currency),
            )
        except UnknownAccount as error:
            raise HTTPException(404, str(error)) from None
        except IdempotencyConflict as error:
            raise HTTPException(409, str(error)) from None
        except (CurrencyMismatch, InvalidAmount) as error:
            raise HTTPException(422, str(error)) from None
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
        opened_since: Annotated[datetime | None, Query()] = None,
        deadline_before: Annotated[datetime | None, Query()] = None,
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
        from workflows.models import DeadlineExtension

        extension = DeadlineExtension(
            operator=body.operator, reason=body.reason, new_deadline=body.new_deadline
        )
        return await staff_update(account_id, contract.UPDATE_EXTEND_DEADLINE, extension)

    @app.post(
        "/v1/cases/{account_id}/waive", responses=ERRORS, tags=["staff"],
        dependencies=[Depends(require("cases:act"))],
    )  # fmt: skip
    async def waive(account_id: Identifier, body: StaffAction) -> CaseStatus:
        return await staff_update(account_id, contract.UPDATE_WAIVE, body)

    @app.post(
        "/v1/cases/{account_id}/force-liquidation", responses=ERRORS, tags=["staff"],
        dependencies=[Depends(require("cases:act"))],
    )  # fmt: skip
    async def force(account_id: Identifier, body: StaffAction) -> CaseStatus:
        return await staff_update(account_id, contract.UPDATE_FORCE_LIQUIDATION, body)

    return app
