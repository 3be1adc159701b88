"""Warnings before the call, in the ledger: who is near a call, each warning once, and re-arming.

Three statements for the risk monitor, and one read for statements:

- ``rearm``: warnings that hold on accounts now clearly back above them
  (equity > rearm_above x maintenance) stop holding, so that their level may
  warn again. One statement, over the accounts that hold a warning only: the
  figures are computed for those accounts, not for the book.
- ``scan``: accounts whose equity is at or above maintenance but below the
  highest warning level of any policy, with the levels whose warning still
  holds; the monitor picks each account's own crossed levels from there. One
  pass over the book, as the breach scan makes; accounts with a case open are
  left out (the case speaks for itself), and an account on a stale or halted
  mark is reported ``unpriced``.
- ``record``: the warning's row and its notice in the outbox, in one
  transaction. The row is keyed by account, level and episode, and at most one
  warning per account and level holds at a time (a unique index), so a scan
  that repeats, or two monitors at once, write nothing twice.

A margin call spends every warning level it passed (``spend_levels_on_call``,
in the transaction that opens the case): the call says more than any warning,
and an account the case brought back to, say, 1.3 x maintenance is not warned
right after its close; its levels re-arm like a warning's, once it is clearly
above them.

The figures are the breach scan's (``_snapshot``), asked of other accounts;
``tests/activities/test_warnings.py`` holds both to ``workflows.domain.margin``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from workflows.contract import (
    CaseOpening,
    MarginWarning,
    NearCall,
    WarningCrossing,
    WarningScan,
    warning_prefix,
)
from workflows.domain.policies import CasePolicy
from workflows.domain.portfolio import MarginSnapshot

log = logging.getLogger("margin_call.ledger.warnings")

# Per account: unrealised PnL and maintenance of its positions at their marks (tier bands joined by
# notional), the haircut value of its collateral. ``{accounts}`` narrows both to some accounts.
_FIGURES = """
exposure AS (
    SELECT p.account_id,
           sum(p.quantity * (m.price - p.entry_price)) AS upnl,
           sum(abs(p.quantity) * m.price * b.maintenance_rate - b.maintenance_cum) AS mm
      FROM positions p
      JOIN mark_prices m ON m.instrument = p.instrument
      JOIN instrument_tier_bands b
        ON b.instrument = p.instrument
       AND abs(p.quantity) * m.price >= b.notional_floor
       AND (b.next_floor IS NULL OR abs(p.quantity) * m.price < b.next_floor)
     WHERE p.quantity <> 0 {accounts}
     GROUP BY p.account_id
), collateral AS (
    SELECT la.account_id,
           sum(CASE WHEN la.balance > 0 THEN la.balance * s.price * (1 - s.haircut)
                    ELSE la.balance * s.price END) AS value
      FROM ledger_accounts la JOIN assets s ON s.asset = la.asset
     WHERE la.kind = 'collateral' {collateral_accounts}
     GROUP BY la.account_id
)"""

# A position of the account on a mark older than $1 or in a halted instrument.
_UNPRICED = """EXISTS (SELECT 1 FROM positions p
                 JOIN mark_prices m ON m.instrument = p.instrument
                 JOIN instruments i ON i.instrument = p.instrument
                WHERE p.account_id = {account} AND p.quantity <> 0
                  AND (i.halted OR m.as_of < now() - $1::interval))"""

_HOLDING = "SELECT DISTINCT account_id FROM margin_warnings WHERE rearmed_at IS NULL"

_REARM_SQL = f"""
WITH holding AS ({_HOLDING}),
{
    _FIGURES.format(
        accounts="AND p.account_id IN (SELECT account_id FROM holding)",
        collateral_accounts="AND la.account_id IN (SELECT account_id FROM holding)",
    )
}, figures AS (
    SELECT h.account_id, coalesce(c.value, 0) + coalesce(e.upnl, 0) AS equity, coalesce(e.mm, 0) AS mm
      FROM holding h
      LEFT JOIN exposure e ON e.account_id = h.account_id
      LEFT JOIN collateral c ON c.account_id = h.account_id
     WHERE NOT {_UNPRICED.format(account="h.account_id")}
)
UPDATE margin_warnings w SET rearmed_at = now()
  FROM figures f
 WHERE w.account_id = f.account_id AND w.rearmed_at IS NULL AND f.equity > w.rearm_above * f.mm
RETURNING w.account_id, w.level
"""

_SCAN_SQL = f"""
WITH {_FIGURES.format(accounts="", collateral_accounts="")}
SELECT e.account_id, a.settlement_currency AS currency, a.policy_name,
       coalesce(c.value, 0) + e.upnl AS equity, e.mm AS maintenance_margin,
       coalesce((SELECT array_agg(w.level::text ORDER BY w.level DESC) FROM margin_warnings w
                  WHERE w.account_id = e.account_id AND w.rearmed_at IS NULL), '{{}}') AS warned_levels,
       {_UNPRICED.format(account="e.account_id")} AS unpriced
  FROM exposure e
  JOIN accounts a ON a.account_id = e.account_id
  LEFT JOIN collateral c ON c.account_id = e.account_id
 WHERE e.mm > 0
   AND coalesce(c.value, 0) + e.upnl >= e.mm
   AND coalesce(c.value, 0) + e.upnl < $2 * e.mm
   AND NOT EXISTS (SELECT 1 FROM margin_call_cases k WHERE k.account_id = e.account_id AND k.closed_at IS NULL)
 ORDER BY e.account_id
"""

# The next episode of the account's level, unless a warning of that level still holds (the unique
# index ``margin_warnings_holding``) or another writer took the episode first (the primary key).
_RECORD_SQL = """
INSERT INTO margin_warnings (account_id, level, episode, currency, equity, maintenance_margin,
                             distance_to_call, rearm_above, notice_id)
SELECT $1, $2::numeric, n.episode, $3, $4::numeric, $5::numeric, $4::numeric - $5::numeric, $6::numeric,
       $7 || n.episode
  FROM (SELECT coalesce(max(episode), 0) + 1 AS episode FROM margin_warnings
         WHERE account_id = $1 AND level = $2::numeric) n
ON CONFLICT DO NOTHING
RETURNING account_id, currency, level, episode, equity, maintenance_margin, distance_to_call, rearm_above,
          notice_id, warned_at, rearmed_at
"""

_OUTBOX_SQL = (
    "INSERT INTO notice_outbox (notice_id, case_id, body, deliver_by)"
    " VALUES ($1, NULL, $2::jsonb, $3) ON CONFLICT (notice_id) DO NOTHING"
)

# Each level of the case's policy that no warning holds is spent by the call (no notice).
_SPEND_SQL = """
INSERT INTO margin_warnings (account_id, level, episode, currency, equity, maintenance_margin,
                             distance_to_call, rearm_above, case_id)
SELECT $1, l.level, coalesce((SELECT max(episode) FROM margin_warnings w
                               WHERE w.account_id = $1 AND w.level = l.level), 0) + 1,
       $2, $3::numeric, $4::numeric, $3::numeric - $4::numeric, l.level * (1 + $6::numeric), $7
  FROM unnest($5::numeric[]) AS l(level)
ON CONFLICT DO NOTHING
"""

_COLUMNS = (
    "account_id, currency, level, episode, equity, maintenance_margin, distance_to_call, rearm_above,"
    " notice_id, warned_at, rearmed_at"
)


class LedgerWarnings:
    """The risk monitor's warnings in the ledger, over its pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def rearm(self, max_mark_age: timedelta) -> list[tuple[str, Decimal]]:
        """End the warnings whose account is clearly back above them (on fresh marks); (account, level) each."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_REARM_SQL, max_mark_age)
        return [(r["account_id"], r["level"]) for r in rows]

    async def scan(self, scan: WarningScan) -> list[NearCall]:
        """Accounts at or above maintenance and below ``top_level`` x maintenance, with no case open."""
        async with self.pool.acquire() as conn, conn.transaction():
            return [
                NearCall.model_validate(dict(r))
                async for r in conn.cursor(_SCAN_SQL, scan.max_mark_age, scan.top_level, prefetch=scan.limit)
            ]

    async def record(self, crossing: WarningCrossing) -> MarginWarning | None:
        """The warning and its notice, once; None when a warning of that level already holds."""
        prefix = warning_prefix(crossing.account_id, crossing.level)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                _RECORD_SQL,
                crossing.account_id,
                crossing.level,
                crossing.currency,
                crossing.equity,
                crossing.maintenance_margin,
                crossing.rearm_above,
                prefix,
            )
            if row is None:
                return None
            warning = MarginWarning.model_validate(dict(row))
            deliver_by = max(warning.warned_at, datetime.now(UTC)) + crossing.notice_delivery_window
            await conn.execute(_OUTBOX_SQL, warning.notice_id, warning.notice().model_dump_json(), deliver_by)
        return warning

    async def of_account(self, account_id: str, since: datetime | None = None) -> list[MarginWarning]:
        """The account's warnings, oldest first (since ``since``): what a statement lists."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM margin_warnings WHERE account_id = $1 AND notice_id IS NOT NULL"
            " AND ($2::timestamptz IS NULL OR warned_at >= $2) ORDER BY warned_at, level DESC",
            account_id,
            since,
        )
        return [MarginWarning.model_validate(dict(r)) for r in rows]


async def spend_levels_on_call(
    conn: asyncpg.Connection, opening: CaseOpening, snapshot: MarginSnapshot
) -> None:
    """Every warning level of the case's policy is spent by its call, in the opening's transaction.

    Bookkeeping for warnings only: in a savepoint, and a failure is logged, never
    raised, so that nothing about a warning can keep a case from opening.
    """
    policy = opening.policy or CasePolicy()
    if not policy.warning_levels:
        return
    figures = snapshot.figures
    try:
        async with conn.transaction():
            await conn.execute(
                _SPEND_SQL,
                opening.account_id,
                snapshot.currency,
                figures.equity,
                figures.maintenance_margin,
                policy.warning_levels,
                policy.warning_rearm_margin,
                opening.case_id,
            )
    except asyncpg.PostgresError:
        log.exception("case %s: its warning levels could not be marked spent", opening.case_id)
