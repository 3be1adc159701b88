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
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from temporalio.client import Client

from activities.database import EmbeddedPostgres, create_pool
from activities.ledger import LedgerActivities
from activities.migrate import migrate
from worker.api import create_app
from worker.api_tokens import SCOPES
from worker.config import Settings
from worker.devserver import TemporalDevServer
from worker.monitor import RiskMonitor
from worker.receiver import WebhookReceiver
from worker.serving import serving
from worker.worker import metrics_runtime, running_worker
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
    api_url: str | None
    api_token: str | None

    def describe(self) -> str:
        rows = [
            ("Temporal", self.temporal_address),
            ("Web UI", self.web_ui or "(configured cluster)"),
            ("PostgreSQL", self.database_url),
            ("Notices to", self.notifier_url or "(not configured: logged only)"),
        ]
        if self.api_url:
            rows.append(("HTTP API", f"{self.api_url}/docs"))
        if self.api_token:
            rows.append(("API token", f"{self.api_token} (all scopes; set MARGIN_CALL_API_TOKENS to choose)"))
        return "\n".join(f"  {name:<11} {value}" for name, value in rows)


@asynccontextmanager
async def embedded_stack(
    settings: Settings,
    *,
    temporal_port: int = 7233,
    receiver_port: int = 8377,
    api_port: int | None = 8080,
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
        runtime = metrics_runtime(settings.metrics_port)
        web_ui: str | None = None
        if settings.temporal_address:
            client = await connect(settings.temporal_address, settings.namespace, runtime=runtime)
            address = settings.temporal_address
        else:
            server = TemporalDevServer(settings.data_dir / "temporal" / "temporal.sqlite", port=temporal_port)
            stack.push_async_callback(server.stop)
            client = await server.start(runtime=runtime)
            address, web_ui = server.address, server.ui_url

        # Notices
        receiver: WebhookReceiver | None = None
        notifier_url = settings.notifier_url
        if notifier_url is None:
            receiver = WebhookReceiver(settings.webhook_secret, journal=settings.data_dir / "notices.jsonl")
            await stack.enter_async_context(serving(receiver.app(), receiver_port))
            notifier_url = f"http://127.0.0.1:{receiver_port}/webhooks"

        await stack.enter_async_context(
            running_worker(
                client,
                database_url,
                notifier_url,
                settings.webhook_secret,
                max_concurrent_activities=settings.max_concurrent_activities,
                sandboxed=settings.workflow_sandbox,
            )
        )
        monitor = RiskMonitor(LedgerActivities(pool), MarginCallClient(client), policy or CasePolicy())
        stop_monitor = asyncio.Event()
        monitor_task = asyncio.create_task(monitor.run(stop_monitor, monitor_interval))

        async def stop_monitoring() -> None:
            stop_monitor.set()
            await monitor_task

        stack.push_async_callback(stop_monitoring)

        # HTTP API
        api_url: str | None = None
        api_token: str | None = None
        if api_port is not None:
            tokens = dict(settings.api_tokens)
            if not tokens:
                api_token = secrets.token_urlsafe(24)
                tokens = {api_token: frozenset(SCOPES)}
            app = create_app(MarginCallClient(client), pool, tokens)
            await stack.enter_async_context(serving(app, api_port))
            api_url = f"http://127.0.0.1:{api_port}"
        yield Stack(
            client, pool, database_url, address, web_ui, notifier_url, receiver, monitor, api_url, api_token
        )
