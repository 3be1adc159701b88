"""The worker process: hosts the case workflow and every activity on ``margin-calls``.

It owns the httpx client (and, in a process of its own, the asyncpg pool) for
its lifetime and stops gracefully: on SIGTERM/SIGINT it stops polling, lets
running activities finish (within a grace period) and closes the client and
the pool last. ``worker.stack`` brings it up with the servers it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    PollerBehaviorAutoscaling,
    PollerBehaviorSimpleMaximum,
    UnsandboxedWorkflowRunner,
    Worker,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.ledger import Checkpoint, LedgerActivities, NoticeJournal
from activities.notifier import NotifierActivities, notifier_http_client
from activities.venue import HttpVenue, Venue, venue_http_client
from worker import failpoints
from worker.outbox import NoticeDispatcher
from workflows import contract
from workflows.case import MarginCallWorkflow
from workflows.domain.policies import STANDARD_BOOK, PolicyBook

log = logging.getLogger("margin_call.worker")

# Cases a worker keeps in memory: above the cases open at once in the bench's crash (N = 2,000), as
# a case out of the cache replays its whole history on its next task. The bench's 10,000 waiting
# cases exceed it on purpose: its memory figure is what a full cache costs.
CACHED_CASES = 5000


def build_worker(
    client: Client,
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    notifier_url: str | None,
    webhook_secret: str,
    *,
    max_concurrent_activities: int = 200,
    max_cached_cases: int = CACHED_CASES,
    sandboxed: bool = False,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
    policies: PolicyBook = STANDARD_BOOK,
    venue: Venue | None = None,
    task_queue: str = contract.TASK_QUEUE,
    checkpoint: Checkpoint | None = None,
) -> Worker:
    """The worker; ``extra_*`` lets the benchmark host its ceiling workflow under the same settings.

    ``sandboxed`` runs each case in Temporal's workflow sandbox, which re-imports
    the workflow module per case and proxies every import: about a third of the
    worker's CPU per case in ``make bench``. Production runs without it; the test
    suite runs with it, so a non-deterministic call in workflow code still fails
    there, and the recorded histories are replayed both ways.

    ``venue``: where liquidation orders go (None: the ledger's backstop). ``task_queue``
    and ``checkpoint`` let a test run a second worker (another venue) beside the first.
    """
    ledger = LedgerActivities(
        pool, policies, checkpoint=checkpoint or failpoints.from_environment(), venue=venue
    )
    notifier = NotifierActivities(http, notifier_url, webhook_secret, journal=NoticeJournal(pool))
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[MarginCallWorkflow, *extra_workflows],
        activities=[
            ledger.open_case,
            ledger.load_margin_snapshot,
            ledger.execute_liquidation_stage,
            ledger.settle_bankruptcy,
            ledger.close_case,
            ledger.record_case_event,
            notifier.deliver_notice,
            *extra_activities,
        ],
        max_concurrent_activities=max_concurrent_activities,
        # Cases wait for hours: keep many cached so a wake-up is not a full replay.
        max_cached_workflows=max_cached_cases,
        # A crash is a burst of new cases on the normal queue, then of wake-ups,
        # deposits and deadlines on this worker's sticky queue. A fixed split
        # starved one or the other: the old 10 normal pollers left one on the
        # sticky queue (deposits p99 6.7 s at N = 500), and 10 + 10 timed tasks
        # out. Autoscaling scales each queue's pollers on its own backlog:
        # deposits p99 79 ms, no task timeouts (docs/design.md, "Worker pollers").
        workflow_task_poller_behavior=PollerBehaviorAutoscaling(minimum=2, maximum=20, initial=5),
        activity_task_poller_behavior=PollerBehaviorSimpleMaximum(10),
        # A case's next task waits on this worker's sticky queue; under a
        # crash's load it waited more than the default 10 s, timed out and went
        # back through the normal queue (two more events and a full history each
        # time). 30 s still hands a dead worker's cases to another one promptly.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=30),
        graceful_shutdown_timeout=timedelta(seconds=10),
        workflow_runner=SandboxedWorkflowRunner() if sandboxed else UnsandboxedWorkflowRunner(),
    )


@asynccontextmanager
async def running_worker(
    client: Client,
    ledger: asyncpg.Pool | str,
    notifier_url: str | None,
    webhook_secret: str,
    *,
    max_concurrent_activities: int = 200,
    sandboxed: bool = False,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
    policies: PolicyBook = STANDARD_BOOK,
    venue_url: str | None = None,
    task_queue: str = contract.TASK_QUEUE,
    checkpoint: Checkpoint | None = None,
) -> AsyncIterator[Worker]:
    """A started worker, its HTTP client and the notice outbox's dispatcher, torn down in order.

    ``ledger``: the process's pool, when the worker shares its process (``up`` runs the monitor
    and the API on the same one, and closes it), or the database URL for a pool of the worker's
    own, closed with it. ``venue_url``: the order gateway of the ``http`` venue (None: the
    ``ledger`` venue).
    """
    async with contextlib.AsyncExitStack() as owned:
        if isinstance(ledger, str):
            pool = await asyncpg.create_pool(ledger, min_size=1, max_size=20, command_timeout=30)
            assert pool is not None
            owned.push_async_callback(pool.close)
        else:
            pool = ledger
        http = await owned.enter_async_context(notifier_http_client())
        venue = None
        if venue_url is not None:
            venue = HttpVenue(await owned.enter_async_context(venue_http_client()), venue_url)
        worker = build_worker(
            client,
            pool,
            http,
            notifier_url,
            webhook_secret,
            max_concurrent_activities=max_concurrent_activities,
            sandboxed=sandboxed,
            extra_workflows=extra_workflows,
            extra_activities=extra_activities,
            policies=policies,
            venue=venue,
            task_queue=task_queue,
            checkpoint=checkpoint,
        )
        stop = asyncio.Event()
        # A worker with no notifier leaves the outbox to those that have one.
        outbox = (
            asyncio.create_task(
                NoticeDispatcher(pool, NotifierActivities(http, notifier_url, webhook_secret)).run(stop)
            )
            if notifier_url is not None
            else None
        )
        try:
            async with worker:
                log.info("worker polling task_queue=%s venue=%s", task_queue, venue_url or "ledger")
                yield worker
        finally:
            stop.set()
            if outbox is not None:
                await outbox
        log.info("worker stopped")


def metrics_runtime(port: int | None) -> Runtime | None:
    """A runtime exporting the SDK's and the cases' metrics for Prometheus on ``port``."""
    if port is None:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{port}")))


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, for a clean stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
