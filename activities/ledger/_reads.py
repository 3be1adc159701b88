"""What the processes (API, CLI, demo) ask of the ledger, so that no SQL lives outside it.

Small reads over one pool. None of them writes, and none is an activity: the
case workflow reads the ledger only through ``LedgerActivities``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from activities.ledger._accounts import LIQUIDATION_FEE, insurance_fund_account


async def account_exists(pool: asyncpg.Pool, account_id: str) -> bool:
    """Is there a trader account ``account_id``?"""
    found = await pool.fetchval("SELECT 1 FROM accounts WHERE account_id = $1", account_id)
    return found is not None


async def settlement_currency(pool: asyncpg.Pool, account_id: str) -> str | None:
    """The currency the account settles in (None for no such account)."""
    currency: str | None = await pool.fetchval(
        "SELECT settlement_currency FROM accounts WHERE account_id = $1", account_id
    )
    return currency


async def closed_case_state(pool: asyncpg.Pool, case_id: str) -> str | None:
    """The state a case closed in (``CURED``, ``WAIVED``...), or None if it is open or unknown."""
    state: str | None = await pool.fetchval(
        "SELECT state FROM margin_call_cases WHERE case_id = $1 AND closed_at IS NOT NULL", case_id
    )
    return state


@dataclass(frozen=True)
class CaseCounts:
    """How many cases the ledger has recorded, and how many of them closed."""

    opened: int
    closed: int

    @property
    def all_closed(self) -> bool:
        return self.opened == self.closed


async def case_counts(pool: asyncpg.Pool) -> CaseCounts:
    row = await pool.fetchrow("SELECT count(*) AS cases, count(closed_at) AS closed FROM margin_call_cases")
    return CaseCounts(opened=row["cases"], closed=row["closed"])


@dataclass(frozen=True)
class Outcome:
    """The cases in one state, with their accounts (alphabetical)."""

    state: str
    cases: int
    accounts: list[str]


@dataclass(frozen=True)
class CasesSummary:
    """What every case did to the books, for a report: outcomes, stages, fees, the insurance fund."""

    outcomes: list[Outcome]
    stages: int
    sold_notional: Decimal
    liquidation_fees: Decimal
    covered_by_insurance_fund: Decimal
    uncovered_loss: Decimal
    insurance_fund: Decimal

    @property
    def states(self) -> set[str]:
        return {outcome.state for outcome in self.outcomes}


async def cases_summary(pool: asyncpg.Pool, currency: str) -> CasesSummary:
    """Every case's outcome and the money it moved; the insurance fund's balance in ``currency``.

    Fees and settlements are summed over all assets: the venue settles in one currency.
    """
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        outcomes = await conn.fetch(
            "SELECT state, count(*) AS n, array_agg(account_id ORDER BY account_id) AS accounts"
            " FROM margin_call_cases GROUP BY state ORDER BY state"
        )
        stages = await conn.fetchrow(
            "SELECT count(*) AS stages, coalesce(sum((result->>'sold_notional')::numeric), 0) AS sold"
            " FROM liquidation_stages"
        )
        fees = await conn.fetchval(
            "SELECT coalesce(sum(amount), 0) FROM transfers WHERE kind = $1", LIQUIDATION_FEE
        )
        settled = await conn.fetchrow(
            "SELECT coalesce(sum(covered_by_fund), 0) AS covered, coalesce(sum(uncovered_loss), 0) AS uncovered"
            " FROM bankruptcy_settlements"
        )
        fund = await conn.fetchval(
            "SELECT balance FROM ledger_accounts WHERE ledger_account = $1", insurance_fund_account(currency)
        )
    return CasesSummary(
        outcomes=[Outcome(state=r["state"], cases=r["n"], accounts=list(r["accounts"])) for r in outcomes],
        stages=stages["stages"],
        sold_notional=stages["sold"],
        liquidation_fees=fees,
        covered_by_insurance_fund=settled["covered"],
        uncovered_loss=settled["uncovered"],
        insurance_fund=fund if fund is not None else Decimal(0),
    )


@dataclass(frozen=True)
class VenueBookings:
    """What became of the liquidation orders sent to a venue, and which stages the venue or the backstop filled."""

    orders: dict[str, int]  # status (filled, partially_filled, cancelled, rejected, new) -> orders
    stages_at_venue: int  # stages with at least one fill from the venue
    backstop_stages: int  # stages that sold without a venue fill: the backstop took the positions over
    empty_stages: int  # stages that sold nothing (the venue filled nothing within the limit)


async def venue_bookings(pool: asyncpg.Pool) -> VenueBookings:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        orders = await conn.fetch("SELECT status, count(*) AS n FROM venue_orders GROUP BY status")
        stages = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE venue) AS at_venue,"
            " count(*) FILTER (WHERE sold AND NOT venue) AS backstop,"
            " count(*) FILTER (WHERE NOT sold) AS empty"
            " FROM (SELECT jsonb_array_length(s.result->'fills') > 0 AS sold,"
            "       EXISTS (SELECT 1 FROM venue_orders v WHERE v.case_id = s.case_id AND v.stage = s.stage"
            "               AND v.filled_quantity > 0) AS venue"
            "       FROM liquidation_stages s) AS t"
        )
    return VenueBookings(
        orders={r["status"]: r["n"] for r in orders},
        stages_at_venue=stages["at_venue"],
        backstop_stages=stages["backstop"],
        empty_stages=stages["empty"],
    )
