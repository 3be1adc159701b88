"""The bench's phases, each a figure (or several) beside its goal in the report.

Ceiling, crash (cured and liquidation paths), cost per case, deposits with many
cases open, deadlines falling together, memory with many cases waiting, one
liquidation stage against the ledger, and the breach scan over large books.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from temporalio.api.enums.v1 import EventType

from activities.ledger import LedgerActivities, LedgerFeeds, PostgresDeposits
from tools.bench.ceiling import CeilingWorkflow
from tools.bench.harness import CRASH, Harness, fresh_database, paced, pct
from tools.bench.queues import describe, task_waits
from tools.bench.scan import seed as seed_scan
from worker.market import LISTINGS, list_venue, move_market
from workflows import contract
from workflows.contract import BreachScan, CaseOpening, CaseState, Deposit, StageRequest
from workflows.domain.liquidation import LiquidationPolicy, plan_stage
from workflows.domain.policies import CasePolicy

D = Decimal
# The bench sets each mark once and measures the engine, not price freshness: no case holds on a mark.
BENCH_MARK_AGE = timedelta(days=1)


class Bench(Harness):
    """The phases, run one after another by ``tools.bench.run``; each adds to ``figures``."""

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
            "workflows": n,
            "seconds": elapsed,
            "per_second": n / elapsed,
            **self.cpu_per_case(cpu, n),
        }
        print(f"  ceiling: {n} trivial workflows in {elapsed:.1f} s = {n / elapsed:.1f}/s", flush=True)
        return n / elapsed

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
            policy = CasePolicy(
                deadline=timedelta(minutes=5), reminders_before_deadline=[], max_mark_age=BENCH_MARK_AGE
            )
        else:
            policy = CasePolicy(
                deadline=timedelta(seconds=5),
                reminders_before_deadline=[],
                max_mark_age=BENCH_MARK_AGE,
                pause_between_stages=timedelta(0),
                liquidation=LiquidationPolicy(fraction_per_stage=D("0.25")),
            )
        async with self.pool.acquire() as conn:
            await move_market(conn, CRASH)
        marked = time.time()
        cpu = self.cpu_seconds()
        detected = time.time()
        started = time.perf_counter()
        # The risk monitor's work: one scan, then a start per breached account.
        breaches = await LedgerActivities(self.pool).scan_breaches(BreachScan(limit=1_000_000))
        scan_seconds = time.perf_counter() - started
        ours = set(accounts)
        await self.gather_limited(
            [
                self.api.open_case(b.account_id, "crash", policy, shortfall=b.shortfall)
                for b in breaches
                if b.account_id in ours
            ],
            100,
        )
        started_all = time.perf_counter() - started

        async def deposit_when_notified(account: str) -> None:
            await self.receiver.arrival(f"{contract.case_id(account, 'crash')}:opened")
            await self.api.report_deposit(
                PostgresDeposits(self.pool),
                Deposit(account_id=account, deposit_id=f"{account}-cure", amount=D("500"), currency="USDT"),
            )

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
        mark_to_case = await self.mark_to_case(accounts, marked)
        waits = await task_waits(self.client, [contract.workflow_id(a) for a in accounts])
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
            "mark_to_case_seconds": {q: pct(mark_to_case, v) for q, v in (("p50", 0.5), ("p99", 0.99))},
            "mark_to_case_samples": mark_to_case,
            "task_waits": waits,
        }
        print(
            f"  crash {n} ({path}): all notified in {max(first_notice):.1f} s, all closed in {done:.1f} s = "
            f"{n / done:.1f}/s ({n / done / ceiling_rate:.2f} x ceiling); {outcomes}",
            flush=True,
        )
        print(
            f"    mark -> case opened p50 {pct(mark_to_case, 0.5):.2f} s, p99 {pct(mark_to_case, 0.99):.2f} s;"
            f" {describe(waits)}",
            flush=True,
        )

    async def mark_to_case(self, accounts: list[str], marked: float) -> list[float]:
        """Seconds from the crash's marks committed to each case opened in the ledger (its opening row).

        The bench scans once right after the marks, as the risk monitor's next
        scan would; in production add up to one scan interval.
        """
        async with self.pool.acquire() as conn:
            opened = await conn.fetch(
                "SELECT extract(epoch FROM opened_at)::float8 AS opened FROM margin_call_cases"
                " WHERE account_id = ANY($1)",
                accounts,
            )
        return [r["opened"] - marked for r in opened]

    async def deposits(self, n_open: int, rate: float) -> None:
        """Deposits arriving at ``rate`` per second, one per open case, each timed to its receipt.

        Open loop: arrivals do not wait for earlier deposits to finish, as
        traders' deposits do not, so a slow answer shows in the latency.
        """
        accounts = await self.seed_accounts(f"open{n_open}", n_open, D("0.8"))
        policy = CasePolicy(
            deadline=timedelta(minutes=30), reminders_before_deadline=[], max_mark_age=BENCH_MARK_AGE
        )
        await self.gather_limited([self.api.open_case(a, "dep", policy) for a in accounts], 100)
        await self.wait_state(accounts, CaseState.AWAITING_DEPOSIT)
        # Steady state: every case has told its trader and is waiting.
        await asyncio.gather(
            *(self.receiver.arrival(f"{contract.case_id(a, 'dep')}:opened") for a in accounts)
        )
        timings: list[float] = []

        async def one(account: str) -> None:
            begun = time.perf_counter()
            await self.api.report_deposit(
                PostgresDeposits(self.pool),
                Deposit(account_id=account, deposit_id=f"{account}-small", amount=D("1"), currency="USDT"),
            )
            timings.append(time.perf_counter() - begun)

        await paced([one(a) for a in accounts], rate)
        self.figures["deposits"] = {
            "open_cases": n_open,
            "arrivals_per_second": rate,
            "round_trip_p50_ms": pct(timings, 0.5) * 1000,
            "round_trip_p99_ms": pct(timings, 0.99) * 1000,
            "round_trip_max_ms": max(timings) * 1000,
        }
        print(
            f"  deposits at {rate:.0f}/s with {n_open} open: p50 {pct(timings, 0.5) * 1000:.0f} ms, "
            f"p99 {pct(timings, 0.99) * 1000:.0f} ms",
            flush=True,
        )
        self.figures["deposits"]["task_waits"] = waits = await task_waits(
            self.client, [contract.workflow_id(a) for a in accounts]
        )
        print(f"    {describe(waits)}", flush=True)
        await self.gather_limited([self.api.handle(a).terminate("bench done") for a in accounts], 100)

    async def memory(self, n_waiting: int) -> None:
        """Worker memory with many cases waiting on their deadline (the cache holds 5,000)."""
        accounts = await self.seed_accounts(f"wait{n_waiting}", n_waiting, D("0.8"))
        policy = CasePolicy(
            deadline=timedelta(hours=2), reminders_before_deadline=[], max_mark_age=BENCH_MARK_AGE
        )
        begun = time.perf_counter()
        await self.gather_limited([self.api.open_case(a, "wait", policy) for a in accounts], 100)
        await self.wait_state(accounts, CaseState.AWAITING_DEPOSIT)
        self.figures["memory"] = {
            "cases_waiting": n_waiting,
            "seconds_to_open": time.perf_counter() - begun,
            "worker_rss_mb": sum(self.worker_memory("VmRSS")),
            "worker_peak_rss_mb": sum(self.worker_memory("VmHWM")),
        }
        print(
            f"  memory with {n_waiting} waiting: worker RSS {self.figures['memory']['worker_rss_mb']:.0f} MB "
            f"(peak {self.figures['memory']['worker_peak_rss_mb']:.0f} MB)",
            flush=True,
        )
        await self.gather_limited([self.api.handle(a).terminate("bench done") for a in accounts], 100)

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
            policy = CasePolicy(
                deadline=deadline,
                reminders_before_deadline=[],
                max_mark_age=BENCH_MARK_AGE,
                pause_between_stages=timedelta(seconds=30),
            )
            await self.api.open_case(account, "dl", policy)

        await paced([start(a) for a in accounts], start_rate)
        await self.wait_first_stage(accounts)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT c.account_id, extract(epoch FROM c.opened_at)::float8 AS opened,"
                " extract(epoch FROM s.executed_at)::float8 AS executed"
                " FROM liquidation_stages s JOIN margin_call_cases c ON c.case_id = s.case_id"
                " WHERE s.stage = 1 AND c.account_id = ANY($1)",
                accounts,
            )
        due = {r["account_id"]: r["opened"] + deadlines[r["account_id"]] for r in rows}
        lateness = [r["executed"] - due[r["account_id"]] for r in rows]
        spread = max(due.values()) - min(due.values())
        self.figures["deadlines"] = {
            "cases": n,
            "deadlines_spread_seconds": spread,
            "lateness_p50_s": pct(lateness, 0.5),
            "lateness_p99_s": pct(lateness, 0.99),
            "lateness_max_s": max(lateness),
        }
        print(
            f"  deadlines ({n} within {spread:.2f} s): lateness p50 {pct(lateness, 0.5):.2f} s, "
            f"p99 {pct(lateness, 0.99):.2f} s, max {max(lateness):.2f} s",
            flush=True,
        )
        self.figures["deadlines"]["task_waits"] = waits = await task_waits(
            self.client, [contract.workflow_id(a) for a in accounts]
        )
        print(f"    {describe(waits)}", flush=True)
        await self.gather_limited([self.api.handle(a).terminate("bench done") for a in accounts], 100)

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
                "cases_sampled": len(counts),
                "history_events": pct(counts, 0.5),
                "history_events_max": max(counts),
                "activities": sorted(activities),
                "local_activities": sorted(markers),
                "stages": sorted(stages),
            }
            print(
                f"  cost {path}: {pct(counts, 0.5)} events (max {max(counts)}) over {len(counts)} cases, "
                f"activities {sorted(activities)}, local {sorted(markers)}, stages {sorted(stages)}",
                flush=True,
            )

    # --- ledger ------------------------------------------------------------------------

    async def stage_latency(self, n: int = 50) -> None:
        """One liquidation stage straight against the ledger (plan made, transaction timed)."""
        ledger = LedgerActivities(self.pool)
        accounts = await self.seed_accounts("stage", n, D("0.8"))
        timings = []
        for account in accounts:
            case_id = contract.case_id(account, "stage")
            await ledger.open_case(
                CaseOpening(case_id=case_id, account_id=account, call_id="stage", opened_at=datetime.now(UTC))
            )
            plan = plan_stage(await ledger.load_margin_snapshot(account), LiquidationPolicy())
            begun = time.perf_counter()
            await ledger.execute_liquidation_stage(
                StageRequest(case_id=case_id, stage=1, plan=plan, max_mark_age=BENCH_MARK_AGE)
            )
            timings.append(time.perf_counter() - begun)
        self.figures["stage_latency_ms"] = {"p50": pct(timings, 0.5) * 1000, "p99": pct(timings, 0.99) * 1000}
        print(
            f"  liquidation stage: p50 {pct(timings, 0.5) * 1000:.1f} ms, p99 {pct(timings, 0.99) * 1000:.1f} ms"
        )

    async def ledger(self, url: str, sizes: list[int]) -> None:
        results = {}
        for positions in sizes:
            pool = await fresh_database(url, f"scan_{positions}")
            async with pool.acquire() as conn:
                await list_venue(conn, insurance_fund=D(0))
                await seed_scan(conn, positions // 3, 3)
                await move_market(conn, {"BTCUSDT": D(45000), "ETHUSDT": D(2700), "SOLUSDT": D(135)})
            ledger = LedgerActivities(pool)
            timings = []
            for _ in range(3):
                begun = time.perf_counter()
                found = await ledger.scan_breaches(BreachScan(limit=1_000_000))
                timings.append(time.perf_counter() - begun)
            applying = []
            for tick in range(3):
                mark = {
                    "instrument": "BTCUSDT",
                    "price": str(45000 - tick),
                    "as_of": datetime.now(UTC).isoformat(),
                }
                begun = time.perf_counter()
                await LedgerFeeds(pool).marks([mark])
                applying.append(time.perf_counter() - begun)
            results[positions] = {
                "best_seconds": min(timings),
                "breached": len(found),
                # One instrument's mark through the feed's own function, with positions // 3 accounts on it.
                "mark_apply_seconds": min(applying),
                "accounts_on_instrument": positions // 3,
            }
            print(
                f"  scan_breaches over {positions:,} positions: {min(timings) * 1000:.0f} ms; one mark with"
                f" {positions // 3:,} accounts on it: {min(applying) * 1000:.1f} ms",
                flush=True,
            )
            await pool.close()
        self.figures["scan_breaches"] = results
