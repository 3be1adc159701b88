"""One case in the console: its page (status, timeline, stages, links, action forms) and the staff actions.

The page reads the case as ``margin-call cases show`` does (``MarginCallClient.show``:
the status query while it runs, the outcome once it closed, the reason when its
workflow ended without one). The actions are the client's updates, refused by
the case in its own words (``worker.api._problems``), exactly as over HTTP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from urllib.parse import quote, urlencode

from fastapi import Request
from starlette.responses import Response
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.ledger import account_exists
from worker.api._problems import no_open_case, refused_by_the_case
from worker.api._services import Services
from worker.console._forms import deadline_extension, staff_action, waiver
from worker.console._listing import ACCOUNT
from worker.console._pages import page, problem_page
from worker.console._sessions import Session
from worker.console._statement import STATEMENT_PAGE
from worker.serving import Refused
from workflows import contract
from workflows.client import MarginCallClient
from workflows.contract import CaseStatus
from workflows.listing import EndedCase

ACTIONS = ("extend", "waive", "force")
DONE = {
    "extend": "Deadline extended.",
    "waive": "Case waived.",
    "force": "Liquidation forced: the case is selling.",
    "repeat": "That form had been sent already: the action was taken once.",
}
REFRESH_SECONDS = 5


class AlreadySent(Exception):
    """The form was sent before (a double click): it was acted on then, and is not again."""


async def act(
    cases: MarginCallClient, session: Session, account_id: str, action: str, form: dict[str, str]
) -> CaseStatus:
    """The form as the case's update; raises ``FormError`` (bad form) or ``Refused`` (the case said no)."""
    try:
        send: Callable[[], Awaitable[CaseStatus]]
        if action == "extend":
            deadline = (await cases.status(account_id)).deadline if form.get("by", "").strip() else None
            extension = deadline_extension(form, deadline)
            send = partial(cases.extend_deadline, account_id, extension)
        elif action == "waive":
            send = partial(cases.waive, account_id, waiver(form))
        else:
            send = partial(cases.force_liquidation, account_id, staff_action(form))
        # Taken only once the form is good: a refused form shows again with a fresh id.
        if session.was_used(form.get("form_id")):
            raise AlreadySent
        if not session.use_form(form.get("form_id")):
            raise Refused(409, "form_id: this form was not shown in your session; reload the page")
        return await send()
    except WorkflowUpdateFailedError as error:
        raise refused_by_the_case(error) from None
    except RPCError as error:
        refusal = no_open_case(error)
        if refusal is None:
            raise
        raise refusal from None


class CasePage:
    def __init__(self, services: Services, temporal_ui_url: str | None) -> None:
        self.cases = services.cases
        self.pool = services.pool
        self.temporal_ui_url = temporal_ui_url

    async def exists(self, account_id: str) -> bool:
        return bool(ACCOUNT.fullmatch(account_id)) and await account_exists(self.pool, account_id)

    def temporal_link(self, workflow_id: str, run_id: str | None) -> str | None:
        if self.temporal_ui_url is None:
            return None
        namespace = quote(self.cases.client.namespace, safe="")
        link = f"{self.temporal_ui_url}/namespaces/{namespace}/workflows/{quote(workflow_id, safe='')}"
        return f"{link}/{quote(run_id, safe='')}/history" if run_id else link

    @staticmethod
    def statement_link(account_id: str, case_id: str | None) -> str:
        """The console's own statement page (the API's wants a bearer token the browser does not hold).

        Pinned to the case shown, so a case opened since the page loaded does not answer instead.
        """
        link = STATEMENT_PAGE.replace("{account_id}", quote(account_id, safe=""))
        return f"{link}?{urlencode({'case_id': case_id})}" if case_id else link

    async def render(
        self,
        request: Request,
        session: Session,
        account_id: str,
        *,
        status: int | None = None,
        error: str | None = None,
        failed: str | None = None,
        values: dict[str, str] | None = None,
        done: str | None = None,
    ) -> Response:
        if not await self.exists(account_id):
            return problem_page(404, "account_id: no such account", session)
        try:
            described = await self.cases.handle(account_id).describe()
            shown = await self.cases.show(account_id)
        except RPCError as rpc:
            if rpc.status == RPCStatusCode.NOT_FOUND:
                return problem_page(404, "account_id: the account has no case", session)
            raise
        running = described.status == WorkflowExecutionStatus.RUNNING
        can_act = running and session.may("cases:act")
        return page(
            "case.html",
            status or (422 if error else 200),
            session=session,
            account_id=account_id,
            status=shown if isinstance(shown, CaseStatus) else None,
            ended=shown if isinstance(shown, EndedCase) else None,
            running=running,
            can_act=can_act,
            forms={name: session.new_form() for name in ACTIONS} if can_act else {},
            temporal_link=self.temporal_link(contract.workflow_id(account_id), described.run_id),
            statement_link=self.statement_link(
                account_id, shown.case_id if isinstance(shown, CaseStatus) else None
            ),
            error=error,
            failed=failed,
            values=values or {},
            done=DONE.get(done or ""),
            # A page answering a refused form is not reloaded: the browser would send the form again.
            refresh=REFRESH_SECONDS if running and error is None else 0,
            now=datetime.now(UTC),
        )
