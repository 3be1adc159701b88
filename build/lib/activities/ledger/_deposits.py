"""Crediting a deposit: the outside world to the trader's collateral, once per deposit id.

The client API's deposit handler credits the ledger here before it reports the
deposit to the case (``MarginCallClient.report_deposit`` takes a
``DepositLedger``; ``PostgresDeposits`` is that ledger over this database).
"""

from __future__ import annotations

import asyncpg

from activities.exceptions import CurrencyMismatch, IdempotencyConflict, InvalidAmount, UnknownAccount
from activities.ledger._accounts import DEPOSIT, external_account
from activities.ledger._store import ensure_collateral_account, ensure_system_accounts, post_transfer
from workflows.contract import Deposit, DepositBooking
from workflows.domain.money import AmountError, money_amount


async def credit_deposit(pool: asyncpg.Pool, deposit: Deposit) -> DepositBooking:
    """Book a deposit (external -> trader collateral), idempotent by deposit id.

    The account is locked for the transaction, so a deposit and a stage on the
    same account never interleave. A deposit id seen before with the same
    account, currency and amount is reported as already credited; with another
    body it is refused, without a word about the other deposit.
    """
    async with pool.acquire() as conn, conn.transaction():
        account = await conn.fetchrow(
            "SELECT a.settlement_currency, s.decimals FROM accounts a JOIN assets s ON s.asset = a.settlement_currency"
            " WHERE a.account_id = $1 FOR NO KEY UPDATE OF a",
            deposit.account_id,
        )
        if account is None:
            raise UnknownAccount(f"account_id: no account {deposit.account_id!r}")
        if account["settlement_currency"] != deposit.currency:
            raise CurrencyMismatch(
                f"currency: account {deposit.account_id} settles in {account['settlement_currency']},"
                f" not {deposit.currency}"
            )
        try:
            # The ledger's decimals for the asset are the truth, whatever the well-known table says.
            money_amount(deposit.amount, deposit.currency, places=account["decimals"])
        except AmountError as error:
            raise InvalidAmount(str(error)) from None
        seen = await conn.fetchrow(
            "SELECT account_id, asset, amount FROM deposits WHERE deposit_id = $1", deposit.deposit_id
        )
        if seen is None:
            await ensure_system_accounts(conn, deposit.currency)
            collateral = await ensure_collateral_account(conn, deposit.account_id, deposit.currency)
            transfer_id = f"deposit:{deposit.deposit_id}"
            await post_transfer(
                conn,
                transfer_id,
                external_account(deposit.currency),
                collateral,
                deposit.currency,
                deposit.amount,
                DEPOSIT,
                None,
                deposit.deposit_id,
            )
            await conn.execute(
                "INSERT INTO deposits (deposit_id, account_id, asset, amount, transfer_id)"
                " VALUES ($1, $2, $3, $4, $5)",
                deposit.deposit_id,
                deposit.account_id,
                deposit.currency,
                deposit.amount,
                transfer_id,
            )
            already = False
        elif (seen["account_id"], seen["asset"], seen["amount"]) == (
            deposit.account_id,
            deposit.currency,
            deposit.amount,
        ):
            already = True
        else:
            # Say nothing of the other deposit: it may be another trader's.
            raise IdempotencyConflict(
                f"deposit_id: {deposit.deposit_id!r} was used before for another deposit"
            )
    return DepositBooking(
        deposit_id=deposit.deposit_id,
        account_id=deposit.account_id,
        amount=deposit.amount,
        currency=deposit.currency,
        already_credited=already,
    )


class PostgresDeposits:
    """The client API's ``DepositLedger`` over this ledger: what a deposit handler passes in."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def credit(self, deposit: Deposit) -> DepositBooking:
        return await credit_deposit(self.pool, deposit)
