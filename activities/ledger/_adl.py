"""The auto-deleveraging ranking of a bankruptcy the insurance fund could not cover, recorded with the case.

Storage (SQL) around the domain's formula (``workflows.domain.adl``). For each
instrument the case liquidated, the side opposite the bankrupt account's (its
fills sold a long: the shorts; bought back a short: the longs) is read in one
statement, each holder with its account's equity (haircut collateral plus
every position's unrealised PnL, as ``margin.assess`` has it), scored and
ranked. Written once per case, right after the settlement's transaction: the
header row says the ranking is done, so a retried settlement ranks nothing
twice, and a ranking with nobody in profit on the other side is still on record.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import asyncpg

from workflows.contract import AdlEntry, AdlRanking, BankruptcySettlement
from workflows.domain.adl import FORMULA, Holder, rank

_OPPOSITE_SIDE_SQL = """
WITH sides AS (
    SELECT DISTINCT instrument, CASE WHEN side = 'sell' THEN -1 ELSE 1 END AS opposite
      FROM liquidation_fills WHERE case_id = $1
), holders AS (
    SELECT p.account_id, p.instrument, p.quantity, p.entry_price, m.price AS mark_price
      FROM sides s
      JOIN positions p ON p.instrument = s.instrument AND sign(p.quantity) = s.opposite
      JOIN mark_prices m ON m.instrument = p.instrument
     WHERE p.account_id <> $2 AND p.quantity * (m.price - p.entry_price) > 0
), equity AS (
    SELECT h.account_id,
           coalesce((SELECT sum(CASE WHEN la.balance > 0 THEN la.balance * a.price * (1 - a.haircut)
                                     ELSE la.balance * a.price END)
                       FROM ledger_accounts la JOIN assets a ON a.asset = la.asset
                      WHERE la.kind = 'collateral' AND la.account_id = h.account_id), 0)
         + coalesce((SELECT sum(p.quantity * (m.price - p.entry_price))
                       FROM positions p JOIN mark_prices m ON m.instrument = p.instrument
                      WHERE p.account_id = h.account_id AND p.quantity <> 0), 0) AS equity
      FROM (SELECT DISTINCT account_id FROM holders) h
)
SELECT h.account_id, h.instrument, h.quantity, h.entry_price, h.mark_price, e.equity
  FROM holders h JOIN equity e ON e.account_id = h.account_id
 ORDER BY h.instrument, h.account_id
"""


async def rank_opposite_side(conn: asyncpg.Connection, settlement: BankruptcySettlement) -> None:
    """Rank and record the opposite side of the case's instruments, once per case."""
    case_id = settlement.case_id
    started = await conn.fetchval(
        "INSERT INTO adl_rankings (case_id, account_id, currency, uncovered_loss, formula)"
        " SELECT $1, $2, settlement_currency, $3, $4 FROM accounts WHERE account_id = $2"
        " ON CONFLICT (case_id) DO NOTHING RETURNING 1",
        case_id,
        settlement.account_id,
        settlement.uncovered_loss,
        FORMULA,
    )
    if started is None:
        return  # ranked before: the first ranking stands
    by_instrument: dict[str, list[Holder]] = {}
    for row in await conn.fetch(_OPPOSITE_SIDE_SQL, case_id, settlement.account_id):
        by_instrument.setdefault(row["instrument"], []).append(
            Holder(row["account_id"], row["quantity"], row["entry_price"], row["mark_price"], row["equity"])
        )
    entries = [
        (
            case_id,
            instrument,
            place,
            holder.account_id,
            "long" if holder.quantity > 0 else "short",
            holder.quantity,
            holder.entry_price,
            holder.mark_price,
            score.unrealised_pnl,
            holder.equity,
            score.pnl_ratio,
            score.effective_leverage,
            score.score,
        )
        for instrument, holders in sorted(by_instrument.items())
        for place, (holder, score) in enumerate(rank(holders), start=1)
    ]
    await conn.executemany(
        "INSERT INTO adl_ranking_entries (case_id, instrument, rank, account_id, side, quantity,"
        " entry_price, mark_price, unrealised_pnl, equity, pnl_ratio, effective_leverage, score)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        entries,
    )


async def ranking_of(conn: asyncpg.Connection, case_id: str) -> AdlRanking | None:
    """The case's recorded ranking, or None when it has none (no loss left uncovered, or before 0009)."""
    head = await conn.fetchrow(
        "SELECT currency, uncovered_loss, formula, ranked_at FROM adl_rankings WHERE case_id = $1", case_id
    )
    if head is None:
        return None
    rows = await conn.fetch(
        "SELECT * FROM adl_ranking_entries WHERE case_id = $1 ORDER BY instrument, rank", case_id
    )
    ranked_at: datetime = head["ranked_at"]
    uncovered: Decimal = head["uncovered_loss"]
    return AdlRanking(
        ranked_at=ranked_at,
        currency=head["currency"],
        uncovered_loss=uncovered,
        formula=head["formula"],
        entries=[AdlEntry.model_validate({k: v for k, v in dict(r).items() if k != "case_id"}) for r in rows],
    )
