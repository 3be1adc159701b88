"""The commands that run until SIGTERM or Ctrl-C (``up``, ``api``, ``worker``, ``monitor``), and ``db migrate``.

Each opens what it needs through ``_resources`` and closes it, in order, when
stopped; a clean stop exits 0.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from worker.cli._resources import DEFAULT_ADDRESS, case_client, ledger_database_url, ledger_pool
from worker.config import Settings
from workflows.domain.policies import DEFAULT_POLICY


async def up(settings: Settings, temporal_port: int, receiver_port: int, api_port: int) -> int:
    """The embedded stack (Temporal, PostgreSQL, worker, monitor, receiver, API) until stopped."""
    from worker.stack import embedded_stack
    from worker.worker import stop_on_signals

    async with embedded_stack(
        settings, temporal_port=temporal_port, receiver_port=receiver_port, api_port=api_port
    ) as stack:
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
    from worker.worker import stop_on_signals

    async with ledger_pool(settings) as pool:
        # Cases the monitor opens follow the policy the exchange named for the account, else the
        # operator's standard policy (its hard line too).
        policy = settings.policies.resolve(DEFAULT_POLICY)
        risk_monitor = RiskMonitor(
            LedgerActivities(pool), await case_client(settings), policy, policies=settings.policies
        )
        await risk_monitor.run(stop_on_signals(), interval.total_seconds())
    return 0


async def db_migrate(settings: Settings) -> int:
    """Apply the ledger's SQL migrations (safe to run twice)."""
    from activities.ledger.migrate import migrate

    async with ledger_pool(settings) as pool, pool.acquire() as conn:
        applied = await migrate(conn)
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0
