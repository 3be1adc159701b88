"""The bench's driver: its options, the stack it brings up, and the phases in order.

Everything on one machine, in one run: the servers of ``worker.stack.servers``
(a Temporal dev server on SQLite + WAL, tuned as the embedded stack runs it,
and an embedded PostgreSQL) on a scratch data directory, the webhook receiver
in this process, and worker processes (``tools.bench.worker``) whose settings
serve both the ceiling workflow and the cases.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from datetime import timedelta
from decimal import Decimal
from importlib.util import find_spec
from pathlib import Path

from tools.bench.ceiling import CeilingWorkflow
from tools.bench.feeds import feed_throughput
from tools.bench.phases import Bench
from tools.bench.report import chart, machine, report
from worker.config import DEV_WEBHOOK_SECRET
from worker.market import list_venue
from worker.receiver import WebhookReceiver
from worker.serving import serving
from worker.stack import EMBEDDED_DYNAMIC_CONFIG, free_port, scratch_data_dir, servers, spawn_worker
from workflows import contract

D = Decimal


async def start_workers(bench: Bench, args: argparse.Namespace, address: str, url: str) -> None:
    """The worker processes, their output on this terminal; ready once a ceiling workflow completes through them."""
    for _ in range(args.workers):
        profile = args.results / f"worker-{len(bench.workers)}.prof.txt"
        worker = await spawn_worker(
            "tools.bench.worker",
            [
                "--address",
                address,
                "--database-url",
                url,
                "--notifier-url",
                f"http://127.0.0.1:{args.receiver_port}/webhooks",
                "--activity-slots",
                str(args.activity_slots),
                *(["--sandboxed"] if args.sandboxed else []),
                *(["--profile", str(profile)] if args.profile else []),
            ],
            env=dict(os.environ),
        )
        bench.workers.append(worker)
    await bench.client.execute_workflow(
        CeilingWorkflow.run,
        0,
        id=f"ceiling-warmup-{time.time_ns()}",
        task_queue=contract.TASK_QUEUE,
        execution_timeout=timedelta(seconds=60),
    )


async def phases(bench: Bench, args: argparse.Namespace) -> None:
    """What the workers serve, one phase after another; a phase given 0 cases is skipped."""
    print("ceiling ...", flush=True)
    rate = await bench.ceiling(args.accounts)
    for crash_path in ("cured", "liquidation"):
        print(f"crash, {crash_path} path ...", flush=True)
        await bench.crash(args.accounts, crash_path, rate)
    await bench.cost(args.accounts)
    if 0 < args.flat_from < args.accounts:
        for crash_path in ("cured", "liquidation"):
            print(f"crash, {crash_path} path, N = {args.flat_from} for flatness ...", flush=True)
            await bench.crash(args.flat_from, crash_path, rate)
    if args.open:
        print("deposits ...", flush=True)
        await bench.deposits(args.open, args.deposit_rate)
    if args.deadlines:
        print("deadlines ...", flush=True)
        await bench.deadlines(args.deadlines)
    if args.waiting:
        print("memory ...", flush=True)
        await bench.memory(args.waiting)


async def run(args: argparse.Namespace) -> None:
    args.results.mkdir(parents=True, exist_ok=True)
    async with (
        scratch_data_dir("margin-call-bench-") as directory,  # also clears what a killed run left
        servers(
            directory,
            temporal_port=args.port,
            dynamic_config=None if args.server_tuning else {},
            pool_size=20,
        ) as running,
    ):
        async with running.pool.acquire() as conn:
            await list_venue(conn, insurance_fund=D("1000000"))
        receiver = WebhookReceiver(DEV_WEBHOOK_SECRET)
        bench = Bench(running.client, running.pool, receiver)
        bench.server_pid = running.temporal.process.pid if running.temporal.process else None
        async with serving(receiver.app(), args.receiver_port):
            await start_workers(bench, args, running.temporal.address, running.database_url)
            try:
                await phases(bench, args)
            finally:
                await asyncio.gather(*(worker.stop(grace=30) for worker in bench.workers))
        print("ledger ...", flush=True)
        await bench.stage_latency()
        if args.feed_streams:
            print("feeds through the API ...", flush=True)
            bench.figures["feeds"] = await feed_throughput(
                running.database_url, running.client, args.accounts, args.feed_streams
            )
        if args.scan:
            await bench.ledger(running.database_url, [int(s) for s in args.scan.split(",")])
    report(bench.figures, args)
    # Per-case samples feed the chart; the JSON keeps their percentiles.
    samples = {
        k: {kk: vv for kk, vv in v.items() if not str(kk).endswith("_samples")} if isinstance(v, dict) else v
        for k, v in bench.figures.items()
    }
    settings = {
        "workers": args.workers,
        "sandboxed": args.sandboxed,
        "activity_slots": args.activity_slots,
        "server_dynamic_config": EMBEDDED_DYNAMIC_CONFIG if args.server_tuning else {},
    }
    (args.results / "bench.json").write_text(
        json.dumps({"machine": machine(), "settings": settings, "figures": samples}, indent=2, default=str)
    )
    wrote = [args.results / "bench.json"]
    if args.chart:
        chart(bench.figures, bench.timelines, args.results / "bench.png")
        wrote.append(args.results / "bench.png")
    print(f"\nwrote {' and '.join(map(str, wrote))}")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def main() -> None:
    from tools import bench

    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--accounts", type=positive, default=2000, help="N, for the ceiling and each crash")
    parser.add_argument("--open", type=int, default=1000, help="cases open for the deposits figure (0: skip)")
    parser.add_argument("--deadlines", type=int, default=1000, help="deadlines falling together (0: skip)")
    parser.add_argument(
        "--flat-from", type=int, default=500, help="also crash this N, for flatness (0: skip)"
    )
    parser.add_argument("--deposit-rate", type=float, default=20.0, help="deposits arriving per second")
    parser.add_argument(
        "--feed-streams", type=int, default=4, help="feed requests at a time, trades and marks (0: skip)"
    )
    parser.add_argument("--scan", default="10000,100000,1000000", help="book sizes to scan ('': skip)")
    parser.add_argument("--port", type=int, default=7433, help="the Temporal dev server's (0: any free one)")
    parser.add_argument(
        "--receiver-port", type=int, default=8477, help="the webhook receiver's (0: any free one)"
    )
    parser.add_argument("--activity-slots", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--waiting", type=int, default=10000, help="cases waiting for the memory figure (0: skip)"
    )
    parser.add_argument("--sandboxed", action="store_true", help="run cases in the workflow sandbox")
    parser.add_argument(
        "--profile", action="store_true", help="profile the workers (<results>/worker-*.prof.txt)"
    )
    parser.add_argument(
        "--no-server-tuning",
        dest="server_tuning",
        action="store_false",
        help="the dev server's default dynamic config instead of the embedded stack's",
    )
    parser.add_argument("--results", type=Path, default=Path("bench-results"), help="where to write")
    parser.add_argument("--no-chart", dest="chart", action="store_false", help="no bench.png (no matplotlib)")
    args = parser.parse_args()
    if args.chart and find_spec("matplotlib") is None:
        parser.error("the chart needs matplotlib: pip install -e '.[bench]', or pass --no-chart")
    args.receiver_port = args.receiver_port or free_port()
    asyncio.run(run(args))
