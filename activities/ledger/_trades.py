"""Booking a fill from the matching engine: the position moves, realised PnL and the fee are transfers.

Once per ``trade_id``: the same id with the same content is a duplicate (nothing
happens again), with any other content a conflict naming ``trade_id``. The
account row is locked for the record (``FOR NO KEY UPDATE``, as deposits and
case openings take it), so a trade never interleaves with a liquidation stage,
a withdrawal or a deposit on the same account.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from activities.exceptions import IdempotencyConflict, InvalidReferenceData, UnknownAccount
from activities.ledger._accounts import FEES, TRADE_PNL, TRADING_FEE, fees_account, market_account
from activities.ledger._store import ensure_collateral_account, ensure_system_accounts, post_transfer
from activities.ledger._trading import apply_fill
from workflows.contract._feeds import RecordStatus, Trade


def _places_ok(value: Decimal, step: Decimal) -> bool:
    return (value % step) == 0


async def book_trade(conn: asyncpg.Connection, trade: Trade) -> RecordStatus:
    """Apply one trade in the caller's transaction (a savepoint of a batch); returns applied or duplicate."""
    seen = await conn.fetchrow(
        "SELECT account_id, instrument, side, quantity, price, fee FROM trades WHERE trade_id = $1",
        trade.trade_id,
    )
    if seen is not None:
        same = (
            seen["account_id"],
            seen["instrument"],
            seen["side"],
            seen["quantity"],
            seen["price"],
            seen["fee"],
        )
        if same == (
            trade.account_id,
            trade.instrument,
            trade.side.value,
            trade.quantity,
            trade.price,
            trade.fee,
        ):
            return RecordStatus.DUPLICATE
        # Say nothing of the other trade: it may be another trader's.
        raise IdempotencyConflict(f"trade_id: {trade.trade_id!r} was used before for another trade")
    account = await conn.fetchval(
        "SELECT account_id FROM accounts WHERE account_id = $1 FOR NO KEY UPDATE", trade.account_id
    )
    if account is None:
        raise UnknownAccount(f"account_id: no account {trade.account_id!r}")
    listed = await conn.fetchrow(
        "SELECT i.quote_asset, i.quantity_step, s.decimals FROM instruments i"
        " JOIN assets s ON s.asset = i.quote_asset WHERE i.instrument = $1",
        trade.instrument,
    )
    if listed is None:
        raise InvalidReferenceData(f"instrument: {trade.instrument!r} is not listed")
    if not _places_ok(trade.quantity, listed["quantity_step"]):
        raise InvalidReferenceData(
            f"quantity: {trade.quantity} is not a multiple of {trade.instrument}'s step {listed['quantity_step']}"
        )
    asset, places = listed["quote_asset"], listed["decimals"]
    if not _places_ok(trade.fee, Decimal(1).scaleb(-places)):
        raise InvalidReferenceData(f"fee: {asset} allows {places} decimal places, got {trade.fee}")
    held = await conn.fetchrow(
        "SELECT quantity, entry_price FROM positions WHERE account_id = $1 AND instrument = $2 FOR UPDATE",
        trade.account_id,
        trade.instrument,
    )
    change = apply_fill(
        held["quantity"] if held else Decimal(0),
        held["entry_price"] if held else trade.price,
        trade.side,
        trade.quantity,
        trade.price,
        places,
    )
    await conn.execute(
        "INSERT INTO positions (account_id, instrument, quantity, entry_price) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (account_id, instrument)"
        " DO UPDATE SET quantity = EXCLUDED.quantity, entry_price = EXCLUDED.entry_price",
        trade.account_id,
        trade.instrument,
        change.quantity,
        change.entry_price,
    )
    await ensure_system_accounts(conn, asset)
    collateral = await ensure_collateral_account(conn, trade.account_id, asset)
    pnl = change.realised_pnl
    if pnl != 0:
        debit, credit = (
            (market_account(asset), collateral) if pnl > 0 else (collateral, market_account(asset))
        )
        await post_transfer(
            conn,
            f"trade:{trade.trade_id}:pnl",
            debit,
            credit,
            asset,
            abs(pnl),
            TRADE_PNL,
            None,
            trade.trade_id,
        )
    if trade.fee > 0:
        await conn.execute(
            "INSERT INTO ledger_accounts (ledger_account, kind, asset) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            fees_account(asset),
            FEES,
            asset,
        )
        await post_transfer(
            conn,
            f"trade:{trade.trade_id}:fee",
            collateral,
            fees_account(asset),
            asset,
            trade.fee,
            TRADING_FEE,
            None,
            trade.trade_id,
        )
    await conn.execute(
        "INSERT INTO trades (trade_id, account_id, instrument, side, quantity, price, fee, realised_pnl)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        trade.trade_id,
        trade.account_id,
        trade.instrument,
        trade.side.value,
        trade.quantity,
        trade.price,
        trade.fee,
        pnl,
    )
    return RecordStatus.APPLIED
