"""Soak run (``make soak``, not part of ``make test``): a seeded random market with faults.

    .venv/bin/python -m tools.soak --minutes 10 --seed 42 --accounts 300

Real processes throughout: a Temporal dev server (SQLite), PostgreSQL, two
worker processes, the webhook receiver. Every second the market moves and the
risk monitor opens cases; deposits (some repeated, some conflicting), staff
actions and faults (SIGKILLed workers, killed connections, a restarted Temporal
server, a failing notifier) are drawn from the seeded generator. At the end the
market calms, every case is let close, and the invariant check runs. The seed
reproduces the sequence of choices (process timing is the machine's own).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal

import asyncpg

from activities.exceptions import IdempotencyConflict
from activities.ledger import LedgerActivities, PostgresDeposits, credit_deposit
from activities.ledger.audit import InvariantReport
from activities.ledger.reference import set_position
from tools.faults import FaultStack, fault_stack
from worker.config import DEV_WEBHOOK_SECRET
from worker.market import LISTINGS, Trader, list_venue, move_market, onboard
from worker.monitor import RiskMonitor
from worker.receiver import Behaviour, WebhookReceiver
from worker.serving import serving
from worker.stack import free_port, scratch_data_dir
from workflows.client import MarginCallClient
from workflows.contract import CaseState, DeadlineExtension, Deposit, StaffAction
from workflows.domain.liquidation import LiquidationPolicy
from workflows.domain.policies import CasePolicy

D = Decimal
POLICY = CasePolicy(
    deadline=timedelta(seconds=8),
    reminders_before_deadline=[timedelta(seconds=4)],
    pause_between_stages=timedelta(seconds=1),
    max_stages=6,
    notice_delivery_window=timedelta(seconds=10),
    ledger_attempt_timeout=timedelta(seconds=3),
    liquidation=LiquidationPolicy(fraction_per_stage=D("0.3")),
)


class Soak:
    def __init__(
        self, stack: FaultStack, receiver: WebhookReceiver, rng: random.Random, accounts: list[str]
    ) -> None:
        self.stack = stack
        self.receiver = receiver
        self.rng = rng
        self.accounts = accounts
        self.injected: Counter[str] = Counter()
        self.marks = {name: price for name, (price, _) in LISTINGS.items()}
        self.trades = 0

    @property
    def api(self) -> MarginCallClient:
        return MarginCallClient(self.stack.client)

    async def move_market(self, calm: bool = False) -> None:
        for name in self.marks:
            drift = D(self.rng.uniform(-0.003, 0.003) if calm else self.rng.uniform(-0.009, 0.008))
            self.marks[name] = (self.marks[name] * (1 + drift)).quantize(D("0.01"))
        async with self.stack.pool.acquire() as conn:
            await move_market(conn, self.marks)

    async def retrade(self) -> None:
        """Traders whose positions are gone (and whose case closed) trade again with fresh collateral."""
        async with self.stack.pool.acquire() as conn:
            idle = await conn.fetch(
                "SELECT a.account_id FROM accounts a"
                " WHERE NOT EXISTS (SELECT 1 FROM positions p WHERE p.account_id = a.account_id AND p.quantity <> 0)"
                " AND NOT EXISTS (SELECT 1 FROM margin_call_cases c WHERE c.account_id = a.account_id"
                "                 AND c.closed_at IS NULL)"
                " ORDER BY a.account_id"
            )
        for row in self.rng.sample(list(idle), k=min(len(idle), 15)):
            account = row["account_id"]
            self.trades += 1
            instrument = self.rng.choice(list(self.marks))
            notional = D(self.rng.randint(5_000, 150_000))
            quantity = (notional / self.marks[instrument]).quantize(D("0.001")) * self.rng.choice([1, -1])
            await credit_deposit(
                self.stack.pool,
                Deposit(
                    account_id=account,
                    deposit_id=f"topup-{account}-{self.trades}",
                    amount=(notional / D(self.rng.choice([4, 8, 15, 25]))).quantize(D("0.01")),
                    currency="USDT",
                ),
            )
            async with self.stack.pool.acquire() as conn:
                await set_position(conn, account, instrument, quantity, self.marks[instrument])
            self.injected["re-trade"] += 1

    async def act_on_cases(self) -> None:
        open_cases = [
            c for c in await self.api.list_cases(state=CaseState.AWAITING_DEPOSIT.value) if c.account_id
        ]
        for case in self.rng.sample(open_cases, k=min(len(open_cases), 3)):
            account = case.account_id
            assert account is not None
            roll = self.rng.random()
            try:
                if roll < 0.5:
                    amount = D(self.rng.randint(20, 3000))
                    deposit = Deposit(
                        account_id=account,
                        deposit_id=f"{account}-{self.rng.randint(1, 4)}",
                        amount=amount,
                        currency="USDT",
                    )
                    report = await self.api.report_deposit(
                        PostgresDeposits(self.stack.pool), deposit, wait=self.rng.random() < 0.7
                    )
                    self.injected["deposit repeated" if report.booking.already_credited else "deposit"] += 1
                elif roll < 0.6:
                    await self.api.waive(account, StaffAction(operator="soak", reason="seeded waive"))
                    self.injected["staff waive"] += 1
                elif roll < 0.7:
                    await self.api.force_liquidation(
                        account, StaffAction(operator="soak", reason="seeded force")
                    )
                    self.injected["staff force"] += 1
                elif roll < 0.8 and case.deadline is not None:
                    await self.api.extend_deadline(
                        account,
                        DeadlineExtension(
                            operator="soak",
                            reason="seeded extension",
                            new_deadline=case.deadline + timedelta(seconds=5),
                        ),
                    )
                    self.injected["staff extend"] += 1
            except IdempotencyConflict:
                self.injected["deposit conflict refused"] += 1
            except Exception as error:  # a case that closed meanwhile refuses: that is the point
                self.injected[f"refused: {type(error).__name__}"] += 1

    async def inject_fault(self) -> None:
        fault = self.rng.choice(
            ["kill worker", "kill connections", "restart temporal", "notifier 500", "notifier ok"]
        )
        self.injected[fault] += 1
        if fault == "kill worker":
            alive = [w for w in self.stack.workers if w.process.returncode is None]
            if alive:
                await self.rng.choice(alive).kill()
            await self.stack.start_worker()
        elif fault == "kill connections":
            await self.stack.kill_connections()
        elif fault == "restart temporal":
            await self.stack.restart_temporal(down_for=self.rng.uniform(0.5, 3))
        elif fault == "restart postgres":
            await self.stack.restart_postgres(down_for=self.rng.uniform(0.5, 2))
        elif fault == "notifier 500":
            self.receiver.behaviour = Behaviour(status=500)
        else:
            self.receiver.behaviour = Behaviour()


async def onboard_traders(pool: asyncpg.Pool, rng: random.Random, accounts: int) -> list[str]:
    names = []
    for i in range(accounts):
        name = f"soak-{i:04d}"
        instrument = rng.choice(list(LISTINGS))
        price = LISTINGS[instrument][0]
        notional = D(rng.randint(5_000, 200_000))
        leverage = D(rng.choice([4, 8, 15, 25]))
        quantity = (notional / price).quantize(D("0.001")) * rng.choice([1, -1])
        await onboard(
            pool, Trader(name, (notional / leverage).quantize(D("0.01")), {instrument: (quantity, price)})
        )
        names.append(name)
    return names


async def drive(soak: Soak, minutes: float) -> None:
    """Every second: the market moves, the monitor opens cases, traders and staff act; now and then a fault."""
    stack, rng = soak.stack, soak.rng
    started = time.monotonic()
    last_fault = last_report = last_trade = started
    monitor = RiskMonitor(LedgerActivities(stack.pool), soak.api, POLICY)
    while time.monotonic() - started < minutes * 60:
        now = time.monotonic()
        monitor.cases = soak.api  # a restarted server means a new client
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("market", soak.move_market),
            ("monitor", monitor.tick),
            ("cases", soak.act_on_cases),
        ]
        if now - last_trade > 10:
            steps.append(("re-trade", soak.retrade))
            last_trade = now
        if now - last_fault > rng.uniform(15, 40):
            steps.append(("fault", soak.inject_fault))
            last_fault = now
        for step, action in steps:
            try:
                await action()
            except Exception as error:  # the faults we inject make some steps fail: count them
                soak.injected[f"{step} step failed ({type(error).__name__})"] += 1
        if now - last_report > 15:
            try:
                async with stack.pool.acquire() as conn:
                    states = await conn.fetch("SELECT state, count(*) FROM margin_call_cases GROUP BY 1")
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
                # The connection-killing fault reaches the driver's own pool too.
                soak.injected[f"report step failed ({type(error).__name__})"] += 1
                states = []  # this report is skipped
            print(
                f"t={now - started:5.0f}s  cases "
                + ", ".join(f"{s} {n}" for s, n in sorted(states))
                + f"  | injected {sum(soak.injected.values())}",
                flush=True,
            )
            last_report = now
        await asyncio.sleep(1)


async def settle(soak: Soak) -> tuple[InvariantReport, list[asyncpg.Record], int, int]:
    """The market calms and every case is let close; then the invariant check and what is still open."""
    stack = soak.stack
    print("calming the market, letting every case close...", flush=True)
    await stack.pool.expire_connections()  # the last fault may have killed the driver's own connections
    soak.receiver.behaviour = Behaviour()
    if not [w for w in stack.workers if w.process.returncode is None]:
        await stack.start_worker()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        await soak.move_market(calm=True)
        if not [c for c in await soak.api.list_cases() if c.running]:
            break
        await asyncio.sleep(2)
    report = await stack.invariants()
    async with stack.pool.acquire() as conn:
        states = await conn.fetch("SELECT state, count(*) FROM margin_call_cases GROUP BY 1 ORDER BY 1")
        open_records = await conn.fetchval("SELECT count(*) FROM margin_call_cases WHERE closed_at IS NULL")
    running = len([c for c in await soak.api.list_cases() if c.running])
    return report, states, open_records, running


async def run(minutes: float, seed: int, accounts: int) -> int:
    rng = random.Random(seed)
    print(f"soak: seed {seed}, {accounts} accounts, {minutes:g} min of faults", flush=True)
    receiver = WebhookReceiver(DEV_WEBHOOK_SECRET)
    receiver_port = free_port()
    async with (
        scratch_data_dir("margin-call-soak-") as directory,  # also clears what a killed run left
        serving(receiver.app(), receiver_port),
        fault_stack(directory, f"http://127.0.0.1:{receiver_port}/webhooks") as stack,
    ):
        async with stack.pool.acquire() as conn:
            await list_venue(conn, insurance_fund=D("20000"))
        soak = Soak(stack, receiver, rng, await onboard_traders(stack.pool, rng, accounts))
        await stack.start_worker()
        await stack.start_worker()
        await drive(soak, minutes)
        report, states, open_records, running = await settle(soak)
    print("\ncases by outcome: " + ", ".join(f"{s} {n}" for s, n in states))
    print(f"open case records {open_records}, running workflows {running}")
    print("injected: " + ", ".join(f"{k} {v}" for k, v in sorted(soak.injected.items())))
    print(f"notices received {len(receiver.notices)} (attempts {receiver.attempts})")
    totals = ", ".join(f"{a} {t}" for a, t in report.ledger.totals_by_asset.items())
    ok = report.holds and open_records == running
    print(
        f"invariant check: {'PASS' if ok else 'FAIL'}; ledger totals {totals}; violations {report.violations}"
    )
    if not ok:
        print(
            f"reproduce with: python -m tools.soak --seed {seed} --minutes {minutes:g} --accounts {accounts}"
        )
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--accounts", type=int, default=300)
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.minutes, args.seed, args.accounts)))


if __name__ == "__main__":
    main()
