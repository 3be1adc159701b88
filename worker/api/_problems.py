"""Every refusal the API answers, as the one ``Problem`` shape, in our words.

The words of the ledger and of Temporal are for the operator's logs: they may
name another account, repeat the input or show internals, so each is turned
here into a ``Refused`` that names the field and nothing of anyone else's.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import FailureError
from temporalio.service import RPCError, RPCStatusCode

from worker.serving import Problem, Refused, naming_a_field
from workflows.asking import not_ready

# The OpenAPI document's answer for each refusal (FastAPI's ``responses=``).
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or wrong bearer token"},
    403: {"model": Problem, "description": "token lacks the scope"},
    404: {"model": Problem, "description": "unknown account or case"},
    409: {"model": Problem, "description": "refused by the case or an idempotency conflict"},
    413: {"model": Problem, "description": "body too large"},
    422: {"model": Problem, "description": "the body or a parameter is invalid"},
    500: {"model": Problem, "description": "our fault; the request may be retried"},
    503: {"model": Problem, "description": "the case was busy: nothing applied, send it again"},
}


def no_such_account() -> Refused:
    return Refused(404, "account_id: no such account")


def refused_by_the_case(error: WorkflowUpdateFailedError) -> Refused:
    """A staff action the case refused: its validators name the field ("new_deadline: ...", "state: ...")."""
    # The failure's own message: its str() puts the exception type first ("ValueError: new_deadline: ..."),
    # which would then read as the field's name.
    cause = error.cause
    message = cause.message if isinstance(cause, FailureError) else str(cause)
    return Refused(409, naming_a_field(message, "case"))


def case_busy(detail: str = "case: busy, nothing was applied; try again") -> Refused:
    """The case did not take the request in time (turned down as "not ready", or slow): worth sending again."""
    return Refused(503, detail, headers={"Retry-After": "1"})


def no_open_case(error: RPCError) -> Refused | None:
    """The account has no case running to act on (or the case was too busy), None when it is something else.

    "Workflow not ready" is a FAILED_PRECONDITION too, but of a case that is
    open: it must not read as "no open case" (the client already asked again).
    """
    if not_ready(error):
        return case_busy()
    if error.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
        return Refused(404, "account_id: the account has no open case")
    return None
