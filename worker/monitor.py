"""The risk monitor: the exchange service that opens cases in the embedded stack.

Every tick it runs ``scan_breaches`` (one statement over all accounts, read to
the end), opens a case for each breached account (the workflow id makes a
repeat join the open case) unless staff waived it and it is above the hard
threshold, and tells open cases whose account fell past the hard threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from activities.ledger import LedgerActivities
from workflows import contract
from workflows.client import MarginCallClient
from workflows.contract import Breach, BreachScan, RiskEscalation
from workflows.domain.policies import DEFAULT_POLICY, CasePolicy, PolicyBook, PolicyError

log = logging.getLogger("margin_call.monitor")

# A case already opened is not started again for this long; after that a start
# is a cheap "join the open case or open a new one if it closed".
REMEMBER_SECONDS = 30.0


@dataclass
class TickReport:
    breaches: int = 0
    opened: int = 0
    escalated: int = 0
    waived: int = 0
    unpriced: int = 0


@dataclass
class RiskMonitor:
    ledger: LedgerActivities
    cases: MarginCallClient
    policy: CasePolicy = field(default_factory=CasePolicy)
    # Rows per page of the scan; every breached account is read whatever the count.
    limit: int = 10_000
    concurrency: int = 32
    # The operator's book: an account whose reference data names a policy in it is held to that
    # policy; other accounts (and a name the book lost since) to ``policy``.
    policies: PolicyBook | None = None
    _opened: dict[str, float] = field(default_factory=dict)
    _escalated: set[str] = field(default_factory=set)

    async def tick(self) -> TickReport:
        scanned_at = await self.ledger.clock()
        breaches = await self.ledger.scan_breaches(
            BreachScan(limit=self.limit, max_mark_age=self.policy.max_mark_age)
        )
        report = TickReport(breaches=len(breaches))
        # A waive without a time holds until the account is seen healthy; one past its time ends.
        await self.ledger.end_waivers({b.account_id for b in breaches}, scanned_at)
        gate = asyncio.Semaphore(self.concurrency)
        call_id = "breach-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")

        async def handle(breach: Breach) -> None:
            async with gate:
                if breach.unpriced:
                    # A stale mark or a halted instrument: no one is called on that price.
                    report.unpriced += 1
                    return
                name, policy = self._policy_of(breach)
                hard_line = breach.maintenance_margin * policy.hard_threshold
                if breach.waived and breach.equity >= hard_line:
                    # Staff waived the account's last case: no new case, unless past the hard line.
                    report.waived += 1
                    return
                now = time.monotonic()
                started_now = now - self._opened.get(breach.account_id, -REMEMBER_SECONDS) >= REMEMBER_SECONDS
                if started_now:
                    await self.cases.open_case(
                        breach.account_id, call_id, policy, policy_name=name, shortfall=breach.shortfall
                    )
                    self._opened[breach.account_id] = now
                    report.opened += 1
                # A case started just now checks the hard line itself; one already open needs telling.
                if breach.equity < hard_line and not started_now and breach.account_id not in self._escalated:
                    handle_ = self.cases.handle(breach.account_id)
                    await handle_.signal(
                        contract.SIGNAL_RISK_ESCALATED,
                        RiskEscalation(equity=breach.equity, maintenance_margin=breach.maintenance_margin),
                    )
                    self._escalated.add(breach.account_id)
                    report.escalated += 1

        results = await asyncio.gather(*(handle(b) for b in breaches), return_exceptions=True)
        for breach, result in zip(breaches, results, strict=True):
            if isinstance(result, Exception):
                log.warning("account %s: could not open or signal its case: %s", breach.account_id, result)
                # Its case may have closed meanwhile: the next tick starts one instead of signalling.
                self._opened.pop(breach.account_id, None)
        # Accounts that are healthy again may breach again later with a new case.
        breached = {b.account_id for b in breaches}
        self._escalated &= breached
        return report

    def _policy_of(self, breach: Breach) -> tuple[str, CasePolicy]:
        if breach.policy_name is not None and self.policies is not None:
            try:
                return breach.policy_name, self.policies.resolve(breach.policy_name)
            except PolicyError as error:
                # Opening the case on the standard policy beats not calling a breached account.
                log.warning("account %s: %s; its case follows %s", breach.account_id, error, DEFAULT_POLICY)
        return DEFAULT_POLICY, self.policy

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        log.info("risk monitor scanning every %.1f s", interval)
        while not stop.is_set():
            try:
                report = await self.tick()
                if report.opened or report.escalated:
                    log.info(
                        "scan: %d breached, %d cases opened or joined, %d escalated",
                        report.breaches,
                        report.opened,
                        report.escalated,
                    )
            except Exception:
                log.exception("scan failed; retrying next tick")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
