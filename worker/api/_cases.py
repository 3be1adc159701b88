"""Cases: open one for an account, show an account's latest case, list cases by their search attributes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ValidationError
from temporalio.service import RPCError, RPCStatusCode

from activities.ledger import account_exists, closed_case_state
from worker.api._problems import ERRORS, no_such_account
from worker.api._services import Services
from worker.serving import Refused
from workflows import contract
from workflows.contract import CaseState, CaseStatus, CaseSummary
from workflows.domain.message import CallId, Identifier, Message
from workflows.domain.policies import DEFAULT_POLICY, PolicyError, PolicyName, PolicyOverrides
from workflows.domain.validation import describe_validation_error
from workflows.listing import EndedCase


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


def case_routes(services: Services) -> APIRouter:
    router = APIRouter(tags=["cases"], responses=ERRORS)
    cases, pool, policies = services.cases, services.pool, services.policies

    @router.post("/v1/margin-calls", status_code=202, dependencies=services.scopes.needs("cases:open"))
    async def open_case(body: OpenCase) -> CaseOpened:
        """Open the account's case, idempotent on account and call id (an open case is joined)."""
        if not await account_exists(pool, body.account_id):
            raise no_such_account()
        closed = await closed_case_state(pool, contract.case_id(body.account_id, body.call_id))
        if closed:
            return CaseOpened(
                workflow_id=contract.workflow_id(body.account_id),
                run_id=None,
                account_id=body.account_id,
                call_id=body.call_id,
                state=closed,
            )
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
            workflow_id=handle.id,
            run_id=handle.result_run_id,
            account_id=body.account_id,
            call_id=body.call_id,
            state=CaseState.OPEN.value,
        )

    @router.get("/v1/cases/{account_id}", dependencies=services.scopes.needs("cases:read"))
    async def show_case(account_id: Identifier) -> CaseStatus:
        """The account's latest case: status and timeline."""
        if not await account_exists(pool, account_id):
            raise no_such_account()
        try:
            case = await cases.show(account_id)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise Refused(404, "account_id: the account has no case") from None
            raise
        if isinstance(case, EndedCase):  # failed or terminated: no outcome to show
            raise Refused(404, "account_id: the account's case ended without an outcome")
        return case

    @router.get("/v1/cases", dependencies=services.scopes.needs("cases:read"))
    async def list_cases(
        state: Annotated[CaseState | None, Query()] = None,
        account_id: Annotated[Identifier | None, Query()] = None,
        opened_since: Annotated[AwareDatetime | None, Query()] = None,
        deadline_before: Annotated[AwareDatetime | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[CaseSummary]:
        return await cases.list_cases(
            state=state.value if state else None,
            account_id=account_id,
            opened_since=opened_since,
            deadline_before=deadline_before,
            limit=limit,
        )

    return router
