"""The commands that run until SIGTERM or Ctrl-C (``up``, ``api``, ``worker``, ``monitor``), and ``db migrate``.

Each opens what it needs through ``_resources`` and closes it, in order, when
stopped; a clean stop exits 0.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import TYPE_CHECKING

from worker.cli._resources import DEFAULT_ADDRESS, case_client, ledger_database_url, ledger_pool
from worker.config import Settings
from workflows.domain.policies import DEFAULT_POLICY

if TYPE_CHECKING:
    from worker.stack import Stack

# What the sample exchange's loader and market call: reference data and the fund, then the feeds.
SAMPLE_SCOPES = frozenset({"admin", "feed:write"})


def sample_token(settings: Settings) -> str:
    """The configured token the sample exchange loads with, or "" for the development token ``up`` makes."""
    if not settings.api_tokens:
        return ""
    for token, scopes in settings.api_tokens.items():
        if scopes >= SAMPLE_SCOPES:
            return token
    raise ValueError(
        "MARGIN_CALL_API_TOKENS: --sample-exchange needs a token with the admin and feed:write scopes"
    )


def up_stack(
    settings: Settings,
    temporal_port: int,
    receiver_port: int,
    api_port: int,
    venue_port: int | None,
    *,
    temporal_ui: bool = True,
) -> AbstractAsyncContextManager[Stack]:
    """What ``up`` runs (the README's test brings it up on free ports through this too).

    ``venue_port``: with the sample exchange, loaded through the API, and the
    venue simulator on that port taking the liquidation orders.
    """
    from worker.stack import embedded_stack

    return embedded_stack(
        settings,
        temporal_port=temporal_port,
        receiver_port=receiver_port,
        api_port=api_port,
        venue_port=venue_port,
        sample_exchange_token=sample_token(settings) if venue_port is not None else None,
        temporal_ui=temporal_ui,
    )


async def up(
    settings: Settings, temporal_port: int, receiver_port: int, api_port: int, venue_port: int | None
) -> int:
    """The embedded stack (Temporal, PostgreSQL, worker, monitor, receiver, API) until stopped."""
    from worker.worker import stop_on_signals

    async with up_stack(settings, temporal_port, receiver_port, api_port, venue_port) as stack:
        print("margin-call is up:\n" + stack.describe() + "\nCtrl-C stops everything.", flush=True)
        await stop_on_signals().wait()
        print("stopping...", flush=True)
    return 0


async def api(settings: Settings, host: str, port: int) -> int:
    """Serve the HTTP API; it refuses to start without a token to check callers against."""
    from worker.api import DEFAULT_TEMPORAL_UI_URL, create_app
    from worker.serving import serving
    from worker.worker import stop_on_signals

    if not settings.api_tokens:
        raise ValueError("MARGIN_CALL_API_TOKENS: set at least one token=scope,... to serve the API")
    async with ledger_pool(settings) as pool:
        app = create_app(
            await case_client(settings),
            pool,
            settings.api_tokens,
            settings.policies,
            temporal_ui_url=settings.temporal_ui_url or DEFAULT_TEMPORAL_UI_URL,
        )
        async with serving(app, port, host):
            logging.getLogger("margin_call.api").info("serving on http://%s:%d", host, port)
            await stop_on_signals().wait()
    return 0


async def worker(settings: Settings) -> int:
    """A worker on the cases' task queue, with the metrics endpoint if one is configured."""
    from worker.worker import metrics_runtime, running_worker, stop_on_signals
    from workflows.client import connect

    stop = stop_on_signals()  # before anything starts, so an early SIGTERM is a clean stop too
    async with ledger_database_url(settings) as url:
        client = await connect(
            settings.temporal_address or DEFAULT_ADDRESS,
            settings.namespace,
            runtime=metrics_runtime(settings.metrics_port),
        )
        async with running_worker(
            client,
            url,
            settings.notifier_url,
            settings.webhook_secret,
            max_concurrent_activities=settings.max_concurrent_activities,
            sandboxed=settings.workflow_sandbox,
            policies=settings.policies,
            venue_url=settings.order_gateway,
        ):
            await stop.wait()
    return 0


async def monitor(settings: Settings, interval: timedelta) -> int:
    """Scan the ledger for breached accounts every ``interval`` and open (or escalate) their cases."""
    from activities.ledger import LedgerActivities
    from worker.monitor import RiskMonitor
    from worker.worker import metrics_runtime, stop_on_signals
    from workflows.client import MarginCallClient, connect

    async with ledger_pool(settings) as pool:
        # Cases the monitor opens follow the policy the exchange named for the account, else the
        # operator's standard policy (its hard line too).
        policy = settings.policies.resolve(DEFAULT_POLICY)
        # The warnings it sends are counted on its own Prometheus endpoint (MARGIN_CALL_METRICS_PORT).
        address = settings.temporal_address or DEFAULT_ADDRESS
        runtime = metrics_runtime(settings.metrics_port)
        cases = MarginCallClient(await connect(address, settings.namespace, runtime=runtime))
        risk_monitor = RiskMonitor(LedgerActivities(pool), cases, policy, policies=settings.policies)
        await risk_monitor.run(stop_on_signals(), interval.total_seconds())
    return 0


async def db_migrate(settings: Settings) -> int:
    """Apply the ledger's SQL migrations (safe to run twice)."""
    from activities.ledger.migrate import migrate

    async with ledger_pool(settings) as pool, pool.acquire() as conn:
        applied = await migrate(conn)
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0
