"""``margin-call up`` and the demo: the whole system on one machine, from wheels only.

Starts what is not configured: PostgreSQL (embedded, migrated), the Temporal dev
server (SQLite under the data directory, Web UI, search attributes), the local
webhook receiver; then the worker, the risk monitor and the HTTP API, all on one
pool. Everything stops in reverse order; a second start resumes the same data.

Given a ``venue_port``, it also serves the venue simulator (``worker.stack.venue``)
there and the worker sends liquidation orders to it (the ``http`` venue); else
the worker's venue is the configured one (``MARGIN_CALL_VENUE``). With
``sample_exchange`` as well, the sample exchange is loaded through the API and
its market keeps ticking (``worker.exchange.sample``).

The data directory is this process's alone while the stack runs (a lock a
second start is refused on); servers a killed run left there are stopped
before anything starts, and every port is checked free first, so that nothing
quietly joins a leftover (see ``worker.stack.leftovers``).
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

from activities.ledger import LedgerActivities
from activities.ledger.migrate import migrate
from worker.api import create_app
from worker.api_tokens import SCOPES
from worker.config import Settings
from worker.exchange.market import Market
from worker.exchange.sample import sample_exchange
from worker.monitor import RiskMonitor
from worker.receiver import WebhookReceiver
from worker.serving import serving
from worker.stack.datadir import stop_leftovers
from worker.stack.leftovers import DataDirLock, ensure_ports_free
from worker.stack.postgres import create_pool, ledger_database
from worker.stack.temporal import TEMPORAL_DATABASE, TemporalDevServer
from worker.stack.venue import VenueSimulator
from worker.worker import metrics_runtime, running_worker
from workflows.client import MarginCallClient, connect
from workflows.domain.policies import DEFAULT_POLICY, CasePolicy, open_book

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
    venue_url: str | None = None
    venue: VenueSimulator | None = None
    market: Market | None = None

    def describe(self) -> str:
        rows = [
            ("Temporal", self.temporal_address),
            ("Web UI", self.web_ui or "(configured cluster)"),
            ("PostgreSQL", self.database_url),
            ("Notices to", self.notifier_url or "(not configured: logged only)"),
        ]
        if self.api_url:
            rows.append(("HTTP API", f"{self.api_url}/docs"))
            rows.append(("Console", f"{self.api_url}/console/ (sign in with an API token)"))
        if self.api_token:
            rows.append(("API token", f"{self.api_token} (all scopes; set MARGIN_CALL_API_TOKENS to choose)"))
        if self.venue is not None:
            rows.append(("Orders to", f"{self.venue_url} (venue simulator; admin routes under /admin)"))
        elif self.venue_url:
            rows.append(("Orders to", f"{self.venue_url} (MARGIN_CALL_VENUE_URL)"))
        if self.market is not None:
            rows.append(("Sample", "exchange loaded through the feeds; its market keeps the marks fresh"))
        return "\n".join(f"  {name:<11} {value}" for name, value in rows)


async def migrated(pool: asyncpg.Pool) -> list[str]:
    """The ledger's schema brought up to date; the migrations applied now, logged."""
    async with pool.acquire() as conn:
        applied = await migrate(conn)
    if applied:
        log.info("migrations applied: %s", ", ".join(applied))
    return applied


@asynccontextmanager
async def embedded_stack(
    settings: Settings,
    *,
    temporal_port: int = 7233,
    receiver_port: int = 8377,
    api_port: int | None = 8080,
    policy: CasePolicy | None = None,
    monitor_interval: float = 1.0,
    venue_port: int | None = None,
    sample_exchange_token: str | None = None,
    temporal_ui: bool = True,
) -> AsyncIterator[Stack]:
    """The stack until the block ends; see the module's docstring.

    ``sample_exchange_token``: load the sample exchange with this API token (it
    needs ``admin`` and ``feed:write``; "" means the development token ``up``
    makes), which takes ``api_port`` and ``venue_port``.
    """
    if sample_exchange_token is not None and (api_port is None or venue_port is None):
        raise ValueError(
            "the sample exchange is loaded through the API into the venue simulator: give both ports"
        )
    server = (
        None
        if settings.temporal_address
        else TemporalDevServer(settings.data_dir / TEMPORAL_DATABASE, port=temporal_port, ui=temporal_ui)
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
        if venue_port is not None:
            ports.append(("127.0.0.1", venue_port, "the venue simulator"))
        if settings.metrics_port is not None:
            ports.append(("0.0.0.0", settings.metrics_port, "metrics (MARGIN_CALL_METRICS_PORT)"))
        ensure_ports_free(ports)

        # PostgreSQL, and the process's one pool: the worker, the monitor and the API share it.
        database = await stack.enter_async_context(ledger_database(settings.database_url, settings.data_dir))
        pool = await create_pool(database.url, max_size=20)
        stack.push_async_callback(pool.close)
        await migrated(pool)

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

        # Liquidation orders: to the simulator when it runs here, else to the configured gateway.
        venue: VenueSimulator | None = None
        venue_url = settings.order_gateway
        if venue_port is not None:
            venue = VenueSimulator()
            await stack.enter_async_context(serving(venue.app(), venue_port))
            venue_url = f"http://127.0.0.1:{venue_port}"

        # A run given its own policy (the demo, the soak) is its own operator.
        book = settings.policies if policy is None else open_book(policy)
        await stack.enter_async_context(
            running_worker(
                client,
                pool,
                notifier_url,
                settings.webhook_secret,
                max_concurrent_activities=settings.max_concurrent_activities,
                sandboxed=settings.workflow_sandbox,
                policies=book,
                venue_url=venue_url,
            )
        )
        monitor = RiskMonitor(
            LedgerActivities(pool),
            MarginCallClient(client),
            policy or book.resolve(DEFAULT_POLICY),
            policies=book,
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
            app = create_app(
                MarginCallClient(client),
                pool,
                tokens,
                book,
                temporal_ui_url=settings.temporal_ui_url or web_ui,
            )
            await stack.enter_async_context(serving(app, api_port))
            api_url = f"http://127.0.0.1:{api_port}"

        market: Market | None = None
        if sample_exchange_token is not None:
            assert api_url is not None and venue_url is not None
            token = sample_exchange_token or api_token
            if not token:
                raise ValueError(
                    "MARGIN_CALL_API_TOKENS: the sample exchange needs a token with admin and feed:write"
                )
            market = await stack.enter_async_context(sample_exchange(api_url, token, venue_url))
            assert venue is not None
            venue.before_match = market.follow  # no order meets a book quoted before the mark moved
            stack.callback(setattr, venue, "before_match", None)  # unhooked before the market stops
        yield Stack(
            client,
            pool,
            database.url,
            address,
            web_ui,
            notifier_url,
            receiver,
            monitor,
            api_url,
            api_token,
            venue_url,
            venue,
            market,
        )
