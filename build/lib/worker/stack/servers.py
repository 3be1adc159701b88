"""PostgreSQL and a Temporal dev server on one data directory, for runs that drive them hard.

The bench, the soak and the fault tests start these two and nothing else of ``up``: they bring
their own receiver and their own workers (in child processes, to kill or to measure apart), and
they restart the servers under load. So the database is always embedded here, never the
configured one: a run restarts it, and makes scratch databases beside the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from temporalio.client import Client

from activities.ledger.migrate import migrate
from worker.stack.leftovers import free_port
from worker.stack.postgres import POSTGRES_DIR, EmbeddedPostgres, create_pool
from worker.stack.temporal import TEMPORAL_DATABASE, TemporalDevServer


@dataclass
class Servers:
    directory: Path
    postgres: EmbeddedPostgres
    database_url: str
    pool: asyncpg.Pool
    temporal: TemporalDevServer
    client: Client

    async def restart_temporal(self, down_for: float = 0.0) -> None:
        """Stop the dev server and start it on the same SQLite file and port; ``client`` is the new one."""
        await self.temporal.stop()
        await asyncio.sleep(down_for)
        self.client = await self.temporal.start()

    async def restart_postgres(self, down_for: float = 0.0) -> None:
        await self.postgres.restart(down_for)


@asynccontextmanager
async def servers(
    directory: Path,
    *,
    temporal_port: int | None = None,
    dynamic_config: dict[str, object] | None = None,
    pool_size: int = 10,
) -> AsyncIterator[Servers]:
    """An embedded PostgreSQL (ledger migrated) and a headless dev server on ``directory``, stopped after.

    ``dynamic_config``: the dev server's settings, by default the embedded stack's (``{}`` for its own
    defaults). ``temporal_port``: by default any free one.
    """
    async with contextlib.AsyncExitStack() as stack:
        postgres = EmbeddedPostgres(directory / POSTGRES_DIR)
        stack.push_async_callback(postgres.stop)
        url = await postgres.start()
        pool = await create_pool(url, max_size=pool_size)
        stack.push_async_callback(pool.close)
        async with pool.acquire() as conn:
            await migrate(conn)
        temporal = TemporalDevServer(
            directory / TEMPORAL_DATABASE,
            port=temporal_port or free_port(),
            ui=False,
            dynamic_config=dynamic_config,
        )
        stack.push_async_callback(temporal.stop)
        client = await temporal.start()
        yield Servers(directory, postgres, url, pool, temporal, client)
