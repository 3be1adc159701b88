"""Setting up the exchange's books: assets, instruments, accounts, positions, marks.

These are the writes a trading venue makes outside a margin call (listing,
onboarding, trading, the mark price feed). The demo, the benchmarks and the tests
use them to build a small exchange; the case workflow never does.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import asyncpg

from activities.ledger import (
    ensure_collateral_account,
    ensure_system_accounts,
    post_transfer,
    system_account,
)
from workflows.domain.portfolio import Tier


async def add_asset(
    conn: asyncpg.Connection, asset: str, decimals: int, price: Decimal, haircut: Decimal = Decimal(0)
) -> None:
    await conn.execute(
        "INSERT INTO assets (asset, decimals, price, haircut) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (asset) DO UPDATE SET price = EXCLUDED.price, haircut = EXCLUDED.haircut",
        asset,
        decimals,
        price,
        haircut,
    )
    await ensure_system_accounts(conn, asset)


async def add_instrument(
    conn: asyncpg.Connection,
    instrument: str,
    quote_asset: str,
    tiers: Sequence[Tier],
    mark_price: Decimal,
    quantity_step: Decimal = Decimal("0.00000001"),
) -> None:
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO instruments (instrument, quote_asset, quantity_step) VALUES ($1, $2, $3)"
            " ON CONFLICT (instrument) DO NOTHING",
            instrument,
            quote_asset,
            quantity_step,
        )
        await conn.execute("DELETE FROM instrument_tiers WHERE instrument = $1", instrument)
        await conn.executemany(
            "INSERT INTO instrument_tiers (instrument, notional_floor, maintenance_rate, initial_rate)"
            " VALUES ($1, $2, $3, $4)",
            [(instrument, t.notional_floor, t.maintenance_rate, t.initial_rate) for t in tiers],
        )
        await set_mark_price(conn, instrument, mark_price)


async def set_mark_price(conn: asyncpg.Connection, instrument: str, price: Decimal) -> None:
    await conn.execute(
        "INSERT INTO mark_prices (instrument, price) VALUES ($1, $2)"
        " ON CONFLICT (instrument) DO UPDATE SET price = EXCLUDED.price, updated_at = now()",
        instrument,
        price,
    )


async def open_account(conn: asyncpg.Connection, account_id: str, currency: str) -> None:
    await conn.execute(
        "INSERT INTO accounts (account_id, settlement_currency) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        account_id,
        currency,
    )
    await ensure_collateral_account(conn, account_id, currency)


async def set_position(
    conn: asyncpg.Connection, account_id: str, instrument: str, quantity: Decimal, entry_price: Decimal
) -> None:
    """Record a position as trading left it (opening a position moves no collateral)."""
    await conn.execute(
        "INSERT INTO positions (account_id, instrument, quantity, entry_price) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (account_id, instrument)"
        " DO UPDATE SET quantity = EXCLUDED.quantity, entry_price = EXCLUDED.entry_price",
        account_id,
        instrument,
        quantity,
        entry_price,
    )


async def fund_insurance(conn: asyncpg.Connection, asset: str, amount: Decimal, transfer_id: str) -> None:
    """Seed the insurance fund from outside (the exchange's own capital)."""
    async with conn.transaction():
        await ensure_system_accounts(conn, asset)
        await post_transfer(
            conn,
            transfer_id,
            system_account("external", asset),
            system_account("insurance_fund", asset),
            asset,
            amount,
            "insurance_fund_seed",
        )
