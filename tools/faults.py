"""A stack of real processes that fault tests can kill and restart.

Its own Temporal dev server (SQLite file, restartable on the same port), its own
PostgreSQL (restartable), and workers as separate ``python -m worker``
processes that can be SIGKILLed at a failpoint.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.client import Client

from activities.database import EmbeddedPostgres
from activities.ledger.audit import InvariantReport, check_invariants
from worker.config import DEV_WEBHOOK_SECRET
from worker.devserver import TemporalDevServer
from workflows.domain.policies import open_book


@dataclass
class WorkerProcess:
    process: asyncio.subprocess.Process
    log: Path

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, exactly like a crashed machine."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                await self.kill()


@dataclass
class FaultStack:
    directory: Path
    temporal: TemporalDevServer
    postgres: EmbeddedPostgres
    database_url: str
    pool: asyncpg.Pool
    client: Client
    notifier_url: str
    workers: list[WorkerProcess] = field(default_factory=list)

    async def start_worker(self, failpoints: dict[str, Path] | None = None) -> WorkerProcess:
        # The tests are the operator here: their short deadlines come from an open book.
        policies = self.directory / "policies.json"
        policies.write_text(open_book().model_dump_json())
        env = {
            "MARGIN_CALL_POLICIES": str(policies),
            **os.environ,
            "MARGIN_CALL_TEMPORAL_ADDRESS": self.temporal.address,
            "MARGIN_CALL_DATABASE_URL": self.database_url,
            "MARGIN_CALL_NOTIFIER_URL": self.notifier_url,
            "MARGIN_CALL_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET,
            "MARGIN_CALL_FAILPOINTS": ";".join(f"{k}={v}" for k, v in (failpoints or {}).items()),
        }
        log = self.directory / f"worker-{len(self.workers)}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "worker", env=env, stdout=out, stderr=out
            )
        worker = WorkerProcess(process, log)
        self.workers.append(worker)
        await until(lambda: _logged(log, "worker polling"), timeout=30)
        return worker

    async def restart_temporal(self, down_for: float = 0.0) -> None:
        await self.temporal.stop()
        await asyncio.sleep(down_for)
        self.client = await self.temporal.start()

    async def restart_postgres(self, down_for: float = 0.0) -> None:
        server: Any = self.postgres._server
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(down_for)
        await asyncio.to_thread(server.ensure_postgres_running)

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

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop()
        await self.pool.close()
        await self.temporal.stop()
        await self.postgres.stop()


def _logged(log: Path, words: str) -> bool:
    return log.exists() and words in log.read_text(errors="replace")


async def until(check: Callable[[], Any | Awaitable[Any]], timeout: float = 30.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(every)
