"""Reading an account as the risk engine sees it: one account's margin snapshot, and the breach scan.

``load_margin_snapshot`` is the one read of an account (the activity of that
name, the case opening, each stage before and after it sells, the bankruptcy
settlement): collateral, positions with their tiers and marks, in one round
trip, with the figures computed by ``workflows.domain.margin``. The scan asks
the same question of every account in one statement, for the risk monitor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from activities.exceptions import UnknownAccount
from workflows.contract import Breach
from workflows.domain import margin
from workflows.domain.policies import DEFAULT_MAX_MARK_AGE
from workflows.domain.portfolio import MarginSnapshot, Portfolio

_SNAPSHOT_SQL = """
SELECT a.account_id, a.settlement_currency, a.status, now() AS as_of,
  (SELECT decimals FROM assets WHERE asset = a.settlement_currency) AS currency_decimals,
  coalesce((
    SELECT json_agg(json_build_object(
             'asset', la.asset, 'amount', la.balance::text,
             'price', s.price::text, 'haircut', s.haircut::text) ORDER BY la.asset)
      FROM ledger_accounts la JOIN assets s ON s.asset = la.asset
     WHERE la.kind = 'collateral' AND la.account_id = a.account_id), '[]')::text AS collateral,
  coalesce((
    SELECT json_agg(json_build_object(
             'instrument', p.instrument, 'quantity', p.quantity::text,
             'entry_price', p.entry_price::text, 'mark_price', m.price::text,
             'mark_as_of', m.as_of, 'halted', i.halted,
             'tiers', (SELECT json_agg(json_build_object(
                                'notional_floor', t.notional_floor::text,
                                'maintenance_rate', t.maintenance_rate::text,
                                'initial_rate', t.initial_rate::text) ORDER BY t.notional_floor)
                         FROM instrument_tiers t WHERE t.instrument = p.instrument))
           ORDER BY p.instrument)
      FROM positions p JOIN mark_prices m ON m.instrument = p.instrument
      JOIN instruments i ON i.instrument = p.instrument
     WHERE p.account_id = a.account_id AND p.quantity <> 0), '[]')::text AS positions
  FROM accounts a
 WHERE a.account_id = $1
"""


@dataclass(frozen=True)
class Prices:
    """Marks and collateral prices pinned from one read, for work that must not see them move."""

    marks: dict[str, Decimal]
    assets: dict[str, Decimal]

    @classmethod
    def of(cls, snapshot: MarginSnapshot) -> Prices:
        portfolio = snapshot.portfolio
        return cls(
            marks={p.instrument: p.mark_price for p in portfolio.positions},
            assets={c.asset: c.price for c in portfolio.collateral},
        )

    def pin(self, collateral: list[dict[str, Any]], positions: list[dict[str, Any]]) -> None:
        for item in collateral:
            if item["asset"] in self.assets:
                item["price"] = str(self.assets[item["asset"]])
        for item in positions:
            if item["instrument"] in self.marks:
                item["mark_price"] = str(self.marks[item["instrument"]])


async def load_margin_snapshot(
    conn: asyncpg.Connection, account_id: str, prices: Prices | None = None
) -> MarginSnapshot:
    """The account at current marks (or at ``prices`` where given), in one round trip."""
    row = await conn.fetchrow(_SNAPSHOT_SQL, account_id)
    if row is None:
        raise UnknownAccount(f"account_id: no account {account_id!r}")
    collateral, positions = json.loads(row["collateral"]), json.loads(row["positions"])
    if prices is not None:
        prices.pin(collateral, positions)
    portfolio = Portfolio.model_validate({"collateral": collateral, "positions": positions})
    as_of: datetime = row["as_of"]
    return MarginSnapshot(
        account_id=row["account_id"],
        currency=row["settlement_currency"],
        status=row["status"],
        portfolio=portfolio,
        figures=margin.assess(portfolio),
        as_of=as_of,
        currency_decimals=row["currency_decimals"],
    )


# One statement over all accounts: tier bands joined by notional range, collateral
# and positions aggregated per account, filtered to equity below maintenance.
_SCAN_SQL = """
WITH exposure AS (
    SELECT p.account_id,
           sum(p.quantity * (m.price - p.entry_price)) AS upnl,
           sum(abs(p.quantity) * m.price * b.maintenance_rate - b.maintenance_cum) AS mm
      FROM positions p
      JOIN mark_prices m ON m.instrument = p.instrument
      JOIN instrument_tier_bands b
        ON b.instrument = p.instrument
       AND abs(p.quantity) * m.price >= b.notional_floor
       AND (b.next_floor IS NULL OR abs(p.quantity) * m.price < b.next_floor)
     WHERE p.quantity <> 0
     GROUP BY p.account_id
), collateral AS (
    SELECT la.account_id,
           sum(CASE WHEN la.balance > 0 THEN la.balance * s.price * (1 - s.haircut)
                    ELSE la.balance * s.price END) AS value
      FROM ledger_accounts la JOIN assets s ON s.asset = la.asset
     WHERE la.kind = 'collateral'
     GROUP BY la.account_id
)
SELECT e.account_id, a.settlement_currency AS currency, a.policy_name,
       coalesce(c.value, 0) + e.upnl AS equity, e.mm AS maintenance_margin,
       e.mm - (coalesce(c.value, 0) + e.upnl) AS shortfall,
       EXISTS (SELECT 1 FROM waivers w
                WHERE w.account_id = e.account_id AND w.ended_at IS NULL
                  AND (w.until IS NULL OR w.until > now())) AS waived,
       EXISTS (SELECT 1 FROM positions p
                 JOIN mark_prices m ON m.instrument = p.instrument
                 JOIN instruments i ON i.instrument = p.instrument
                WHERE p.account_id = e.account_id AND p.quantity <> 0
                  AND (i.halted OR m.as_of < now() - $1::interval)) AS unpriced
  FROM exposure e
  JOIN accounts a ON a.account_id = e.account_id
  LEFT JOIN collateral c ON c.account_id = e.account_id
 WHERE coalesce(c.value, 0) + e.upnl < e.mm
 ORDER BY shortfall DESC, e.account_id
"""


async def scan_breaches(
    conn: asyncpg.Connection, page: int, max_mark_age: timedelta = DEFAULT_MAX_MARK_AGE
) -> list[Breach]:
    """Every account with equity below maintenance, worst shortfall first, read ``page`` rows at a time.

    Never cut at a limit: accounts whose cases are already open must not crowd
    out one that has none. Runs in a transaction (a cursor needs one). An
    account holding a position whose mark is older than ``max_mark_age``, or
    in a halted instrument, is reported ``unpriced``: still breached (a waiver
    is not ended by an outage), but the monitor calls no one on that price.
    """
    async with conn.transaction():
        return [
            Breach.model_validate(dict(r)) async for r in conn.cursor(_SCAN_SQL, max_mark_age, prefetch=page)
        ]


async def ledger_clock(conn: asyncpg.Connection) -> datetime:
    """The ledger's time, so that what a scan saw is compared with rows on one clock."""
    now: datetime = await conn.fetchval("SELECT now()")
    return now
