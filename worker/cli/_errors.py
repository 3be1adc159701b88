"""How a failed command ends: one line ``error: <field>: <problem>`` on stderr and an exit status.

Exit 2 is the caller's mistake or a refusal (bad input, an unknown account, a
case that refuses the action), exit 1 is a server that could not be asked;
neither prints a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pydantic import ValidationError
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.exceptions import LedgerError
from worker.config import ConfigError
from workflows.domain.validation import describe_validation_error

REFUSED = 2
UNAVAILABLE = 1


def failure(error: Exception) -> tuple[int, str] | None:
    """The exit status and the line for ``error``, or None when it is a bug (let it show its traceback)."""
    if isinstance(error, ValidationError):
        return REFUSED, describe_validation_error(error)
    if isinstance(error, WorkflowUpdateFailedError):
        # The case's validators name the field ("state: ...", "new_deadline: ..."); the message
        # alone, as ``str`` would put the validator's exception type in front of the field.
        cause = error.cause
        return REFUSED, f"refused: {cause.message if isinstance(cause, ApplicationError) else cause}"
    if isinstance(error, RPCError):
        return UNAVAILABLE, error.message
    if isinstance(error, ConfigError | ValueError | LedgerError):
        return REFUSED, str(error)
    return None
