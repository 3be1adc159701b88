"""``margin-call up``: the whole system on one machine, from wheels only.

Starts what is not configured: PostgreSQL (embedded, migrated), the Temporal dev
server (SQLite under the data directory, Web UI, search attributes), the local
webhook receiver; then the worker and the risk monitor. Everything stops in
reverse order; a second start resumes the same data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import uvicorn
from temporalio.client import Client

from activities.database import EmbeddedPostgres, create_pool
from activities.ledger import LedgerActivities
from activities.migrate import migrate
from worker.config import Settings
from worker.devserver import TemporalDevServer
from worker.monitor import RiskMonitor
from worker.receiver import WebhookReceiver
from worker.worker import running_worker
from workflows.client import MarginCallClient, connect
from workflows.models import CasePolicy

log = logging.getLogger("margin_call.stack")


@dataclass
class Stack:
    client: Client
    pool: asyncpg.Pool
    database_url: str
    temporal_address: str
    web_ui: str | None
    notifier_url: str | None
    receiver: WebhookReceiver | None
    monitor: RiskMonitor

    def describe(self) -> str:
        rows = [
            ("Temporal", self.temporal_address),
            ("Web UI", self.web_ui or "(configured cluster)"),
            ("PostgreSQL", self.database_url),
            ("Notices to", self.notifier_url or "(not configured: logged only)"),
        ]
        return "\n".join(f"  {name:<11} {value}" for name, value in rows)


async def _serve_receiver(receiver: WebhookReceiver, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(receiver.app(), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises the bind error
        await asyncio.sleep(0.05)
    return server, task


@asynccontextmanager
async def embedded_stack(
    settings: Settings,
    *,
    temporal_port: int = 7233,
    receiver_port: int = 8377,
    policy: CasePolicy | None = None,
    monitor_interval: float = 1.0,
) -> AsyncIterator[Stack]:
    async with contextlib.AsyncExitStack() as stack:
        # PostgreSQL
        if settings.database_url:
            database_url = settings.database_url
        else:
            postgres = EmbeddedPostgres(settings.data_dir / "postgres")
            database_url = await postgres.start()
            stack.push_async_callback(postgres.stop)
        pool = await create_pool(database_url, max_size=10)
        stack.push_async_callback(pool.close)
        async with pool.acquire() as conn:
            applied = await migrate(conn)
        if applied:
            log.info("migrations applied: %s", ", ".join(applied))

        # Temporal
        web_ui: str | None = None
        if settings.temporal_address:
            client = await connect(settings.temporal_address, settings.namespace)
            address = settings.temporal_address
        else:
            server = TemporalDevServer(settings.data_dir / "temporal" / "temporal.sqlite", port=temporal_port)
            stack.push_async_callback(server.stop)
            client = await server.start()
            address, web_ui = server.address, server.ui_url

        # Notices
        receiver: WebhookReceiver | None = None
        notifier_url = settings.notifier_url
        if notifier_url is None:
            receiver = WebhookReceiver(settings.webhook_secret, journal=settings.data_dir / "notices.jsonl")
            http_server, task = await _serve_receiver(receiver, receiver_port)

            async def stop_receiver() -> None:
                http_server.should_exit = True
                await task

            stack.push_async_callback(stop_receiver)
            notifier_url = f"http://127.0.0.1:{receiver_port}/webhooks"

        await stack.enter_async_context(
            running_worker(
                client,
                database_url,
                notifier_url,
                settings.webhook_secret,
                max_concurrent_activities=settings.max_concurrent_activities,
            )
        )
        monitor = RiskMonitor(LedgerActivities(pool), MarginCallClient(client), policy or CasePolicy())
        stop_monitor = asyncio.Event()
        monitor_task = asyncio.create_task(monitor.run(stop_monitor, monitor_interval))

        async def stop_monitoring() -> None:
            stop_monitor.set()
            await monitor_task

        stack.push_async_callback(stop_monitoring)
        yield Stack(client, pool, database_url, address, web_ui, notifier_url, receiver, monitor)
