"""Warnings before the call: the risk monitor's second look at the book, after the breaches.

The complaint about margin calls is that they come without warning, or with
the liquidation. So each account's policy names warning levels (by default
150 % and 120 % of maintenance, ``CasePolicy.warning_levels``): the operator's
book already names a policy per account tier, and how early a trader is warned
belongs with how long they have to pay and how hard liquidation bites. When an
account's equity falls below a level (still above maintenance), the trader gets
a ``margin_call.warning`` notice with the figures, once: the level holds until
equity is clearly back above it (level x (1 + ``warning_rearm_margin``), 5 % of
the level by default), so an account hovering at the line is not told every
second. A deeper level still warns. A warning opens no case and moves no money.

Each tick: re-arm first (accounts clearly back above a held level, one
statement over the accounts holding a warning), then scan the accounts between
maintenance and the highest level, then record what is newly crossed (the
warning and its notice in one transaction; the outbox delivers it). A failure
here is logged and never holds up the calls the monitor makes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from temporalio.common import MetricMeter

from activities.ledger import LedgerWarnings
from workflows.contract import WarningCrossing, WarningScan, level_text
from workflows.domain.policies import CasePolicy

log = logging.getLogger("margin_call.warnings")

METRIC = "margin_call_warnings"


@dataclass
class WarningReport:
    near: int = 0
    warned: int = 0
    rearmed: int = 0
    unpriced: int = 0


@dataclass
class AccountWarner:
    """Warns accounts near a call; ``policy_of`` maps an account's policy name (or None) to its policy."""

    warnings: LedgerWarnings
    policy_of: Callable[[str | None], CasePolicy]
    # Every policy an account may follow: the scan reads up to the highest level of any of them.
    policies: list[CasePolicy]
    max_mark_age: timedelta
    meter: MetricMeter = MetricMeter.noop
    limit: int = 10_000

    @property
    def top_level(self) -> Decimal | None:
        levels = [level for policy in self.policies for level in policy.warning_levels]
        return max(levels) if levels else None

    async def tick(self) -> WarningReport:
        report = WarningReport()
        top = self.top_level
        if top is None:  # the operator turned warnings off in every policy
            return report
        report.rearmed = len(await self.warnings.rearm(self.max_mark_age))
        near = await self.warnings.scan(
            WarningScan(top_level=top, max_mark_age=self.max_mark_age, limit=self.limit)
        )
        report.near = len(near)
        counter = self.meter.create_counter(METRIC, "warnings sent before a margin call, by level")
        for account in near:
            if account.unpriced:
                # A stale mark or a halted instrument: no one is warned on that price either.
                report.unpriced += 1
                continue
            policy = self.policy_of(account.policy_name)
            holding = set(account.warned_levels)
            for level in policy.warning_levels_crossed(account.equity, account.maintenance_margin):
                if level in holding:
                    continue
                crossing = WarningCrossing(
                    account_id=account.account_id,
                    currency=account.currency,
                    level=level,
                    equity=account.equity,
                    maintenance_margin=account.maintenance_margin,
                    rearm_above=level * (1 + policy.warning_rearm_margin),
                    notice_delivery_window=policy.notice_delivery_window,
                )
                if await self.warnings.record(crossing) is not None:
                    report.warned += 1
                    counter.add(1, {"level": level_text(level)})
        return report
