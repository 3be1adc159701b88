"""The bench's harness: seeding accounts, waiting for cases, and measuring CPU and memory.

The phases (``tools.bench.phases``) build on it; nothing here measures a figure of its own.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.client import Client

from activities.ledger.migrate import migrate
from worker.market import LISTINGS, Trader, onboard
from worker.receiver import WebhookReceiver
from worker.stack import WorkerProcess, another_database, create_pool
from workflows import contract
from workflows.client import MarginCallClient
from workflows.contract import CaseState
from workflows.domain import margin
from workflows.domain.portfolio import Position

D = Decimal
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


async def fresh_database(url: str, name: str, max_size: int = 10) -> asyncpg.Pool:
    """A migrated, empty database ``name`` beside the bench's ledger, so what a phase books stays apart."""
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    pool = await create_pool(another_database(url, name), max_size=max_size)
    async with pool.acquire() as conn:
        await migrate(conn)
    return pool


@dataclass
class Harness:
    """What the phases share: the servers' handles, the figures so far, and ways to seed, wait and measure."""

    client: Client
    pool: asyncpg.Pool
    receiver: WebhookReceiver
    figures: dict[str, Any] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)
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

    async def seed_accounts(self, prefix: str, count: int, ratio: Decimal) -> list[str]:
        """Accounts long BTC whose equity at the crash mark is ``ratio`` x maintenance."""
        price, tiers = LISTINGS["BTCUSDT"]
        quantity = D("0.6")
        crashed = Position(
            instrument="BTCUSDT",
            quantity=quantity,
            entry_price=price,
            mark_price=CRASH["BTCUSDT"],
            tiers=tiers,
        )
        collateral = (ratio * margin.maintenance_margin(crashed) - margin.unrealised_pnl(crashed)).quantize(
            D("0.01")
        )
        names = [f"{prefix}-{i:05d}" for i in range(count)]
        await self.gather_limited(
            [onboard(self.pool, Trader(n, collateral, {"BTCUSDT": (quantity, price)})) for n in names], 20
        )
        return names

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
                " WHERE account_id = ANY($1)",
                accounts,
            )
        return {r["account_id"]: r["at"] for r in rows}

    async def outcomes(self, accounts: list[str]) -> dict[str, int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT state, count(*) FROM margin_call_cases WHERE account_id = ANY($1) GROUP BY 1",
                accounts,
            )
        return {r[0]: r[1] for r in rows}

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
