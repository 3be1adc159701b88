"""How a case calls the ledger: by activity name, retried until it is done, local where a re-run is harmless.

The case never imports the ledger's code (asyncpg, SQL): it names the activity
(``contract.ACTIVITY_*``) and the type it expects back. Ledger work must
finish, so a call is retried until it does, except for errors the ledger marks
non-retryable (unknown account, idempotency conflict, a stage refused for a
healthy account, ...), which reach the case as an ``ActivityError``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

T = TypeVar("T")

LEDGER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


async def call_ledger(
    activity: str, arg: object, result_type: type[T], summary: str, *, timeout: timedelta, local: bool = True
) -> T:
    """A ledger call, by default as a local activity: one marker in history, no task-queue trip.

    A local activity cut short by a worker crash runs again from the last
    completed workflow task, so only calls whose re-run is harmless are local:
    reads, and writes idempotent whatever they are given (case record, audit
    events, bankruptcy settlement). A liquidation stage is a regular activity
    (``local=False``): its plan is written to history before it runs, so a
    retry sells exactly what the first attempt planned, or finds it done.
    ``summary`` names the call in the Web UI; ``timeout`` bounds one attempt.
    """
    if local:
        return await workflow.execute_local_activity(  # type: ignore[no-any-return]
            activity,
            arg,
            result_type=result_type,
            start_to_close_timeout=timeout,
            retry_policy=LEDGER_RETRY,
            summary=summary,
        )
    return await workflow.execute_activity(  # type: ignore[no-any-return]
        activity,
        arg,
        result_type=result_type,
        start_to_close_timeout=timeout,
        retry_policy=LEDGER_RETRY,
        summary=summary,
    )
