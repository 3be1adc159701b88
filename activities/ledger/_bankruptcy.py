"""Settling a bankrupt account: sell its other collateral, then the insurance fund, then the uncovered loss.

Storage (SQL) around the pure arithmetic of ``_pricing``. The fund pays only
for a trader who has nothing left: collateral in other assets is sold first at
the asset's price (less the liquidation fee, capped at what is left), so a
trader with net worth never keeps it while the fund pays. What the fund cannot
cover is the uncovered loss, left for auto-deleveraging. Once per case: a
retry returns the record.
"""

from __future__ import annotations

import json
from decimal import Decimal

import asyncpg

from activities.exceptions import PositionsStillOpen
from activities.ledger import _pricing
from activities.ledger._accounts import (
    COLLATERAL_SALE,
    INSURANCE_FUND_COVER,
    LIQUIDATION_FEE,
    UNCOVERED_LOSS_BOOKED,
    Posting,
    collateral_account,
    insurance_fund_account,
    market_account,
    uncovered_loss_account,
)
from activities.ledger._cases import case_account, lock_case_account
from activities.ledger._snapshot import load_margin_snapshot
from activities.ledger._store import balance_of, ensure_collateral_account, ensure_system_accounts, post
from workflows.contract import BankruptcyRequest, BankruptcySettlement, CollateralSale, SettlementInputs
from workflows.domain.portfolio import MarginSnapshot


async def _sell_other_collateral(
    conn: asyncpg.Connection, request: BankruptcyRequest, snapshot: MarginSnapshot, settlement: str
) -> list[CollateralSale]:
    """Convert every positive non-settlement balance at its price, as transfers through the market."""
    currency = snapshot.currency
    balance = await balance_of(conn, settlement)
    # Asset prices are in one unit of account; the settlement currency has its own price in it.
    settlement_price: Decimal = await conn.fetchval("SELECT price FROM assets WHERE asset = $1", currency)
    sold = [c for c in snapshot.portfolio.collateral if c.asset != currency and c.amount > 0]
    sales = _pricing.sell_collateral(sold, settlement_price, balance, request.fee_rate, snapshot.places)
    prefix = f"bankruptcy:{request.case_id}:sell"
    case_id = request.case_id
    # Every asset leg first (in asset order), then the settlement legs: two
    # settlements lock the shared market accounts in one order, not in turns.
    for sale in sales:
        await ensure_system_accounts(conn, sale.asset)
        held = collateral_account(snapshot.account_id, sale.asset)
        leg = f"{prefix}:{sale.asset}:collateral"
        await post(
            conn,
            Posting(leg, held, market_account(sale.asset), sale.asset, sale.amount, COLLATERAL_SALE, case_id),
        )
    for sale in sales:
        if sale.proceeds > 0:
            leg = f"{prefix}:{sale.asset}:proceeds"
            market = market_account(currency)
            await post(
                conn,
                Posting(
                    leg, market, settlement, currency, sale.proceeds, COLLATERAL_SALE, case_id, sale.asset
                ),
            )
    for sale in sales:
        if sale.fee > 0:
            leg = f"{prefix}:{sale.asset}:fee"
            fund = insurance_fund_account(currency)
            reference = f"collateral sale {sale.asset}"
            await post(
                conn, Posting(leg, settlement, fund, currency, sale.fee, LIQUIDATION_FEE, case_id, reference)
            )
    return sales


async def settle(conn: asyncpg.Connection, request: BankruptcyRequest) -> BankruptcySettlement:
    """Settle the case's account once, in the caller's transaction; a repeat returns the first record."""
    account_id = await case_account(conn, request.case_id)
    currency = await lock_case_account(conn, request.case_id, account_id)
    done = await conn.fetchrow(
        "SELECT *, collateral_sold::text AS sold FROM bankruptcy_settlements WHERE case_id = $1",
        request.case_id,
    )
    if done is None:
        snapshot = await load_margin_snapshot(conn, account_id)
        if snapshot.portfolio.positions:
            raise PositionsStillOpen(
                f"case {request.case_id}: close out every position before settling bankruptcy"
            )
        await ensure_system_accounts(conn, currency)
        settlement = await ensure_collateral_account(conn, account_id, currency)
        balance_before = await balance_of(conn, settlement)
        sales = await _sell_other_collateral(conn, request, snapshot, settlement)
        fund = insurance_fund_account(currency)
        fund_before = await balance_of(conn, fund, for_update=True)
        cover = _pricing.cover_deficit(await balance_of(conn, settlement), fund_before, snapshot.places)
        # What the settlement worked from, for the case's statement (the fund's balance is locked until commit).
        inputs = SettlementInputs(
            account=snapshot,
            settlement_balance=balance_before,
            settlement_price=await conn.fetchval("SELECT price FROM assets WHERE asset = $1", currency),
            insurance_fund_before=fund_before,
            fee_rate=request.fee_rate,
        )
        if cover.covered_by_fund > 0:
            await post(
                conn,
                Posting(
                    f"bankruptcy:{request.case_id}:insurance_fund",
                    fund,
                    settlement,
                    currency,
                    cover.covered_by_fund,
                    INSURANCE_FUND_COVER,
                    request.case_id,
                ),
            )
        if cover.uncovered > 0:
            await post(
                conn,
                Posting(
                    f"bankruptcy:{request.case_id}:uncovered",
                    uncovered_loss_account(currency),
                    settlement,
                    currency,
                    cover.uncovered,
                    UNCOVERED_LOSS_BOOKED,
                    request.case_id,
                ),
            )
        done = await conn.fetchrow(
            "INSERT INTO bankruptcy_settlements (case_id, account_id, deficit, covered_by_fund,"
            " uncovered_loss, collateral_sold, inputs) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)"
            " RETURNING *, collateral_sold::text AS sold",
            request.case_id,
            account_id,
            cover.deficit,
            cover.covered_by_fund,
            cover.uncovered,
            json.dumps([sale.model_dump(mode="json") for sale in sales]),
            inputs.model_dump_json(),
        )
    return BankruptcySettlement(
        case_id=request.case_id,
        account_id=done["account_id"],
        deficit=done["deficit"],
        covered_by_insurance_fund=done["covered_by_fund"],
        uncovered_loss=done["uncovered_loss"],
        collateral_sold=json.loads(done["sold"] or "[]"),
    )
