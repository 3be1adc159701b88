"""Is the ledger still in balance? The check every money-moving test ends with.

Double entry means the balances of all ledger accounts sum to zero per asset,
and each balance equals its credits minus its debits in ``transfers``.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg
from pydantic import BaseModel


class LedgerCheck(BaseModel):
    totals_by_asset: dict[str, Decimal]
    drifted_accounts: list[str]
    negative_insurance_funds: list[str]

    @property
    def balanced(self) -> bool:
        return (
            all(total == 0 for total in self.totals_by_asset.values())
            and not self.drifted_accounts
            and not self.negative_insurance_funds
        )


async def check_ledger(conn: asyncpg.Connection) -> LedgerCheck:
    totals = await conn.fetch("SELECT asset, sum(balance) AS total FROM ledger_accounts GROUP BY asset")
    drifted = await conn.fetch(
        """
        SELECT la.ledger_account
          FROM ledger_accounts la
          LEFT JOIN (SELECT credit_account AS acct, sum(amount) AS amt FROM transfers GROUP BY 1) c
            ON c.acct = la.ledger_account
          LEFT JOIN (SELECT debit_account AS acct, sum(amount) AS amt FROM transfers GROUP BY 1) d
            ON d.acct = la.ledger_account
         WHERE la.balance <> coalesce(c.amt, 0) - coalesce(d.amt, 0)
         ORDER BY 1
        """
    )
    negative = await conn.fetch(
        "SELECT ledger_account FROM ledger_accounts WHERE kind = 'insurance_fund' AND balance < 0"
    )
    return LedgerCheck(
        totals_by_asset={r["asset"]: r["total"] for r in totals},
        drifted_accounts=[r["ledger_account"] for r in drifted],
        negative_insurance_funds=[r["ledger_account"] for r in negative],
    )


class InvariantReport(BaseModel):
    """What must hold after any fault: each violation is a sentence a risk officer can act on."""

    ledger: LedgerCheck
    violations: list[str]

    @property
    def holds(self) -> bool:
        return self.ledger.balanced and not self.violations


# Each rule: a query returning the offending rows' names, and how to say it.
_RULES: list[tuple[str, str]] = [
    (
        "SELECT d.deposit_id FROM deposits d LEFT JOIN transfers t ON t.transfer_id = d.transfer_id"
        " WHERE t.transfer_id IS NULL OR t.kind <> 'deposit' OR t.amount <> d.amount",
        "deposit {} is not credited by exactly its own transfer",
    ),
    (
        "SELECT t.transfer_id FROM transfers t LEFT JOIN deposits d ON d.transfer_id = t.transfer_id"
        " WHERE t.kind = 'deposit' AND d.deposit_id IS NULL",
        "deposit transfer {} has no deposit record",
    ),
    (
        "SELECT s.case_id || ' stage ' || s.stage FROM liquidation_stages s"
        " LEFT JOIN liquidation_fills f ON f.case_id = s.case_id AND f.stage = s.stage"
        " GROUP BY s.case_id, s.stage, s.result"
        " HAVING count(f.instrument) <> jsonb_array_length(s.result->'fills')",
        "{}: fills recorded differ from the stage's result",
    ),
    (
        "SELECT case_id || ' stage ' || stage FROM liquidation_stages"
        " WHERE equity_before IS NULL OR equity_before >= maintenance_before",
        "{}: sold from an account the ledger showed above maintenance",
    ),
    (
        "SELECT case_id FROM margin_call_cases WHERE (closed_at IS NULL) <> (outcome IS NULL)"
        " OR (closed_at IS NOT NULL AND state NOT IN ('CURED', 'RESTORED', 'CLOSED_OUT', 'BANKRUPT', 'WAIVED'))",
        "case {} is neither open nor closed with an outcome",
    ),
    (
        "SELECT case_id FROM liquidation_stages GROUP BY case_id HAVING max(stage) <> count(*)",
        "case {}: stage numbers have gaps",
    ),
    (
        "SELECT DISTINCT b.case_id FROM bankruptcy_settlements b"
        " JOIN accounts a ON a.account_id = b.account_id"
        " JOIN ledger_accounts la ON la.account_id = b.account_id AND la.kind = 'collateral'"
        " WHERE b.covered_by_fund > 0 AND la.asset <> a.settlement_currency AND la.balance > 0",
        "case {}: the insurance fund paid while the trader still held other collateral",
    ),
    (
        "SELECT notice_id FROM notice_outbox WHERE delivered_at IS NULL AND failed_at IS NULL"
        " AND deliver_by < now() - interval '2 minutes'",
        "notice {} is still owed long after its delivery window",
    ),
]


async def check_invariants(conn: asyncpg.Connection) -> InvariantReport:
    """The ledger check plus the rules no crash, retry or bad message may break."""
    violations = [message.format(row[0]) for sql, message in _RULES for row in await conn.fetch(sql)]
    return InvariantReport(ledger=await check_ledger(conn), violations=violations)
