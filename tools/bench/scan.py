"""Benchmark (not a test): ``scan_breaches`` over a large book, one statement.

    .venv/bin/python -m tools.bench.scan [accounts] [positions_per_account]

Seeds the accounts in bulk with SQL, crashes the market, and times the scan, in a
scratch database on the configured PostgreSQL or an embedded one (``worker.stack``).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import asyncpg

from activities.ledger import LedgerActivities
from activities.ledger.migrate import migrate
from worker.config import load_settings
from worker.market import list_venue, move_market
from worker.stack import another_database, create_pool, ledger_database
from workflows.contract import BreachScan


async def seed(conn: asyncpg.Connection, accounts: int, per_account: int) -> None:
    instruments = ["BTCUSDT", "ETHUSDT", "SOLUSDT"][:per_account]
    entries = {"BTCUSDT": 50000, "ETHUSDT": 3000, "SOLUSDT": 150}
    await conn.execute(
        "INSERT INTO accounts (account_id, settlement_currency)"
        " SELECT 'acct-' || g, 'USDT' FROM generate_series(1, $1) g",
        accounts,
    )
    await conn.execute(
        "INSERT INTO ledger_accounts (ledger_account, kind, asset, account_id, balance)"
        " SELECT 'collateral:acct-' || g || ':USDT', 'collateral', 'USDT', 'acct-' || g, 200 + (g % 800)"
        " FROM generate_series(1, $1) g",
        accounts,
    )
    # Keep the books balanced: the same total came in from outside.
    await conn.execute(
        "UPDATE ledger_accounts SET balance = balance - (SELECT sum(200 + (g % 800))"
        " FROM generate_series(1, $1) g) WHERE ledger_account = 'external:USDT'",
        accounts,
    )
    for instrument in instruments:
        notional = Decimal(5000)
        await conn.execute(
            "INSERT INTO positions (account_id, instrument, quantity, entry_price)"
            " SELECT 'acct-' || g, $2, CASE WHEN g % 2 = 0 THEN 1 ELSE -1 END * ($3 / $4::numeric), $4"
            " FROM generate_series(1, $1) g",
            accounts,
            instrument,
            notional,
            Decimal(entries[instrument]),
        )
    await conn.execute("ANALYZE")


async def main(accounts: int, per_account: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        async with ledger_database(load_settings().database_url, Path(directory)) as database:
            conn = await asyncpg.connect(database.url)
            await conn.execute("DROP DATABASE IF EXISTS scan_bench")
            await conn.execute("CREATE DATABASE scan_bench")
            await conn.close()
            pool = await create_pool(another_database(database.url, "scan_bench"))
            async with pool.acquire() as conn:
                await migrate(conn)
                await list_venue(conn, insurance_fund=Decimal(0))
                started = time.perf_counter()
                print(f"seeding {accounts:,} accounts x {per_account} positions ...", flush=True)
                await seed(conn, accounts, per_account)
                print(f"seeded in {time.perf_counter() - started:.1f} s", flush=True)
                await move_market(
                    conn, {"BTCUSDT": Decimal(45000), "ETHUSDT": Decimal(2700), "SOLUSDT": Decimal(135)}
                )
            ledger = LedgerActivities(pool)
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                breaches = await ledger.scan_breaches(BreachScan(limit=100_000))
                timings.append(time.perf_counter() - started)
            print(
                f"scan_breaches over {accounts:,} accounts / {accounts * per_account:,} positions:"
                f" {len(breaches):,} breached; best {min(timings) * 1000:.0f} ms,"
                f" median {sorted(timings)[2] * 1000:.0f} ms (one statement)"
            )
            await pool.close()


if __name__ == "__main__":
    asyncio.run(
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    )
