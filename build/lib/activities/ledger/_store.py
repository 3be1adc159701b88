"""The ledger's storage primitives: create ledger accounts, post a transfer, read a balance.

Every money movement goes through ``post_transfer``, which calls the
database's ``post_transfer`` function: the transfer row and both balances move
in one statement, and a repeat of the same transfer id is recognised (same body:
nothing happens; another body: ``IdempotencyConflict``).
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from activities.exceptions import IdempotencyConflict, InvalidAmount
from activities.ledger._accounts import COLLATERAL, SYSTEM_KINDS, Posting, collateral_account, system_account


async def ensure_system_accounts(conn: asyncpg.Connection, asset: str) -> None:
    """The exchange's own accounts in ``asset`` (insurance fund, market, external, uncovered loss)."""
    await conn.executemany(
        "INSERT INTO ledger_accounts (ledger_account, kind, asset) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING",
        [(system_account(kind, asset), kind, asset) for kind in SYSTEM_KINDS],
    )


async def ensure_collateral_account(conn: asyncpg.Connection, account_id: str, asset: str) -> str:
    """The trader's collateral account in ``asset``, created if missing; returns its name."""
    name = collateral_account(account_id, asset)
    await conn.execute(
        "INSERT INTO ledger_accounts (ledger_account, kind, asset, account_id)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        name,
        COLLATERAL,
        asset,
        account_id,
    )
    return name


async def post_transfer(
    conn: asyncpg.Connection,
    transfer_id: str,
    debit: str,
    credit: str,
    asset: str,
    amount: Decimal,
    kind: str,
    case_id: str | None = None,
    reference: str | None = None,
) -> bool:
    """Post one double-entry transfer; True if new, False if this exact one was posted before."""
    if not (amount.is_finite() and amount > 0):
        raise InvalidAmount(f"transfer {transfer_id}: amount must be positive and finite, got {amount}")
    outcome = await conn.fetchval(
        "SELECT post_transfer($1, $2, $3, $4, $5, $6, $7, $8)",
        transfer_id,
        debit,
        credit,
        asset,
        amount,
        kind,
        case_id,
        reference,
    )
    if outcome == "conflict":
        raise IdempotencyConflict(f"transfer {transfer_id} was posted before with a different body")
    return bool(outcome == "posted")


async def post(conn: asyncpg.Connection, posting: Posting) -> bool:
    """``post_transfer`` for a posting the domain code built."""
    return await post_transfer(
        conn,
        posting.transfer_id,
        posting.debit,
        posting.credit,
        posting.asset,
        posting.amount,
        posting.kind,
        posting.case_id,
        posting.reference,
    )


async def balance_of(conn: asyncpg.Connection, ledger_account: str, *, for_update: bool = False) -> Decimal:
    """A ledger account's balance (locked for the transaction with ``for_update``)."""
    sql = "SELECT balance FROM ledger_accounts WHERE ledger_account = $1"
    value: Decimal = await conn.fetchval(sql + (" FOR UPDATE" if for_update else ""), ledger_account)
    return value
