"""The three ledger reads the HTTP API (and ``margin-call start``) needs before it asks a case.

Each read is one function over the pool, so that the SQL sits in one place
and can move behind the ledger package's own read functions of the same
names (``activities.ledger``) without touching the routes.
"""

from __future__ import annotations

import asyncpg


async def account_exists(pool: asyncpg.Pool, account_id: str) -> bool:
    """Whether the ledger has a trader account ``account_id``."""
    async with pool.acquire() as conn:
        found = await conn.fetchval("SELECT 1 FROM accounts WHERE account_id = $1", account_id)
    return bool(found)


async def settlement_currency(pool: asyncpg.Pool, account_id: str) -> str | None:
    """The currency ``account_id`` settles in (what a deposit must be in), or None for no such account."""
    async with pool.acquire() as conn:
        currency: str | None = await conn.fetchval(
            "SELECT settlement_currency FROM accounts WHERE account_id = $1", account_id
        )
    return currency


async def closed_case_state(pool: asyncpg.Pool, case_id: str) -> str | None:
    """The final state of case ``case_id`` if the ledger recorded it closed, else None (open or unknown)."""
    async with pool.acquire() as conn:
        state: str | None = await conn.fetchval(
            "SELECT state FROM margin_call_cases WHERE case_id = $1 AND closed_at IS NOT NULL", case_id
        )
    return state


async def ping(pool: asyncpg.Pool) -> None:
    """A round trip to the ledger's database, for the health check."""
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
