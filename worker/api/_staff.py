"""Staff actions on an account's open case: extend its deadline, waive it (and approve a large waive), force its liquidation.

Each is an update the case may refuse (409, in the case's own field-naming
words); an account without a running case is a 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import APIRouter
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities.ledger import account_exists
from worker.api._problems import ERRORS, no_open_case, no_such_account, refused_by_the_case
from worker.api._services import Services
from workflows.contract import CaseStatus, DeadlineExtension, StaffAction, Waiver
from workflows.domain.message import Identifier

Action = TypeVar("Action", bound=StaffAction)


def staff_routes(services: Services) -> APIRouter:
    router = APIRouter(tags=["staff"], responses=ERRORS, dependencies=services.scopes.needs("cases:act"))
    cases, pool = services.cases, services.pool

    async def act(
        account_id: str, update: Callable[[str, Action], Awaitable[CaseStatus]], action: Action
    ) -> CaseStatus:
        if not await account_exists(pool, account_id):
            raise no_such_account()
        try:
            return await update(account_id, action)
        except WorkflowUpdateFailedError as error:
            raise refused_by_the_case(error) from None
        except RPCError as error:
            refusal = no_open_case(error)
            if refusal is None:
                raise
            raise refusal from None

    @router.post("/v1/cases/{account_id}/extend")
    async def extend(account_id: Identifier, body: DeadlineExtension) -> CaseStatus:
        return await act(account_id, cases.extend_deadline, body)

    @router.post("/v1/cases/{account_id}/waive")
    async def waive(account_id: Identifier, body: Waiver) -> CaseStatus:
        """Close without liquidation; no new case for the account until ``until`` (or its recovery)."""
        return await act(account_id, cases.waive, body)

    @router.post("/v1/cases/{account_id}/approve-waive")
    async def approve_waive(account_id: Identifier, body: StaffAction) -> CaseStatus:
        """A second operator puts the pending waive into effect (a waive above the policy's amount)."""
        return await act(account_id, cases.approve_waive, body)

    @router.post("/v1/cases/{account_id}/force-liquidation")
    async def force(account_id: Identifier, body: StaffAction) -> CaseStatus:
        return await act(account_id, cases.force_liquidation, body)

    return router
