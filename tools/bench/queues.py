"""Where a phase's cases waited: schedule-to-start per task queue and workflow task timeouts, from their histories.

Each workflow task and activity task is written to history twice, when it was
scheduled and when a worker picked it up; the gap is the time it waited on its
queue. Workflow tasks wait either on the normal queue (a new case, or one the
worker no longer caches) or on the worker's sticky queue (a cached case's next
task); a sticky task that waits past the worker's timeout times out and goes
back through the normal queue with a full history, which is what issue 14 saw
after every stage at N = 2,000. Reading the histories measures all three on
the server's own clock, with nothing added to the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from temporalio.api.enums.v1 import EventType, TaskQueueKind
from temporalio.client import Client

from tools.bench.harness import pct

QUEUES = ("workflow_task_normal", "workflow_task_sticky", "activity_task")


def waits_of(events: Iterable[Any]) -> tuple[dict[str, list[float]], int]:
    """Seconds each task waited, by queue, and how many workflow tasks timed out, in one history."""
    scheduled: dict[int, tuple[str, float]] = {}
    waits: dict[str, list[float]] = {q: [] for q in QUEUES}
    timeouts = 0
    for event in events:
        at = event.event_time.ToNanoseconds() / 1e9
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            queue = event.workflow_task_scheduled_event_attributes.task_queue
            sticky = queue.kind == TaskQueueKind.TASK_QUEUE_KIND_STICKY
            scheduled[event.event_id] = ("workflow_task_sticky" if sticky else "workflow_task_normal", at)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = ("activity_task", at)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            _add(waits, scheduled, event.workflow_task_started_event_attributes.scheduled_event_id, at)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            _add(waits, scheduled, event.activity_task_started_event_attributes.scheduled_event_id, at)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            timeouts += 1
    return waits, timeouts


def _add(
    waits: dict[str, list[float]], scheduled: dict[int, tuple[str, float]], event_id: int, at: float
) -> None:
    found = scheduled.get(event_id)
    if found is not None:
        queue, since = found
        waits[queue].append(at - since)


async def task_waits(client: Client, workflow_ids: list[str], concurrency: int = 50) -> dict[str, Any]:
    """Schedule-to-start p50/p99/max per queue (ms) and workflow task timeouts over the given cases."""
    waits: dict[str, list[float]] = {q: [] for q in QUEUES}
    timeouts = 0
    limit = asyncio.Semaphore(concurrency)

    async def one(workflow_id: str) -> None:
        nonlocal timeouts
        async with limit:
            events = [e async for e in client.get_workflow_handle(workflow_id).fetch_history_events()]
        found, timed_out = waits_of(events)
        for queue, seconds in found.items():
            waits[queue] += seconds
        timeouts += timed_out

    await asyncio.gather(*(one(w) for w in workflow_ids))
    figures: dict[str, Any] = {"cases": len(workflow_ids), "workflow_task_timeouts": timeouts}
    for queue, seconds in waits.items():
        if seconds:
            figures[queue] = {
                "tasks": len(seconds),
                "p50_ms": pct(seconds, 0.5) * 1000,
                "p99_ms": pct(seconds, 0.99) * 1000,
                "max_ms": max(seconds) * 1000,
            }
    return figures


def describe(figures: dict[str, Any]) -> str:
    """One line for the terminal: each queue's p99 wait and the timeouts."""
    parts = [
        f"{queue.replace('_task', '').replace('_', ' ')} p99 {figures[queue]['p99_ms']:.0f} ms"
        for queue in QUEUES
        if queue in figures
    ]
    return (
        "schedule-to-start "
        + ", ".join(parts)
        + f"; workflow task timeouts {figures['workflow_task_timeouts']}"
    )
