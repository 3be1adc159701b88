"""The console's routes under ``/console/``: sign in and out, the case list, a case, the staff actions.

Every page needs a session with ``cases:read`` and every action ``cases:act``,
the scopes the API asks of a bearer token (see ``_sessions``). Cases are read
and acted on through the same client and ledger reads as the API's routes, and
the case refuses an action in the same words. Each refusal is a page whose
alert names the field; a refused or bad action writes nothing. A staff action
that succeeds answers with a redirect to the case, so a reload never sends it
again; a form sent twice is taken once.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from worker.api._services import Services
from worker.api_tokens import scopes_of
from worker.console._case_page import ACTIONS, AlreadySent, CasePage, act
from worker.console._forms import FormError, read_form
from worker.console._listing import PAGE_LIMIT, QueryError, list_query, row, sorted_cases
from worker.console._pages import STATIC, page, problem_page, static_file
from worker.console._sessions import COOKIE, LIFETIME_SECONDS, Session, Sessions
from worker.console._statement import statement_page
from worker.serving import Refused
from workflows.listing import LISTED_STATES

PREFIX = "/console"


def _next_page(raw: str | None) -> str:
    """Where to go after signing in: a console page, never another site."""
    if raw and raw.startswith(PREFIX + "/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return PREFIX + "/"


def console_routes(
    services: Services, temporal_ui_url: str | None, sessions: Sessions | None = None
) -> APIRouter:
    """The console's routes; ``sessions`` is given only by tests that need a session login cannot make."""
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    sessions = Sessions() if sessions is None else sessions
    cases = CasePage(services, temporal_ui_url)

    def session_of(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(COOKIE))

    def to_login(request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{PREFIX}/login?{urlencode({'next': target})}", status_code=303)

    @router.get("")
    async def root() -> Response:
        return RedirectResponse(PREFIX + "/", status_code=308)

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC:
            return problem_page(404, "path: no such file")
        return static_file(name)

    @router.get("/login")
    async def login_page(request: Request) -> Response:
        return page("login.html", next=_next_page(request.query_params.get("next")), error=None, session=None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        try:
            form = read_form(request.headers.get("content-type"), await request.body())
        except FormError as error:
            return page("login.html", 422, next=PREFIX + "/", error=str(error), session=None)
        target = _next_page(form.get("next"))
        token = form.get("token", "").strip()
        granted = scopes_of(services.scopes.tokens, token) if token else None
        if granted is None:
            wrong = "token: missing or wrong token" if token else "token: missing required field"
            return page("login.html", 401, next=target, error=wrong, session=None)
        if "cases:read" not in granted:
            lacking = "token: this token lacks the cases:read scope"
            return page("login.html", 403, next=target, error=lacking, session=None)
        session_id, _ = sessions.open(granted)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=LIFETIME_SECONDS,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        session = session_of(request)
        if session is not None:
            try:
                form = read_form(request.headers.get("content-type"), await request.body())
            except FormError as error:
                return problem_page(422, str(error), session)
            if not session.csrf_matches(form.get("csrf")):
                return problem_page(403, "csrf: this form is not from your session; reload the page", session)
            sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    @router.get("/")
    async def case_list(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return to_login(request)
        try:
            query = list_query(request.query_params)
        except QueryError as error:
            return problem_page(422, str(error), session)
        found = await services.cases.list_cases(state=query.state, account_id=query.account, limit=PAGE_LIMIT)
        return page(
            "list.html",
            session=session,
            query=query,
            rows=[row(c) for c in sorted_cases(found, query)],
            limited=len(found) >= PAGE_LIMIT,
            states=LISTED_STATES,
            refresh=10,
            urlencode=urlencode,
        )

    @router.get("/cases/{account_id:path}")
    async def case(request: Request, account_id: str) -> Response:
        session = session_of(request)
        if session is None:
            return to_login(request)
        return await cases.render(request, session, account_id, done=request.query_params.get("done"))

    @router.get("/statement/{account_id:path}")
    async def statement(request: Request, account_id: str) -> Response:
        session = session_of(request)
        if session is None:
            return to_login(request)
        return await statement_page(services.pool, session, account_id, request.query_params)

    @router.post("/cases/{account_id:path}/{action}")
    async def staff_action(request: Request, account_id: str, action: str) -> Response:
        session = session_of(request)
        if session is None:
            return problem_page(401, "authorization: signed out; sign in again and repeat the action")
        if action not in ACTIONS:
            return problem_page(404, "action: one of extend, waive, force")
        try:
            form = read_form(request.headers.get("content-type"), await request.body())
        except FormError as error:
            return problem_page(422, str(error), session)
        if not session.csrf_matches(form.get("csrf")):
            return problem_page(403, "csrf: this form is not from your session; reload the page", session)
        if not session.may("cases:act"):
            return problem_page(403, "authorization: this token lacks the cases:act scope", session)
        if not await cases.exists(account_id):
            return problem_page(404, "account_id: no such account", session)
        back = f"{PREFIX}/cases/{quote(account_id, safe='')}"
        try:
            await act(services.cases, session, account_id, action, form)
        except AlreadySent:
            return RedirectResponse(f"{back}?done=repeat", status_code=303)
        except FormError as error:
            return await cases.render(
                request, session, account_id, error=str(error), failed=action, values=form
            )
        except Refused as refusal:
            return await cases.render(
                request,
                session,
                account_id,
                status=refusal.status_code,
                error=str(refusal.detail),
                failed=action,
                values=form,
            )
        return RedirectResponse(f"{back}?done={action}", status_code=303)

    return router
