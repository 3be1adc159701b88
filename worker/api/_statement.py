"""A case's statement: as JSON, and as a page that reads on screen and prints (scope ``cases:read``)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from activities.exceptions import UnknownAccount, UnknownCase
from activities.ledger import case_statement
from worker.api._problems import ERRORS, no_such_account
from worker.api._services import Services
from worker.serving import Refused
from worker.statement import render_html
from workflows.contract import CaseStatement
from workflows.domain.message import CaseId, Identifier

# The page is self-contained: its own styles, no script, nothing loaded from anywhere.
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


async def read_statement(pool: asyncpg.Pool, account_id: str, case_id: str | None = None) -> CaseStatement:
    """The statement, or the refusal (404) every interface that shows it answers in the same words.

    Shared by this API and the staff console, so both refuse an unknown account or case alike.
    """
    try:
        return await case_statement(pool, account_id, case_id)
    except UnknownAccount:
        raise no_such_account() from None
    except UnknownCase as error:  # names case_id or account_id, and only this account's
        raise Refused(404, str(error)) from None


def statement_routes(services: Services) -> APIRouter:
    router = APIRouter(tags=["cases"], responses=ERRORS)
    pool = services.pool

    @router.get("/v1/cases/{account_id}/statement", dependencies=services.scopes.needs("cases:read"))
    async def statement(
        account_id: Identifier, case_id: Annotated[CaseId | None, Query()] = None
    ) -> CaseStatement:
        """The statement of the account's latest case (or ``case_id``): every figure with its inputs."""
        return await read_statement(pool, account_id, case_id)

    @router.get(
        "/v1/cases/{account_id}/statement.html",
        response_class=HTMLResponse,
        dependencies=services.scopes.needs("cases:read"),
    )
    async def statement_page(
        account_id: Identifier, case_id: Annotated[CaseId | None, Query()] = None
    ) -> HTMLResponse:
        """The same statement as a printable page."""
        page = render_html(await read_statement(pool, account_id, case_id))
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    return router
