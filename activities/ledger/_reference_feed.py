"""The reference-data feed: assets, instruments, accounts, each change audited in ``reference_changes``.

A change takes effect for the next figures (every snapshot reads these
tables) and leaves a row saying what it was before and after, when, and who
sent it. What the books cannot change under money already booked is refused
by name: an asset's ``decimals``, an instrument's ``quote_asset``, an account's
``settlement_currency``. Sending a record that changes nothing is a duplicate
and writes no audit row.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from activities.exceptions import InvalidReferenceData
from activities.ledger._store import ensure_collateral_account, ensure_system_accounts
from workflows.contract._feeds import AccountRecord, AssetListing, InstrumentListing, RecordStatus

Record = AssetListing | InstrumentListing | AccountRecord


def key_of(record: Record) -> str:
    if isinstance(record, AssetListing):
        return record.asset
    if isinstance(record, InstrumentListing):
        return record.instrument
    return record.account_id


async def _audit(
    conn: asyncpg.Connection, kind: str, key: str, old: dict[str, Any] | None, new: dict[str, Any], by: str
) -> RecordStatus:
    if old == new:
        return RecordStatus.DUPLICATE
    await conn.execute(
        "INSERT INTO reference_changes (kind, key, old, new, changed_by) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5)",
        kind,
        key,
        None if old is None else json.dumps(old),
        json.dumps(new),
        by,
    )
    return RecordStatus.APPLIED


def _text(value: Any) -> str | None:
    return (
        None
        if value is None
        else format(value.normalize(), "f")
        if hasattr(value, "normalize")
        else str(value)
    )


async def _asset(conn: asyncpg.Connection, record: AssetListing, by: str) -> RecordStatus:
    row = await conn.fetchrow(
        "SELECT decimals, price, haircut FROM assets WHERE asset = $1 FOR UPDATE", record.asset
    )
    old = (
        None
        if row is None
        else {"decimals": row["decimals"], "price": _text(row["price"]), "haircut": _text(row["haircut"])}
    )
    if row is not None and row["decimals"] != record.decimals:
        raise InvalidReferenceData(f"decimals: {record.asset} is listed with {row['decimals']} decimals")
    await conn.execute(
        "INSERT INTO assets (asset, decimals, price, haircut) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (asset) DO UPDATE SET price = EXCLUDED.price, haircut = EXCLUDED.haircut, price_as_of = now()",
        record.asset,
        record.decimals,
        record.price,
        record.haircut,
    )
    await ensure_system_accounts(conn, record.asset)
    new = {"decimals": record.decimals, "price": _text(record.price), "haircut": _text(record.haircut)}
    return await _audit(conn, "asset", record.asset, old, new, by)


async def _instrument(conn: asyncpg.Connection, record: InstrumentListing, by: str) -> RecordStatus:
    name = record.instrument
    row = await conn.fetchrow(
        "SELECT quote_asset, quantity_step FROM instruments WHERE instrument = $1 FOR UPDATE", name
    )
    if await conn.fetchval("SELECT 1 FROM assets WHERE asset = $1", record.quote_asset) is None:
        raise InvalidReferenceData(f"quote_asset: {record.quote_asset!r} is not listed")
    old: dict[str, Any] | None = None
    if row is None:
        if record.mark_price is None:
            raise InvalidReferenceData(
                f"mark_price: needed to list {name} (no figure is read without a mark)"
            )
        await conn.execute(
            "INSERT INTO instruments (instrument, quote_asset, quantity_step) VALUES ($1, $2, $3)",
            name,
            record.quote_asset,
            record.quantity_step,
        )
        await conn.execute(
            "INSERT INTO mark_prices (instrument, price) VALUES ($1, $2)", name, record.mark_price
        )
    else:
        if row["quote_asset"] != record.quote_asset:
            raise InvalidReferenceData(f"quote_asset: {name} is quoted in {row['quote_asset']}")
        tiers = await conn.fetch(
            "SELECT notional_floor, maintenance_rate, initial_rate FROM instrument_tiers"
            " WHERE instrument = $1 ORDER BY notional_floor",
            name,
        )
        old = {
            "quote_asset": row["quote_asset"],
            "quantity_step": _text(row["quantity_step"]),
            "tiers": [[_text(v) for v in t] for t in tiers],
        }
        await conn.execute(
            "UPDATE instruments SET quantity_step = $2 WHERE instrument = $1", name, record.quantity_step
        )
    await conn.execute("DELETE FROM instrument_tiers WHERE instrument = $1", name)
    await conn.executemany(
        "INSERT INTO instrument_tiers (instrument, notional_floor, maintenance_rate, initial_rate) VALUES ($1, $2, $3, $4)",
        [(name, t.notional_floor, t.maintenance_rate, t.initial_rate) for t in record.tiers],
    )
    new = {
        "quote_asset": record.quote_asset,
        "quantity_step": _text(record.quantity_step),
        "tiers": [
            [_text(t.notional_floor), _text(t.maintenance_rate), _text(t.initial_rate)] for t in record.tiers
        ],
    }
    return await _audit(conn, "instrument", name, old, new, by)


async def _account(conn: asyncpg.Connection, record: AccountRecord, by: str) -> RecordStatus:
    if await conn.fetchval("SELECT 1 FROM assets WHERE asset = $1", record.settlement_currency) is None:
        raise InvalidReferenceData(f"settlement_currency: {record.settlement_currency!r} is not listed")
    row = await conn.fetchrow(
        "SELECT settlement_currency, policy_name FROM accounts WHERE account_id = $1 FOR NO KEY UPDATE",
        record.account_id,
    )
    old = (
        None
        if row is None
        else {"settlement_currency": row["settlement_currency"], "policy_name": row["policy_name"]}
    )
    if row is None:
        await conn.execute(
            "INSERT INTO accounts (account_id, settlement_currency, policy_name) VALUES ($1, $2, $3)",
            record.account_id,
            record.settlement_currency,
            record.policy_name,
        )
    elif row["settlement_currency"] != record.settlement_currency:
        raise InvalidReferenceData(
            f"settlement_currency: the account settles in {row['settlement_currency']}"
        )
    else:
        await conn.execute(
            "UPDATE accounts SET policy_name = $2 WHERE account_id = $1",
            record.account_id,
            record.policy_name,
        )
    await ensure_system_accounts(conn, record.settlement_currency)
    await ensure_collateral_account(conn, record.account_id, record.settlement_currency)
    new = {"settlement_currency": record.settlement_currency, "policy_name": record.policy_name}
    return await _audit(conn, "account", record.account_id, old, new, by)


async def apply_reference(conn: asyncpg.Connection, record: Record, by: str) -> RecordStatus:
    """One reference record, in the caller's transaction (a savepoint of a batch)."""
    if isinstance(record, AssetListing):
        return await _asset(conn, record, by)
    if isinstance(record, InstrumentListing):
        return await _instrument(conn, record, by)
    return await _account(conn, record, by)
