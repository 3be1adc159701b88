"""The venue's reference data: assets, instruments and their tiers, marks, accounts, positions, the fund's seed.

These are the writes a trading venue makes outside a margin call (listing,
onboarding, trading, the mark price feed, capitalising the insurance fund).
The demo, the benchmarks and the tests build a small exchange with them; the
case workflow never calls them. Each is idempotent (an upsert, or a transfer
keyed by its id) and checks its input first, raising ``InvalidReferenceData``
with the field's name, so that a feed of bad data is refused rather than left
for a case to trip over: an instrument whose tiers do not start at 0 would make
every snapshot of an account holding it unreadable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from itertools import pairwise

import asyncpg

from activities.exceptions import InvalidReferenceData
from activities.ledger._accounts import INSURANCE_FUND_SEED, external_account, insurance_fund_account
from activities.ledger._store import ensure_collateral_account, ensure_system_accounts, post_transfer
from workflows.domain.portfolio import Tier

_ASSET = re.compile(r"^[A-Z0-9]{2,12}$")


def _positive(field: str, value: Decimal) -> None:
    if not (isinstance(value, Decimal) and value.is_finite() and value > 0):
        raise InvalidReferenceData(f"{field}: must be a positive, finite Decimal, got {value!r}")


def _finite(field: str, value: Decimal) -> None:
    if not (isinstance(value, Decimal) and value.is_finite()):
        raise InvalidReferenceData(f"{field}: must be a finite Decimal, got {value!r}")


def _name(field: str, value: str, longest: int) -> None:
    if not (isinstance(value, str) and 1 <= len(value) <= longest):
        raise InvalidReferenceData(f"{field}: must be 1 to {longest} characters, got {value!r}")


async def _require_asset(conn: asyncpg.Connection, field: str, asset: str) -> None:
    if await conn.fetchval("SELECT 1 FROM assets WHERE asset = $1", asset) is None:
        raise InvalidReferenceData(f"{field}: asset {asset!r} is not listed")


async def add_asset(
    conn: asyncpg.Connection, asset: str, decimals: int, price: Decimal, haircut: Decimal = Decimal(0)
) -> None:
    """List an asset (or reprice it), with the exchange's own accounts in it.

    ``price`` is in the venue's unit of account; ``haircut`` is the share of its
    value not counted as collateral. ``decimals`` is fixed at listing: every
    amount already booked was checked against it, so relisting with other
    decimals is refused.
    """
    if not (isinstance(asset, str) and _ASSET.match(asset)):
        raise InvalidReferenceData(f"asset: must be 2 to 12 capital letters or digits, got {asset!r}")
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 18:
        raise InvalidReferenceData(f"decimals: must be an integer from 0 to 18, got {decimals!r}")
    _positive("price", price)
    _finite("haircut", haircut)
    if not 0 <= haircut < 1:
        raise InvalidReferenceData(f"haircut: must be in [0, 1), got {haircut}")
    async with conn.transaction():
        listed: int = await conn.fetchval(
            "INSERT INTO assets (asset, decimals, price, haircut) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (asset) DO UPDATE SET price = EXCLUDED.price, haircut = EXCLUDED.haircut"
            " RETURNING decimals",
            asset,
            decimals,
            price,
            haircut,
        )
        if listed != decimals:
            raise InvalidReferenceData(f"decimals: {asset} is listed with {listed} decimals, not {decimals}")
        await ensure_system_accounts(conn, asset)


def _check_tiers(tiers: Sequence[Tier]) -> None:
    """The rules a snapshot's position holds its tiers to: from notional 0, strictly ascending."""
    if not tiers:
        raise InvalidReferenceData("tiers: at least one tier is needed")
    if tiers[0].notional_floor != 0:
        raise InvalidReferenceData("tiers: the first tier's notional_floor must be 0")
    for lower, upper in pairwise(tiers):
        if upper.notional_floor <= lower.notional_floor:
            raise InvalidReferenceData("tiers: notional_floor must be strictly ascending")


async def add_instrument(
    conn: asyncpg.Connection,
    instrument: str,
    quote_asset: str,
    tiers: Sequence[Tier],
    mark_price: Decimal,
    quantity_step: Decimal = Decimal("0.00000001"),
) -> None:
    """List an instrument quoted in ``quote_asset`` with its tier table (replacing any before) and a first mark."""
    _name("instrument", instrument, 64)
    _check_tiers(tiers)
    _positive("mark_price", mark_price)
    _positive("quantity_step", quantity_step)
    await _require_asset(conn, "quote_asset", quote_asset)
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


async def set_mark_price(
    conn: asyncpg.Connection, instrument: str, price: Decimal, as_of: datetime | None = None
) -> None:
    """The mark price feed: the price every margin figure of ``instrument`` is computed at from now on.

    ``as_of`` is the time the exchange stands behind the price (the ledger's now
    when not given): a case never liquidates on a mark older than its policy's
    ``max_mark_age``, and the breach scan opens no case from one.
    """
    _positive("price", price)
    if as_of is not None and (not isinstance(as_of, datetime) or as_of.tzinfo is None):
        raise InvalidReferenceData(f"as_of: must be a time with a zone, got {as_of!r}")
    updated = await conn.fetchval(
        "INSERT INTO mark_prices (instrument, price, as_of)"
        " SELECT instrument, $2, coalesce($3, now()) FROM instruments WHERE instrument = $1"
        " ON CONFLICT (instrument) DO UPDATE SET price = EXCLUDED.price, as_of = EXCLUDED.as_of,"
        " updated_at = now() RETURNING 1",
        instrument,
        price,
        as_of,
    )
    if updated is None:
        raise InvalidReferenceData(f"instrument: {instrument!r} is not listed")


async def open_account(conn: asyncpg.Connection, account_id: str, currency: str) -> None:
    """Open a trader's account settling in ``currency``, with its collateral account in it.

    Opening an open account again is a no-op; opening it in another currency is refused.
    """
    _name("account_id", account_id, 128)
    await _require_asset(conn, "currency", currency)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO accounts (account_id, settlement_currency) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            account_id,
            currency,
        )
        settles: str = await conn.fetchval(
            "SELECT settlement_currency FROM accounts WHERE account_id = $1", account_id
        )
        if settles != currency:
            raise InvalidReferenceData(f"currency: account {account_id} settles in {settles}, not {currency}")
        await ensure_collateral_account(conn, account_id, currency)


async def set_position(
    conn: asyncpg.Connection, account_id: str, instrument: str, quantity: Decimal, entry_price: Decimal
) -> None:
    """Record a position as trading left it: signed ``quantity`` (0 when closed) from ``entry_price``.

    Opening a position moves no collateral; its PnL is realised only when it is sold.
    """
    _finite("quantity", quantity)
    _positive("entry_price", entry_price)
    known = await conn.fetchrow(
        "SELECT EXISTS (SELECT 1 FROM accounts WHERE account_id = $1) AS account,"
        " EXISTS (SELECT 1 FROM instruments WHERE instrument = $2) AS instrument",
        account_id,
        instrument,
    )
    if not known["account"]:
        raise InvalidReferenceData(f"account_id: no account {account_id!r}")
    if not known["instrument"]:
        raise InvalidReferenceData(f"instrument: {instrument!r} is not listed")
    await conn.execute(
        "INSERT INTO positions (account_id, instrument, quantity, entry_price) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (account_id, instrument)"
        " DO UPDATE SET quantity = EXCLUDED.quantity, entry_price = EXCLUDED.entry_price",
        account_id,
        instrument,
        quantity,
        entry_price,
    )


async def fund_insurance(
    conn: asyncpg.Connection, asset: str, amount: Decimal, transfer_id: str, reference: str | None = None
) -> bool:
    """Seed the insurance fund from outside (the exchange's own capital), once per ``transfer_id``.

    True when booked now, False when this very transfer was booked before (the
    same id with another amount raises ``IdempotencyConflict``). ``reference``
    is kept on the transfer: who sent the money, for the audit.
    """
    _positive("amount", amount)
    _name("transfer_id", transfer_id, 1000)
    await _require_asset(conn, "asset", asset)
    decimals = await conn.fetchval("SELECT decimals FROM assets WHERE asset = $1", asset)
    if amount != amount.quantize(Decimal(1).scaleb(-decimals)):
        raise InvalidReferenceData(f"amount: {asset} has {decimals} decimals, got {amount}")
    async with conn.transaction():
        await ensure_system_accounts(conn, asset)
        return await post_transfer(
            conn,
            transfer_id,
            external_account(asset),
            insurance_fund_account(asset),
            asset,
            amount,
            INSURANCE_FUND_SEED,
            reference=reference,
        )


async def insurance_fund_balance(conn: asyncpg.Connection, asset: str) -> Decimal:
    """The insurance fund's balance in ``asset`` (zero before anything was paid in)."""
    await _require_asset(conn, "asset", asset)
    value = await conn.fetchval(
        "SELECT balance FROM ledger_accounts WHERE ledger_account = $1", insurance_fund_account(asset)
    )
    return value if value is not None else Decimal(0)
