"""``margin-call demo``: a market crash on the embedded stack, end to end.

Seeds a small exchange whose accounts are built to land on every path once the
crash hits (each trader's collateral is set so that equity after the crash is a
chosen multiple of maintenance), drops prices, lets the risk monitor open the
cases, plays the deposit handler and support staff for some of them, and ends
with a summary read back from the ledger, the webhook receiver and Temporal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_UP, Decimal

from activities.ledger import PostgresDeposits, case_counts, cases_summary
from activities.ledger.audit import check_ledger
from worker.config import Settings
from worker.market import LISTINGS, SETTLEMENT, Trader, list_venue, move_market, onboard
from worker.stack import Stack, embedded_stack, fresh_data_dir
from workflows.client import MarginCallClient
from workflows.contract import CaseState, DeadlineExtension, Deposit, StaffAction
from workflows.domain import margin
from workflows.domain.liquidation import LiquidationPolicy
from workflows.domain.policies import CasePolicy
from workflows.domain.portfolio import Position

D = Decimal
CRASH = {"BTCUSDT": D("46500"), "ETHUSDT": D("2700"), "SOLUSDT": D("128")}
REBOUND = {"SOLUSDT": D("140")}
# Small on purpose: the bankruptcies exhaust it, so the uncovered loss left for
# auto-deleveraging shows too.
INSURANCE_FUND = D("600")
POLICY = CasePolicy(
    deadline=timedelta(seconds=20),
    reminders_before_deadline=[timedelta(seconds=10)],
    pause_between_stages=timedelta(seconds=2),
    max_stages=4,
    notice_delivery_window=timedelta(seconds=15),
    liquidation=LiquidationPolicy(fraction_per_stage=D("0.25")),
)


@dataclass(frozen=True)
class Persona:
    """A trader, how far below maintenance the crash leaves them, and what they (or staff) do."""

    name: str
    instrument: str
    notional: Decimal
    equity_to_maintenance: Decimal
    plays: str  # deposit | signal-deposit | waive | extend | recover | none


PERSONAS = [
    *(Persona(f"steady-{i}", "BTCUSDT", D(20000 + 5000 * i), D("2.5"), "none") for i in range(4)),
    *(Persona(f"depositor-{i}", "ETHUSDT", D(30000 + 4000 * i), D("0.8"), "deposit") for i in range(4)),
    Persona("depositor-by-signal", "BTCUSDT", D(40000), D("0.75"), "signal-deposit"),
    *(Persona(f"restored-{i}", "BTCUSDT", D(30000 + 5000 * i), D("0.85"), "none") for i in range(3)),
    *(Persona(f"closed-out-{i}", "BTCUSDT", D(25000 + 5000 * i), D("0.6"), "none") for i in range(2)),
    Persona("hard-line", "ETHUSDT", D(45000), D("0.3"), "none"),
    *(Persona(f"bankrupt-{i}", "BTCUSDT", D(60000 + 20000 * i), D("-1.5"), "none") for i in range(2)),
    Persona("waived-by-staff", "ETHUSDT", D(30000), D("0.9"), "waive"),
    Persona("extended-by-staff", "BTCUSDT", D(30000), D("0.9"), "extend"),
    *(Persona(f"recovers-{i}", "SOLUSDT", D(10000 + 2000 * i), D("0.7"), "recover") for i in range(2)),
]


def _build(persona: Persona) -> Trader:
    """Collateral such that equity at crash marks is the persona's multiple of maintenance."""
    price, tiers = LISTINGS[persona.instrument]
    quantity = (persona.notional / price).quantize(D("0.001"))
    crashed = Position(
        instrument=persona.instrument,
        quantity=quantity,
        entry_price=price,
        mark_price=CRASH[persona.instrument],
        tiers=tiers,
    )
    maintenance = margin.maintenance_margin(crashed)
    collateral = persona.equity_to_maintenance * maintenance - margin.unrealised_pnl(crashed)
    return Trader(
        account_id=persona.name,
        collateral=collateral.quantize(D("0.01"), rounding=ROUND_UP),
        positions={persona.instrument: (quantity, price)},
    )


def _say(line: str) -> None:
    print(line, flush=True)


async def _play_roles(stack: Stack, started: float, done: asyncio.Event) -> None:
    """The deposit handler and support staff, acting on cases as they open."""
    api = MarginCallClient(stack.client)
    acted: set[str] = set()
    later: list[asyncio.Task[None]] = []
    staff = StaffAction(operator="demo-support", reason="client called in; verified funds in transit")
    while not done.is_set():
        for persona in PERSONAS:
            if persona.plays in ("none", "recover") or persona.name in acted:
                continue
            try:
                status = await api.status(persona.name)
            except Exception:
                continue  # no case yet
            if status.state != CaseState.AWAITING_DEPOSIT:
                continue
            acted.add(persona.name)
            at = f"t={time.monotonic() - started:4.0f}s"
            needed = (status.deposit_needed or D(0)) + D(50)
            deposit = Deposit(
                account_id=persona.name,
                deposit_id=f"{persona.name}-wire-1",
                amount=needed,
                currency=SETTLEMENT,
            )
            if persona.plays == "deposit":
                report = await api.report_deposit(PostgresDeposits(stack.pool), deposit)
                state = report.receipt.state.value if report.receipt else "no open case"
                _say(f"{at}  deposit handler: {persona.name} wired {needed:,.2f} USDT -> case {state}")
            elif persona.plays == "signal-deposit":
                await api.report_deposit(PostgresDeposits(stack.pool), deposit, wait=False)
                _say(f"{at}  deposit handler: {persona.name} wired {needed:,.2f} USDT (reported by signal)")
            elif persona.plays == "waive":
                await api.waive(persona.name, staff)
                _say(f"{at}  support staff: waived {persona.name} ({staff.reason})")
            elif persona.plays == "extend":
                assert status.deadline is not None
                await api.extend_deadline(
                    persona.name,
                    DeadlineExtension(
                        operator=staff.operator,
                        reason=staff.reason,
                        new_deadline=status.deadline + timedelta(seconds=15),
                    ),
                )
                _say(f"{at}  support staff: extended {persona.name}'s deadline by 15 s")
                later.append(asyncio.create_task(_deposit_later(api, stack, persona.name, deposit, 8)))
        await asyncio.sleep(0.5)


async def _deposit_later(
    api: MarginCallClient, stack: Stack, account: str, deposit: Deposit, after: float
) -> None:
    await asyncio.sleep(after)
    report = await api.report_deposit(PostgresDeposits(stack.pool), deposit)
    state = report.receipt.state.value if report.receipt else "no open case"
    _say(
        f"          deposit handler: {account} wired {deposit.amount:,.2f} USDT within the extension -> case {state}"
    )


async def _progress(stack: Stack, started: float, done: asyncio.Event) -> None:
    api = MarginCallClient(stack.client)
    while not done.is_set():
        cases = await api.list_cases()
        counts = Counter(c.state for c in cases)
        line = " · ".join(f"{state} {n}" for state, n in sorted(counts.items()) if state)
        _say(f"t={time.monotonic() - started:4.0f}s  cases: {line or 'none yet'}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 3)


async def _all_closed(stack: Stack, expected: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = await case_counts(stack.pool)
        if counts.opened >= expected and counts.all_closed:
            return True
        await asyncio.sleep(1)
    return False


async def _summary(stack: Stack) -> bool:
    summary = await cases_summary(stack.pool, SETTLEMENT)
    async with stack.pool.acquire() as conn:
        check = await check_ledger(conn)
    _say("\nCases by outcome")
    for outcome in summary.outcomes:
        _say(f"  {outcome.state:<12} {outcome.cases:>3}   {', '.join(outcome.accounts)}")
    notices = Counter(n["kind"] for n in stack.receiver.notices.values()) if stack.receiver else Counter()
    _say(f"\nNotices delivered (signed, verified by the receiver): {sum(notices.values())}")
    for kind, n in sorted(notices.items()):
        _say(f"  {kind:<32} {n:>3}")
    _say(f"\nLiquidation: {summary.stages} stages, {summary.sold_notional:,.2f} USDT sold")
    _say(f"  fees to the insurance fund        {summary.liquidation_fees:>12,.2f} USDT")
    _say(f"  insurance fund used (bankruptcy)  {summary.covered_by_insurance_fund:>12,.2f} USDT")
    _say(f"  uncovered loss (for ADL)          {summary.uncovered_loss:>12,.2f} USDT")
    _say(f"  insurance fund balance now        {summary.insurance_fund:>12,.2f} USDT")
    totals = ", ".join(f"{asset} {total}" for asset, total in sorted(check.totals_by_asset.items()))
    verdict = "PASS" if check.balanced else "FAIL"
    _say(
        f"\nLedger check: {verdict}: sum over all ledger accounts = {totals}; "
        f"{len(check.drifted_accounts)} balances drifted from their transfers"
    )
    wanted = {"CURED", "RESTORED", "CLOSED_OUT", "BANKRUPT", "WAIVED"}
    if not wanted <= summary.states:
        _say(f"missing outcomes: {', '.join(sorted(wanted - summary.states))}")
    return check.balanced and wanted <= summary.states


async def run_demo(settings: Settings, *, temporal_port: int = 7233, receiver_port: int = 8377) -> int:
    demo_dir = settings.data_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.replace(settings, data_dir=demo_dir)
    _say(
        "Starting the embedded stack (PostgreSQL, Temporal dev server, webhook receiver, worker, monitor)..."
    )
    async with (
        fresh_data_dir(demo_dir),
        embedded_stack(
            settings,
            temporal_port=temporal_port,
            receiver_port=receiver_port,
            api_port=None,
            policy=POLICY,
            monitor_interval=1.0,
        ) as stack,
    ):
        _say(stack.describe())
        async with stack.pool.acquire() as conn:
            await list_venue(conn, insurance_fund=INSURANCE_FUND)
        for persona in PERSONAS:
            await onboard(stack.pool, _build(persona))
        _say(
            f"\nSeeded {len(PERSONAS)} accounts over {', '.join(LISTINGS)}; insurance fund {INSURANCE_FUND:,} USDT."
        )
        _say(
            f"Case policy: deadline {POLICY.deadline.seconds} s, reminder 10 s before, stages of 25 %, "
            f"hard threshold at {POLICY.hard_threshold * 100:.0f} % of maintenance."
        )
        started = time.monotonic()
        async with stack.pool.acquire() as conn:
            await move_market(conn, CRASH)
        _say("t=   0s  CRASH: " + ", ".join(f"{k} -> {v:,}" for k, v in CRASH.items()))
        done = asyncio.Event()
        tasks = [
            asyncio.create_task(_play_roles(stack, started, done)),
            asyncio.create_task(_progress(stack, started, done)),
        ]
        await asyncio.sleep(8)
        async with stack.pool.acquire() as conn:
            await move_market(conn, REBOUND)
        _say(
            f"t={time.monotonic() - started:4.0f}s  REBOUND: "
            + ", ".join(f"{k} -> {v:,}" for k, v in REBOUND.items())
        )
        expected = sum(1 for p in PERSONAS if p.equity_to_maintenance < 1)
        finished = await _all_closed(stack, expected, timeout=150)
        done.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        _say(f"t={time.monotonic() - started:4.0f}s  " + ("every case closed" if finished else "TIMED OUT"))
        ok = await _summary(stack) and finished
        if stack.web_ui:
            _say(
                f"\nTo browse these cases in the Web UI ({stack.web_ui}) and with `margin-call cases`, run:\n"
                f"  MARGIN_CALL_DATA_DIR={demo_dir} .venv/bin/margin-call up"
            )
    return 0 if ok else 1


def main(settings: Settings) -> int:
    try:
        return asyncio.run(run_demo(settings))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
