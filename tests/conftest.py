"""Real services for the whole run: one PostgreSQL (embedded unless configured).

Each test that touches the ledger gets its own database, cloned from a migrated
template, so tests never see each other's money.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from activities.database import create_pool, resolve_database_url
from activities.migrate import migrate

TEMPLATE = "margin_call_template"
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
    from activities.audit import check_ledger
    from worker.market import list_venue

    async with pool.acquire() as conn:
        await list_venue(conn)
    yield pool
    async with pool.acquire() as conn:
        check = await check_ledger(conn)
    assert check.balanced, check
