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
