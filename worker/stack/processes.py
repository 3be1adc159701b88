"""Workers as child processes, which a run can SIGKILL or stop: the soak, the fault tests, the bench.

A child worker is configured as production configures ``margin-call worker``: through the
environment (``worker_env``). Its output goes to a log file in the run's data directory, or to
the terminal (the bench, whose workers' errors should be seen as they happen).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.config import DEV_WEBHOOK_SECRET
from workflows.domain.policies import PolicyBook, open_book


async def until(check: Callable[[], Any | Awaitable[Any]], timeout: float = 20.0, every: float = 0.1) -> Any:
    """Poll ``check`` (plain or async) until it returns something truthy, and return that.

    Raises ``AssertionError``: a run or test waiting on something that never happens has failed.
    """
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


@dataclass
class WorkerProcess:
    process: asyncio.subprocess.Process
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, exactly like a crashed machine."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self, grace: float = 20.0) -> None:
        """SIGTERM, the worker's clean stop (running activities finish); SIGKILL after ``grace``."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                await self.kill()

    def logged(self, words: str) -> bool:
        return self.log is not None and self.log.exists() and words in self.log.read_text(errors="replace")


def worker_env(
    temporal_address: str,
    database_url: str,
    notifier_url: str,
    policies: Path,
    failpoints: Mapping[str, Path] | None = None,
    venue_url: str | None = None,
) -> dict[str, str]:
    """The environment of a child worker: this process's, pointed at the run's servers.

    ``policies`` is the operator's book, as a file (``MARGIN_CALL_POLICIES``); set in the parent's
    environment, it wins, as it would for ``margin-call worker``. ``venue_url``: liquidations go
    to that order gateway (the ``http`` venue) instead of the ledger's backstop.
    """
    venue = {"MARGIN_CALL_VENUE": "http", "MARGIN_CALL_VENUE_URL": venue_url} if venue_url else {}
    return {
        "MARGIN_CALL_POLICIES": str(policies),
        **os.environ,
        "MARGIN_CALL_TEMPORAL_ADDRESS": temporal_address,
        "MARGIN_CALL_DATABASE_URL": database_url,
        "MARGIN_CALL_NOTIFIER_URL": notifier_url,
        "MARGIN_CALL_WEBHOOK_SECRET": DEV_WEBHOOK_SECRET,
        "MARGIN_CALL_FAILPOINTS": ";".join(f"{k}={v}" for k, v in (failpoints or {}).items()),
        **venue,
    }


def write_book(directory: Path, book: PolicyBook | None = None) -> Path:
    """The operator's book as a file a child worker reads; by default an open one (short deadlines)."""
    path = directory / "policies.json"
    path.write_text((book or open_book()).model_dump_json())
    return path


async def spawn_worker(
    module: str, args: Sequence[str], env: Mapping[str, str], log: Path | None = None
) -> WorkerProcess:
    """``python -m <module> <args>`` with ``env``, its output to ``log`` (or this terminal)."""
    if log is None:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", module, *args, env=dict(env))
    else:
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, *args, env=dict(env), stdout=out, stderr=out
            )
    return WorkerProcess(process, log)


async def start_worker_process(
    directory: Path,
    temporal_address: str,
    database_url: str,
    notifier_url: str,
    *,
    failpoints: Mapping[str, Path] | None = None,
    name: str = "worker",
    ready_within: float = 30.0,
    venue_url: str | None = None,
) -> WorkerProcess:
    """``python -m worker`` on the run's servers, logging to ``<directory>/<name>.log``; returned once it polls."""
    env = worker_env(
        temporal_address, database_url, notifier_url, write_book(directory), failpoints, venue_url
    )
    worker = await spawn_worker("worker", [], env, directory / f"{name}.log")
    await until(
        lambda: worker.logged("worker polling") or worker.process.returncode is not None, ready_within
    )
    if worker.process.returncode is not None:
        raise RuntimeError(f"worker exited with {worker.process.returncode}; see {worker.log}")
    return worker
