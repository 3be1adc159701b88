"""``LedgerActivities``: the ledger as the case workflow's activities, over one asyncpg pool.

An adapter only: each activity takes a connection (and a transaction where it
writes) and hands it to the storage code (``_cases``, ``_stages``,
``_bankruptcy``, ``_snapshot``). The class owns the pool for the worker's
lifetime (the pattern of the money-transfer sample's ``BankingActivities``).
Each write is one transaction keyed by the case id and stage, so a retry after
a crash finds its own rows and returns the first result without writing twice.

The risk monitor reads through the same object (``scan_breaches``, ``clock``,
``end_waivers``); those are plain methods, not activities: no workflow calls them.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import ParamSpec, TypeVar

import asyncpg
from temporalio import activity

from activities.exceptions import PolicyRefused, non_retryable
from activities.ledger import _adl, _bankruptcy, _calls, _cases, _inputs, _stages, _venue_stages
from activities.ledger._pricing import exact_arithmetic
from activities.ledger._snapshot import ledger_clock, load_margin_snapshot, scan_breaches
from activities.ledger._stages import STAGE_AFTER_COMMIT, Checkpoint, no_checkpoint
from activities.venue import Venue
from workflows import contract
from workflows.contract import (
    BankruptcyRequest,
    BankruptcySettlement,
    Breach,
    BreachScan,
    CaseClosing,
    CaseEvent,
    CaseOpening,
    StageRequest,
    StageResult,
)
from workflows.domain.policies import STANDARD_BOOK, PolicyBook, PolicyError
from workflows.domain.portfolio import MarginSnapshot

P = ParamSpec("P")
R = TypeVar("R")


def exact(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Run money arithmetic at the risk math's precision, so a product is not rounded (half-even,
    at 28 digits) before the rounding that is meant to favour neither side."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with exact_arithmetic():
            return await fn(*args, **kwargs)

    return wrapper


class LedgerActivities:
    """Ledger reads and writes for the case workflow; owns the asyncpg pool.

    ``checkpoint`` is called with a name as a liquidation stage passes each of
    its checkpoints (``STAGE_CHECKED``, ``STAGE_IN_TRANSACTION``,
    ``STAGE_AFTER_COMMIT``): nothing in production; a fault test's hook or
    freeze (``worker.failpoints``) in tests.

    ``venue`` is where a stage's orders go: None for the ``ledger`` venue (the
    backstop takes the positions over at the mark with the policy's slippage),
    or an order gateway's port (``activities.venue``) for the ``http`` venue.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        policies: PolicyBook = STANDARD_BOOK,
        checkpoint: Checkpoint = no_checkpoint,
        venue: Venue | None = None,
    ) -> None:
        self.pool = pool
        self.venue = venue
        # The operator's book: every case opened through this worker is held to it.
        self.policies = policies
        self.checkpoint = checkpoint

    @activity.defn(name=contract.ACTIVITY_READ_ACCOUNT)
    @non_retryable
    async def load_margin_snapshot(self, account_id: str) -> MarginSnapshot:
        """Re-read the account: the ledger, not the message, decides whether a case is cured."""
        async with self.pool.acquire() as conn:
            return await load_margin_snapshot(conn, account_id)

    @activity.defn(name=contract.ACTIVITY_OPEN_CASE)
    @non_retryable
    async def open_case(self, opening: CaseOpening) -> MarginSnapshot:
        """Check the case's policy against the operator's book, record the case (once), return the account.

        The account and policy it opens on are recorded with it, for its
        statement; a retry answers with the account the first attempt recorded.
        """
        if opening.policy is not None:
            try:
                self.policies.check(opening.policy_name, opening.policy)
            except PolicyError as error:
                raise PolicyRefused(str(error)) from None
        async with self.pool.acquire() as conn, conn.transaction():
            snapshot = await load_margin_snapshot(conn, opening.account_id)
            await _cases.record_opening(conn, opening)
            snapshot = await _inputs.record_opening(
                conn, opening, snapshot, self._version(opening.policy_name)
            )
            await _calls.record_call(conn, opening, snapshot)  # the call, for the regulator's daily record
            return snapshot

    def _version(self, policy_name: str) -> int | None:
        """The version of the named policy in the operator's book, for the record (None: not in it)."""
        try:
            return self.policies.named(policy_name).version
        except PolicyError:
            return None

    @activity.defn(name=contract.ACTIVITY_LIQUIDATION_STAGE)
    @non_retryable
    @exact
    async def execute_liquidation_stage(self, request: StageRequest) -> StageResult:
        """Sell what the plan says (at mark less slippage, or through the venue), book PnL and fee; once per stage."""
        if self.venue is not None:
            result = await _venue_stages.run_stage(self.pool, request, self.venue, self.checkpoint)
            await self.checkpoint(STAGE_AFTER_COMMIT)
            return result
        async with self.pool.acquire() as conn, conn.transaction():
            result = await _stages.book_stage(conn, request, self.checkpoint)
        await self.checkpoint(STAGE_AFTER_COMMIT)
        return result

    @activity.defn(name=contract.ACTIVITY_SETTLE_BANKRUPTCY)
    @non_retryable
    @exact
    async def settle_bankruptcy(self, request: BankruptcyRequest) -> BankruptcySettlement:
        """Sell what other collateral is left, then cover what is still negative from the insurance fund.

        A loss the fund could not cover is ranked for auto-deleveraging right
        after, in a transaction of its own (once per case: a retry finds it).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            settlement = await _bankruptcy.settle(conn, request)
        if settlement.uncovered_loss > 0:
            async with self.pool.acquire() as conn, conn.transaction():
                await _adl.rank_opposite_side(conn, settlement)
        return settlement

    @activity.defn(name=contract.ACTIVITY_CLOSE_CASE)
    async def close_case(self, closing: CaseClosing) -> None:
        """Write the case's outcome to its record (and the account as it is then); rewriting is harmless."""
        async with self.pool.acquire() as conn, conn.transaction():
            await _cases.record_closing(conn, closing)
            await _inputs.record_closing(conn, closing.status.case_id, closing.status.account_id)

    @activity.defn(name=contract.ACTIVITY_RECORD_CASE_EVENT)
    async def record_case_event(self, event: CaseEvent) -> None:
        """Add a line to the case's audit trail (once per event id)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await _cases.record_event(conn, event)

    async def scan_breaches(self, scan: BreachScan) -> list[Breach]:
        """Every account with equity below maintenance, worst shortfall first (for the risk monitor)."""
        async with self.pool.acquire() as conn:
            return await scan_breaches(conn, scan.limit, scan.max_mark_age)

    async def clock(self) -> datetime:
        """The ledger's time, so that what a scan saw is compared with rows on one clock."""
        async with self.pool.acquire() as conn:
            return await ledger_clock(conn)

    async def end_waivers(self, breached: set[str], scanned_at: datetime) -> list[str]:
        """End waivers past their time, and open-ended ones whose account the scan found healthy."""
        async with self.pool.acquire() as conn:
            return await _cases.end_waivers(conn, breached, scanned_at)
