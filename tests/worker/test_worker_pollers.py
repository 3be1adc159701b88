"""The worker's polling settings that the bench measured (issue 14): kept in the product's worker.

A crash's wake-ups, deposits and deadlines wait on the worker's sticky queue; with a fixed split
that left one poller there, a deposit waited seconds behind a burst of new cases. The figures are
the bench's (``make bench``); this test keeps the settings from being lost in a refactor.
"""

from __future__ import annotations

import asyncpg
import httpx
from temporalio.client import Client
from temporalio.worker import PollerBehaviorAutoscaling

from worker.config import DEV_WEBHOOK_SECRET
from worker.worker import CACHED_CASES, build_worker


async def test_each_workflow_task_queue_scales_its_own_pollers_and_the_cache_holds_a_crash(
    temporal: Client, pool: asyncpg.Pool
) -> None:
    async with httpx.AsyncClient() as http:
        # A queue of its own: the suite's case worker already holds ``margin-calls`` on this client.
        worker = build_worker(temporal, pool, http, None, DEV_WEBHOOK_SECRET, task_queue="pollers-settings")
    config = worker.config()
    # Autoscaling is per queue in SDK core: the sticky queue is no longer left one poller.
    assert isinstance(config.get("workflow_task_poller_behavior"), PollerBehaviorAutoscaling), config
    assert config.get("max_cached_workflows") == CACHED_CASES >= 2000, config
