"""A stack of real processes that the soak and the fault tests kill and restart.

The servers of ``worker.stack.servers`` (a Temporal dev server restartable on the
same SQLite file and port, an embedded PostgreSQL restartable on its data) and
workers as ``python -m worker`` child processes (``worker.stack.processes``),
which a fault SIGKILLs, at a failpoint if it likes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from temporalio.client import Client

from activities.ledger.audit import InvariantReport, check_invariants
from worker.stack import Servers, WorkerProcess, servers, start_worker_process


@dataclass
class FaultStack:
    servers: Servers
    notifier_url: str
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def client(self) -> Client:
        """The client of the server now running (a restart makes a new one)."""
        return self.servers.client

    @property
    def pool(self) -> asyncpg.Pool:
        return self.servers.pool

    @property
    def database_url(self) -> str:
        return self.servers.database_url

    async def start_worker(
        self, failpoints: dict[str, Path] | None = None, venue_url: str | None = None
    ) -> WorkerProcess:
        """A worker process on these servers; the tests are its operator (an open book: short deadlines)."""
        worker = await start_worker_process(
            self.servers.directory,
            self.servers.temporal.address,
            self.database_url,
            self.notifier_url,
            failpoints=failpoints,
            name=f"worker-{len(self.workers)}",
            venue_url=venue_url,
        )
        self.workers.append(worker)
        return worker

    async def restart_temporal(self, down_for: float = 0.0) -> None:
        await self.servers.restart_temporal(down_for)

    async def restart_postgres(self, down_for: float = 0.0) -> None:
        await self.servers.restart_postgres(down_for)

    async def kill_connections(self) -> int:
        """Terminate every other backend on the ledger database (the workers' pool connections)."""
        conn = await asyncpg.connect(self.database_url)
        try:
            killed: int = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        return killed

    async def invariants(self) -> InvariantReport:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await check_invariants(conn)
        finally:
            await conn.close()

    async def stop_workers(self) -> None:
        for worker in self.workers:
            await worker.stop()


@asynccontextmanager
async def fault_stack(
    directory: Path, notifier_url: str, *, pool_size: int = 10
) -> AsyncIterator[FaultStack]:
    """The servers on ``directory`` and, once the block ends, every worker started on them stopped first."""
    async with servers(directory, pool_size=pool_size) as running:
        stack = FaultStack(running, notifier_url)
        try:
            yield stack
        finally:
            await stack.stop_workers()
