"""The people around the demo's cases, each acting through the HTTP API as the exchange's own services would.

- the **deposit handler** credits a wire and reports it to the case
  (``POST /v1/deposits``: the ledger first, then the case's receipt);
- the **treasury** books collateral that arrived with no message to the case
  (the movements feed): the case finds it when it re-reads the ledger at its
  deadline;
- **support staff** waive one case and extend another's deadline
  (``POST /v1/cases/{account}/waive | extend``), and the trader then pays
  within the extension.

Each acts once, when the persona's case is awaiting a deposit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from decimal import Decimal

from worker.demo.exchange import Persona
from worker.exchange.api import ApiClient, ApiError, all_applied
from worker.exchange.listings import SETTLEMENT
from workflows.contract import CaseState, CaseStatus, DeadlineExtension, Deposit, Waiver

Say = Callable[[str], None]
STAFF = Waiver(operator="demo-support", reason="client called in; verified funds in transit")
# What a trader pays beyond what the case asks, so that a small move of the mark does not undo it.
MARGIN_OF_SAFETY = Decimal(50)


class Roles:
    def __init__(self, api: ApiClient, personas: Sequence[Persona], started: float, say: Say) -> None:
        self.api = api
        self.personas = [p for p in personas if p.plays not in ("none", "recover")]
        self.started = started
        self.say = say
        self.acted: set[str] = set()
        self.later: list[asyncio.Task[None]] = []

    def _at(self) -> str:
        return f"t={time.monotonic() - self.started:4.0f}s"

    async def play(self, done: asyncio.Event) -> None:
        """Act on each persona's case as it comes to await a deposit, until ``done``."""
        while not done.is_set():
            for persona in self.personas:
                if persona.name in self.acted:
                    continue
                try:
                    status = await self.api.case(persona.name)
                except ApiError as error:
                    if error.status == 404:
                        continue  # no case yet
                    raise
                if status.state == CaseState.AWAITING_DEPOSIT:
                    self.acted.add(persona.name)
                    await self._act(persona, status)
            await asyncio.sleep(0.5)
        await asyncio.gather(*self.later)

    async def _act(self, persona: Persona, status: CaseStatus) -> None:
        name = persona.name
        needed = (status.deposit_needed or Decimal(0)) + MARGIN_OF_SAFETY
        wire = Deposit(account_id=name, deposit_id=f"{name}-wire-1", amount=needed, currency=SETTLEMENT)
        if persona.plays == "deposit":
            report = await self.api.deposit(wire)
            state = report.receipt.state.value if report.receipt else "no open case"
            self.say(f"{self._at()}  deposit handler: {name} wired {needed:,.2f} USDT -> case {state}")
        elif persona.plays == "unannounced":
            movement = {
                "movement_id": f"{name}-transfer-1",
                "account_id": name,
                "kind": "collateral_in",
                "asset": SETTLEMENT,
                "amount": str(needed),
            }
            all_applied("/v1/feeds/movements", await self.api.movements([movement]))
            self.say(
                f"{self._at()}  treasury: {needed:,.2f} USDT of collateral for {name} booked through the"
                " movements feed, no message to the case (it re-reads the ledger at its deadline)"
            )
        elif persona.plays == "waive":
            await self.api.waive(name, STAFF)
            self.say(f"{self._at()}  support staff: waived {name} ({STAFF.reason})")
        elif persona.plays == "extend":
            assert status.deadline is not None
            extension = DeadlineExtension(
                operator=STAFF.operator,
                reason=STAFF.reason,
                new_deadline=status.deadline + timedelta(seconds=15),
            )
            await self.api.extend(name, extension)
            self.say(f"{self._at()}  support staff: extended {name}'s deadline by 15 s")
            self.later.append(asyncio.create_task(self._deposit_later(wire, 8)))

    async def _deposit_later(self, wire: Deposit, after: float) -> None:
        await asyncio.sleep(after)
        report = await self.api.deposit(wire)
        state = report.receipt.state.value if report.receipt else "no open case"
        self.say(
            f"{self._at()}  deposit handler: {wire.account_id} wired {wire.amount:,.2f} USDT within the"
            f" extension -> case {state}"
        )
