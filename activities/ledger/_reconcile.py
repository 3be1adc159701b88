"""Reconciliation: the exchange's view of an account against the ledger's, every difference listed.

Nothing is written: the ledger stays the source of truth, and a difference is
for people to look into (a trade the feed never delivered, a withdrawal booked
twice on the exchange's side). Positions absent on one side count as zero
there; an entry price is compared only where the exchange sent one and the
position is open.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from activities.exceptions import UnknownAccount
from workflows.contract._feeds import AccountView, Difference, Reconciliation


async def reconcile(pool: asyncpg.Pool, view: AccountView) -> Reconciliation:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        if await conn.fetchval("SELECT 1 FROM accounts WHERE account_id = $1", view.account_id) is None:
            raise UnknownAccount(f"account_id: no account {view.account_id!r}")
        positions = {
            r["instrument"]: (r["quantity"], r["entry_price"])
            for r in await conn.fetch(
                "SELECT instrument, quantity, entry_price FROM positions WHERE account_id = $1",
                view.account_id,
            )
        }
        collateral = {
            r["asset"]: r["balance"]
            for r in await conn.fetch(
                "SELECT asset, balance FROM ledger_accounts WHERE kind = 'collateral' AND account_id = $1",
                view.account_id,
            )
        }
    zero = Decimal(0)
    differences: list[Difference] = []
    theirs = {p.instrument: p for p in view.positions}
    for instrument in sorted(set(positions) | set(theirs)):
        ours_q, ours_entry = positions.get(instrument, (zero, None))
        sent = theirs.get(instrument)
        their_q = sent.quantity if sent else zero
        if ours_q != their_q:
            differences.append(
                Difference(field=f"positions.{instrument}.quantity", ledger=ours_q, exchange=their_q)
            )
        if (
            sent is not None
            and sent.entry_price is not None
            and ours_q != 0
            and ours_entry != sent.entry_price
        ):
            differences.append(
                Difference(
                    field=f"positions.{instrument}.entry_price", ledger=ours_entry, exchange=sent.entry_price
                )
            )
    their_collateral = {c.asset: c.amount for c in view.collateral}
    for asset in sorted(set(collateral) | set(their_collateral)):
        ours = collateral.get(asset, zero)
        their = their_collateral.get(asset, zero)
        if ours != their:
            differences.append(Difference(field=f"collateral.{asset}", ledger=ours, exchange=their))
    return Reconciliation(account_id=view.account_id, differences=differences)
