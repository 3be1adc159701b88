"""The sample listings written straight into the ledger, for tests, benchmarks and the soak.

They seed the ledger in process (``activities.ledger.reference``), which is
quick and needs no API. The exchange side of the dev stack and the demo load
the same listings through the public feeds instead (``worker.exchange``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from activities.ledger import credit_deposit, reference
from worker.exchange.listings import LISTINGS, SETTLEMENT, tiers
from workflows.contract import Deposit

# Re-exported: the tests, benchmarks and soak name the listings from here.
__all__ = ["LISTINGS", "SETTLEMENT", "Trader", "list_venue", "move_market", "onboard", "tiers"]


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
