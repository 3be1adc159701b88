"""A case's update asked again under its id while the case is slow or "not ready".

Pulled out of the client so that the rule lives in one place for deposits and
staff actions alike, and can be checked as a pure unit.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from temporalio.client import WorkflowHandle, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError

Answer = TypeVar("Answer")


def not_ready(error: RPCError) -> bool:
    """The server's "workflow not ready" answer to an update: worth asking again."""
    details = error.grpc_status.details if error.grpc_status else []
    return any(d.type_url.endswith("WorkflowNotReadyFailure") for d in details)


async def ask(
    handle: WorkflowHandle[Any, Any],
    update: str,
    arg: Any,
    update_id: str,
    answer: type[Answer],
    attempts: int,
) -> Answer:
    """The update, asked again under the same id while the case is slow or "not ready", ``attempts`` calls at most.

    The server joins each retry to the update of that id, so an action or a
    deposit is taken once however often it is asked. Two answers are worth
    asking again: a call's deadline passing before an overloaded case answered,
    and "workflow not ready" (the server turned down the workflow task that
    carried the update, because a new event arrived as it completed: seen in
    the bench and in CI). A deposit turned down that way was once reported as
    "no open case" and waited for the case's deadline to be found.
    """
    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            result: Answer = await handle.execute_update(update, arg, id=update_id, result_type=answer)
            return result
        except WorkflowUpdateRPCTimeoutOrCancelledError as error:
            # The SDK says the same for a caller cancelled (Ctrl-C, shutdown): that is no reason to ask again.
            if last or _cancelled(error):
                raise
        except RPCError as error:
            if not not_ready(error) or last:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _cancelled(error: BaseException) -> bool:
    task = asyncio.current_task()
    return isinstance(error.__cause__, asyncio.CancelledError) or bool(task and task.cancelling())
