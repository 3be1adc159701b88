"""Money in and out of a trader's collateral that is not a trade: funding, collateral arriving, withdrawals.

Funding and collateral arriving are transfers of their own kind, keyed
``movement:<id>`` so the transfer's own idempotency makes them once-only (same
body: duplicate; another body: a conflict naming ``movement_id``).

A withdrawal is refused while the account has an open case (the money may be
what cures it) or when it would leave equity below initial margin: the
figures are recomputed by ``workflows.domain.margin`` with the amount taken
off, under the account's lock, so a stage, a trade or a case opening on the
account never interleaves with the check.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from activities.exceptions import IdempotencyConflict, InvalidAmount, LedgerError, UnknownAccount
from activities.ledger._accounts import (
    COLLATERAL_IN,
    FUNDING,
    WITHDRAWAL,
    external_account,
    market_account,
)
from activities.ledger._snapshot import load_margin_snapshot
from activities.ledger._store import ensure_collateral_account, ensure_system_accounts, post_transfer
from workflows.contract._feeds import Movement, MovementKind, RecordStatus, Withdrawal
from workflows.domain import margin


class WithdrawalRefused(LedgerError):
    """The account has an open case, or the withdrawal would leave it below initial margin."""


async def _lock_account(conn: asyncpg.Connection, account_id: str) -> None:
    found = await conn.fetchval("SELECT 1 FROM accounts WHERE account_id = $1 FOR NO KEY UPDATE", account_id)
    if found is None:
        raise UnknownAccount(f"account_id: no account {account_id!r}")


async def _check_places(conn: asyncpg.Connection, asset: str, amount: Decimal) -> None:
    places = await conn.fetchval("SELECT decimals FROM assets WHERE asset = $1", asset)
    if places is None:
        raise InvalidAmount(f"asset: {asset!r} is not listed")
    if amount % Decimal(1).scaleb(-places) != 0:
        raise InvalidAmount(f"amount: {asset} allows {places} decimal places, got {amount}")


async def book_movement(conn: asyncpg.Connection, movement: Movement) -> RecordStatus:
    """Funding (to or from the market) or collateral in (from outside), once per ``movement_id``."""
    await _lock_account(conn, movement.account_id)
    await _check_places(conn, movement.asset, movement.amount)
    await ensure_system_accounts(conn, movement.asset)
    collateral = await ensure_collateral_account(conn, movement.account_id, movement.asset)
    if movement.kind is MovementKind.FUNDING:
        other, kind = market_account(movement.asset), FUNDING
    else:
        other, kind = external_account(movement.asset), COLLATERAL_IN
    debit, credit = (other, collateral) if movement.amount > 0 else (collateral, other)
    try:
        posted = await post_transfer(
            conn,
            f"movement:{movement.movement_id}",
            debit,
            credit,
            movement.asset,
            abs(movement.amount),
            kind,
            None,
            movement.movement_id,
        )
    except IdempotencyConflict:
        raise IdempotencyConflict(
            f"movement_id: {movement.movement_id!r} was used before for another movement"
        ) from None
    return RecordStatus.APPLIED if posted else RecordStatus.DUPLICATE


async def book_withdrawal(conn: asyncpg.Connection, withdrawal: Withdrawal) -> RecordStatus:
    """Collateral to the outside world, once per ``withdrawal_id``, if no case is open and margin allows."""
    await _lock_account(conn, withdrawal.account_id)
    seen = await conn.fetchrow(
        "SELECT account_id, asset, amount FROM withdrawals WHERE withdrawal_id = $1", withdrawal.withdrawal_id
    )
    if seen is not None:
        if (seen["account_id"], seen["asset"], seen["amount"]) == (
            withdrawal.account_id,
            withdrawal.asset,
            withdrawal.amount,
        ):
            return RecordStatus.DUPLICATE
        raise IdempotencyConflict(
            f"withdrawal_id: {withdrawal.withdrawal_id!r} was used before for another withdrawal"
        )
    await _check_places(conn, withdrawal.asset, withdrawal.amount)
    open_case = await conn.fetchval(
        "SELECT case_id FROM margin_call_cases WHERE account_id = $1 AND closed_at IS NULL LIMIT 1",
        withdrawal.account_id,
    )
    if open_case is not None:
        raise WithdrawalRefused("account_id: the account has an open margin call case")
    snapshot = await load_margin_snapshot(conn, withdrawal.account_id)
    held = next((c for c in snapshot.portfolio.collateral if c.asset == withdrawal.asset), None)
    if held is None or held.amount < withdrawal.amount:
        raise WithdrawalRefused(f"amount: more than the account holds in {withdrawal.asset}")
    after = snapshot.portfolio.model_copy(
        update={
            "collateral": [
                c.model_copy(update={"amount": c.amount - withdrawal.amount})
                if c.asset == withdrawal.asset
                else c
                for c in snapshot.portfolio.collateral
            ]
        }
    )
    figures = margin.assess(after)
    if figures.equity < figures.initial_margin:
        raise WithdrawalRefused(
            f"amount: would leave equity {figures.equity} below initial margin {figures.initial_margin}"
        )
    collateral = await ensure_collateral_account(conn, withdrawal.account_id, withdrawal.asset)
    await ensure_system_accounts(conn, withdrawal.asset)
    transfer_id = f"withdrawal:{withdrawal.withdrawal_id}"
    await post_transfer(
        conn,
        transfer_id,
        collateral,
        external_account(withdrawal.asset),
        withdrawal.asset,
        withdrawal.amount,
        WITHDRAWAL,
        None,
        withdrawal.withdrawal_id,
    )
    await conn.execute(
        "INSERT INTO withdrawals (withdrawal_id, account_id, asset, amount, transfer_id) VALUES ($1, $2, $3, $4, $5)",
        withdrawal.withdrawal_id,
        withdrawal.account_id,
        withdrawal.asset,
        withdrawal.amount,
        transfer_id,
    )
    return RecordStatus.APPLIED
