"""Data directories: the one ``up`` resumes, the one the demo empties, the scratch ones of bench and soak.

A data directory is this process's alone while a run uses it (``DataDirLock``); servers a killed
run left there are stopped before anything starts (see ``worker.stack.leftovers``).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from worker.stack.leftovers import LOCK_FILE, DataDirLock, LeftoverError
from worker.stack.postgres import POSTGRES_DIR, stop_leftover_postgres
from worker.stack.temporal import TEMPORAL_DATABASE, stop_leftover_temporal

log = logging.getLogger("margin_call.stack")


def stop_leftovers(data_dir: Path) -> None:
    """Stop the servers a killed run left on ``data_dir``. Blocking; hold the directory's lock."""
    stop_leftover_temporal(data_dir / TEMPORAL_DATABASE)
    stop_leftover_postgres(data_dir / POSTGRES_DIR)


@asynccontextmanager
async def scratch_data_dir(prefix: str) -> AsyncIterator[Path]:
    """A new data directory under the temp dir for one bench or soak run, locked, removed after it.

    A killed run removed nothing, so its directory is still there with its servers running:
    directories of earlier runs whose lock is free are cleared first, servers and all.
    """
    await asyncio.to_thread(_clear_killed_runs, prefix)
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    lock = DataDirLock(directory)
    lock.acquire()
    try:
        yield directory
    finally:
        await asyncio.to_thread(shutil.rmtree, directory, True)
        lock.release()


@asynccontextmanager
async def fresh_data_dir(directory: Path) -> AsyncIterator[Path]:
    """``directory`` emptied for a run that starts from nothing (the demo), and locked.

    Locked before emptying, since removing the directory from under a live run would take its
    lock file with it; and a killed run's servers are stopped, since nothing would record them.
    """
    lock = DataDirLock(directory)
    lock.acquire()
    try:
        if lock.first:
            await asyncio.to_thread(stop_leftovers, directory)
        await asyncio.to_thread(_empty, directory)
        yield directory
    finally:
        lock.release()


def _empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _clear_killed_runs(prefix: str) -> None:
    for old in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        lock = DataDirLock(old)
        if not old.is_dir() or not lock.try_acquire():
            continue  # a run still going
        try:
            stop_leftovers(old)
            shutil.rmtree(old, ignore_errors=True)
        except LeftoverError as error:
            log.warning("left %s in place: %s", old, error)
        finally:
            lock.release()
