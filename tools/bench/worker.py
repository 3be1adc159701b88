"""The benchmark's worker: its own process, as ``margin-call worker`` runs in production.

    python -m tools.bench.worker --address HOST:PORT --database-url URL --notifier-url URL

The same ``running_worker`` as the product's worker, plus the ceiling
workflow, so the ceiling and the cases are measured on the same worker. Kept
out of the driver's process so that the driver and the webhook receiver do not
share its interpreter lock. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable

from tools.bench.ceiling import CeilingWorkflow, ceiling_activity
from worker.config import DEV_WEBHOOK_SECRET
from worker.worker import running_worker, stop_on_signals
from workflows.client import connect
from workflows.domain.policies import open_book


def profiled(path: str) -> Callable[[], None]:
    """Profile every thread (workflow tasks run on the SDK's executor threads); returns the dumper."""
    import yappi

    yappi.set_clock_type("cpu")
    yappi.start()

    def dump() -> None:
        yappi.stop()
        with open(path, "w") as out:
            yappi.get_func_stats().sort("tsub").print_all(
                out,
                columns={0: ("name", 110), 1: ("ncall", 10), 2: ("tsub", 8), 3: ("ttot", 8), 4: ("tavg", 8)},
            )
            yappi.get_thread_stats().print_all(out)

    return dump


async def serve(args: argparse.Namespace) -> None:
    stop = stop_on_signals()
    dump = profiled(args.profile) if args.profile else None
    client = await connect(args.address)
    try:
        async with running_worker(
            client,
            args.database_url,
            args.notifier_url,
            DEV_WEBHOOK_SECRET,
            max_concurrent_activities=args.activity_slots,
            sandboxed=args.sandboxed,
            extra_workflows=[CeilingWorkflow],
            extra_activities=[ceiling_activity],
            policies=open_book(),
        ):
            await stop.wait()
    finally:
        if dump is not None:
            dump()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--notifier-url", required=True)
    parser.add_argument("--activity-slots", type=int, default=200)
    parser.add_argument("--sandboxed", action="store_true")
    parser.add_argument("--profile", metavar="FILE", help="write a CPU profile of every thread (needs yappi)")
    asyncio.run(serve(parser.parse_args()))
    os._exit(0)  # no interpreter teardown after a Temporal client (temporalio/sdk-python#300)


if __name__ == "__main__":
    main()
