"""The benchmark's worker: its own process, as ``margin-call worker`` runs in production.

    python -m tests.bench_worker --address HOST:PORT --database-url URL --notifier-url URL

The same ``build_worker`` settings as the product's worker, plus the ceiling
workflow, so the ceiling and the cases are measured on the same worker. Kept
out of the driver's process so that the driver and the webhook receiver do not
share its interpreter lock. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import asyncpg

from activities.notifier import notifier_http_client
from tests.bench_ceiling import CeilingWorkflow, ceiling_activity
from worker.config import DEV_WEBHOOK_SECRET
from worker.worker import build_worker, stop_on_signals
from workflows.client import connect


async def serve(args: argparse.Namespace) -> None:
    stop = stop_on_signals()
    client = await connect(args.address)
    pool = await asyncpg.create_pool(args.database_url, min_size=1, max_size=20, command_timeout=30)
    assert pool is not None
    try:
        async with notifier_http_client() as http:
            worker = build_worker(
                client, pool, http, args.notifier_url, DEV_WEBHOOK_SECRET,
                max_concurrent_activities=args.activity_slots, sandboxed=args.sandboxed,
                extra_workflows=[CeilingWorkflow], extra_activities=[ceiling_activity],
            )  # fmt: skip
            async with worker:
                await stop.wait()
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--notifier-url", required=True)
    parser.add_argument("--activity-slots", type=int, default=200)
    parser.add_argument("--sandboxed", action="store_true")
    asyncio.run(serve(parser.parse_args()))
    os._exit(0)  # no interpreter teardown after a Temporal client (temporalio/sdk-python#300)


if __name__ == "__main__":
    main()
