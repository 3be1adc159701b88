"""A small exchange to run against: listings, accounts and a scripted crash.

The demo, the benchmarks and the tests all seed the same venue, so its figures
are known and repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from activities.ledger import credit_deposit, reference
from workflows.contract import Deposit
from workflows.domain.portfolio import Tier

SETTLEMENT = "USDT"


def tiers(*rows: tuple[str, str, str]) -> list[Tier]:
    return [
        Tier(notional_floor=Decimal(f), maintenance_rate=Decimal(m), initial_rate=Decimal(i))
        for f, m, i in rows
    ]


# Binance-style tier tables (floors and rates only; the cums are derived).
LISTINGS: dict[str, tuple[Decimal, list[Tier]]] = {
    "BTCUSDT": (
        Decimal("50000"),
        tiers(
            ("0", "0.004", "0.008"),
            ("50000", "0.005", "0.01"),
            ("250000", "0.01", "0.02"),
            ("1000000", "0.025", "0.05"),
        ),
    ),
    "ETHUSDT": (Decimal("3000"), tiers(("0", "0.005", "0.01"), ("100000", "0.0065", "0.0133"))),
    "SOLUSDT": (Decimal("150"), tiers(("0", "0.01", "0.02"), ("50000", "0.02", "0.04"))),
}


async def list_venue(conn: asyncpg.Connection, insurance_fund: Decimal = Decimal("1000")) -> None:
    """Assets, instruments with their tiers and marks, and a seeded insurance fund."""
    await reference.add_asset(conn, SETTLEMENT, 6, Decimal(1))
    for instrument, (price, table) in LISTINGS.items():
        await reference.add_instrument(conn, instrument, SETTLEMENT, table, price)
    if insurance_fund > 0:
        await reference.fund_insurance(conn, SETTLEMENT, insurance_fund, "seed:insurance_fund")


@dataclass(frozen=True)
class Trader:
    account_id: str
    collateral: Decimal
    positions: dict[str, tuple[Decimal, Decimal]]  # instrument -> (signed quantity, entry price)


async def onboard(pool: asyncpg.Pool, trader: Trader) -> None:
    """Open the account, credit its collateral as a deposit, record its positions."""
    async with pool.acquire() as conn:
        await reference.open_account(conn, trader.account_id, SETTLEMENT)
        for instrument, (quantity, entry) in trader.positions.items():
            await reference.set_position(conn, trader.account_id, instrument, quantity, entry)
    if trader.collateral > 0:
        await credit_deposit(
            pool,
            Deposit(
                account_id=trader.account_id,
                deposit_id=f"initial:{trader.account_id}",
                amount=trader.collateral,
                currency=SETTLEMENT,
            ),
        )


async def move_market(conn: asyncpg.Connection, marks: dict[str, Decimal]) -> None:
    for instrument, price in marks.items():
        await reference.set_mark_price(conn, instrument, price)
