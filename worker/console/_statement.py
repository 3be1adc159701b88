"""A case's statement in the console: the API's page, behind the console's session instead of a bearer token.

A browser signed in to the console holds a session cookie and no token, so the
API's ``statement.html`` would answer a link from the case page with a 401.
The console reads the statement through the same helper as the API
(``read_statement``: the same ledger read, the same refusals) and renders the
same page (``render_html``); only who may read it is decided by the session.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg
from pydantic import TypeAdapter, ValidationError
from starlette.responses import HTMLResponse, Response

from worker.api._statement import PAGE_POLICY, read_statement
from worker.console._listing import ACCOUNT
from worker.console._pages import HEADERS, problem_page
from worker.console._sessions import Session
from worker.serving import Refused
from worker.statement import render_html
from workflows.domain.message import CaseId

STATEMENT_PAGE = "/console/statement/{account_id}"
_CASE_ID: TypeAdapter[str] = TypeAdapter(CaseId)
# The statement's own policy (its inline styles, nothing else); the console's other headers keep
# a page of a trader's figures out of caches and its address out of other sites' referrers.
_PAGE_HEADERS = {**HEADERS, "Content-Security-Policy": PAGE_POLICY}


def _case_id(query: Mapping[str, str]) -> str | None:
    """``case_id`` from the query as the API would take it; raises ``Refused`` (422) naming the field."""
    raw = query.get("case_id")
    if raw is None or raw == "":
        return None
    try:
        return _CASE_ID.validate_python(raw)
    except ValidationError as error:
        raise Refused(422, f"case_id: {error.errors()[0]['msg']}") from None


async def statement_page(
    pool: asyncpg.Pool, session: Session, account_id: str, query: Mapping[str, str]
) -> Response:
    """The account's latest case's statement (or ``case_id``'s) for a signed-in session."""
    if not session.may("cases:read"):
        return problem_page(403, "authorization: this token lacks the cases:read scope", session)
    if not ACCOUNT.fullmatch(account_id):
        return problem_page(404, "account_id: no such account", session)
    try:
        statement = await read_statement(pool, account_id, _case_id(query))
    except Refused as refusal:
        return problem_page(refusal.status_code, str(refusal.detail), session)
    return HTMLResponse(render_html(statement), headers=_PAGE_HEADERS)
