"""Small ledger reads and writes that several test modules share (tests import no other test file)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from activities.ledger import LedgerActivities
from workflows.contract import CaseOpening


async def balance(pool: asyncpg.Pool, ledger_account: str) -> Decimal:
    async with pool.acquire() as conn:
        value: Decimal = await conn.fetchval(
            "SELECT balance FROM ledger_accounts WHERE ledger_account = $1", ledger_account
        )
    return value


async def open_case(ledger: LedgerActivities, account_id: str, case_id: str) -> None:
    """Record a case for ``account_id`` directly through the activity, as a workflow would."""
    await ledger.open_case(
        CaseOpening(case_id=case_id, account_id=account_id, call_id="c1", opened_at=datetime.now(UTC))
    )
