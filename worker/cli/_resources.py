"""What a command opens and must close: the ledger's database and the case client.

The ledger is the configured PostgreSQL (``MARGIN_CALL_DATABASE_URL``) or the
embedded one under the data directory, started here, or joined when
``margin-call up`` already runs it. Either way the command sees one URL or one
pool, and the embedded server is stopped (if it is ours) when the block ends,
however it ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from worker.config import Settings
from workflows.client import MarginCallClient, connect

DEFAULT_ADDRESS = "127.0.0.1:7233"


@asynccontextmanager
async def ledger_database_url(settings: Settings) -> AsyncIterator[str]:
    """The ledger's URL for the block: the configured one, or an embedded server's (ours or joined)."""
    from worker.stack import ledger_database  # heavy (the embedded server); imported by commands that need it

    async with ledger_database(settings.database_url, settings.data_dir) as database:
        yield database.url


@asynccontextmanager
async def ledger_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the ledger for the block, closed before the database it runs on is stopped."""
    from worker.stack import ledger_pool as pool_on

    async with pool_on(settings.database_url, settings.data_dir) as pool:
        yield pool


async def case_client(settings: Settings) -> MarginCallClient:
    """The case client on the configured Temporal (the embedded stack's default address otherwise)."""
    return MarginCallClient(await connect(settings.temporal_address or DEFAULT_ADDRESS, settings.namespace))
