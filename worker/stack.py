"""``margin-call up``: the whole system on one machine, from wheels only.

Starts what is not configured: PostgreSQL (embedded, migrated), the Temporal dev
server (SQLite under the data directory, Web UI, search attributes), the local
webhook receiver; then the worker and the risk monitor. Everything stops in
reverse order; a second start resumes the same data.

The data directory is this process's alone while the stack runs (a lock a
second start is refused on); servers a killed run left there are stopped
before anything starts, and every port is checked free first, so that nothing
quietly joins a leftover (see ``worker.leftovers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from temporalio.client import Client

from activities.database import EmbeddedPostgres, create_pool, stop_leftover_postgres
from activities.ledger import LedgerActivities
from activities.ledger.migrate import migrate
from worker.api import create_app
from worker.api_tokens import SCOPES
from worker.config import Settings
from worker.devserver import TemporalDevServer, stop_leftover_temporal
from worker.leftovers import LOCK_FILE, DataDirLock, LeftoverError, ensure_ports_free
from worker.monitor import RiskMonitor
from worker.receiver import WebhookReceiver
from worker.serving import serving
from worker.worker import metrics_runtime, running_worker
from workflows.client import MarginCallClient, connect
from workflows.domain.policies import DEFAULT_POLICY, CasePolicy, open_book

log = logging.getLogger("margin_call.stack")

# Where each embedded server keeps its state in a data directory.
POSTGRES_DIR = "postgres"
TEMPORAL_DATABASE = Path("temporal") / "temporal.sqlite"


def stop_leftovers(data_dir: Path) -> None:
    """Stop the servers a killed run left on ``data_dir``. Blocking; hold the directory's lock."""
    stop_leftover_temporal(data_dir / TEMPORAL_DATABASE)
    stop_leftover_postgres(data_dir / POSTGRES_DIR)


@asynccontextmanager
async def scratch_data_dir(prefix: str) -> AsyncIterator[Path]:
    """A new data directory under the temp dir for one bench or soak run, locked, removed after it.

    A killed run removed nothing, so its directory is still there with its servers running:
    directories of earlier runs whose lock is free are cleared first, servers and all.
    """
    await asyncio.to_thread(_clear_killed_runs, prefix)
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    lock = DataDirLock(directory)
    lock.acquire()
    try:
        yield directory
    finally:
        await asyncio.to_thread(shutil.rmtree, directory, True)
        lock.release()


@asynccontextmanager
async def fresh_data_dir(directory: Path) -> AsyncIterator[Path]:
    """``directory`` emptied for a run that starts from nothing (the demo), and locked.

    Locked before emptying, since removing the directory from under a live run would take its
    lock file with it; and a killed run's servers are stopped, since nothing would record them.
    """
    lock = DataDirLock(directory)
    lock.acquire()
    try:
        if lock.first:
            await asyncio.to_thread(stop_leftovers, directory)
        await asyncio.to_thread(_empty, directory)
        yield directory
    finally:
        lock.release()


def _empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _clear_killed_runs(prefix: str) -> None:
    for old in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        lock = DataDirLock(old)
        if not old.is_dir() or not lock.try_acquire():
            continue  # a run still going
        try:
            stop_leftovers(old)
            shutil.rmtree(old, ignore_errors=True)
        except LeftoverError as error:
            log.warning("left %s in place: %s", old, error)
        finally:
            lock.release()


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
    server = (
        None
        if settings.temporal_address
        else TemporalDevServer(settings.data_dir / TEMPORAL_DATABASE, port=temporal_port)
    )
    async with contextlib.AsyncExitStack() as stack:
        if not (settings.database_url and server is None and settings.notifier_url):
            lock = DataDirLock(settings.data_dir)
            lock.acquire()
            stack.callback(lock.release)
            if lock.first:
                await asyncio.to_thread(stop_leftovers, settings.data_dir)
        ports = server.ports() if server else []
        if settings.notifier_url is None:
            ports.append(("127.0.0.1", receiver_port, "the webhook receiver"))
        if api_port is not None:
            ports.append(("127.0.0.1", api_port, "the HTTP API"))
        if settings.metrics_port is not None:
            ports.append(("0.0.0.0", settings.metrics_port, "metrics (MARGIN_CALL_METRICS_PORT)"))
        ensure_ports_free(ports)

        # PostgreSQL
        if settings.database_url:
            database_url = settings.database_url
        else:
            postgres = EmbeddedPostgres(settings.data_dir / POSTGRES_DIR)
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
        if server is None:
            assert settings.temporal_address is not None
            client = await connect(settings.temporal_address, settings.namespace, runtime=runtime)
            address = settings.temporal_address
        else:
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

        # A run given its own policy (the demo, the soak) is its own operator.
        book = settings.policies if policy is None else open_book(policy)
        await stack.enter_async_context(
            running_worker(
                client,
                database_url,
                notifier_url,
                settings.webhook_secret,
                max_concurrent_activities=settings.max_concurrent_activities,
                sandboxed=settings.workflow_sandbox,
                policies=book,
            )
        )
        monitor = RiskMonitor(
            LedgerActivities(pool), MarginCallClient(client), policy or book.resolve(DEFAULT_POLICY)
        )
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
            app = create_app(MarginCallClient(client), pool, tokens, book)
            await stack.enter_async_context(serving(app, api_port))
            api_url = f"http://127.0.0.1:{api_port}"
        yield Stack(
            client, pool, database_url, address, web_ui, notifier_url, receiver, monitor, api_url, api_token
        )
