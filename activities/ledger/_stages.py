"""Booking a liquidation stage: lock, check the breach, fill each order, charge the fee, record it all.

Storage (SQL) around the pure arithmetic of ``_pricing``: this module decides
what is read and locked, in which order, and which postings are made; the
prices, PnL and fee come from ``_pricing``. One transaction per (case, stage):
a retry finds the stage's row and returns its result, and another plan under
the same stage number is refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Final

import asyncpg
from temporalio.exceptions import ApplicationError

from activities.exceptions import AccountAboveMaintenance, IdempotencyConflict
from activities.ledger import _pricing
from activities.ledger._accounts import (
    LIQUIDATION_FEE,
    REALISED_PNL,
    Posting,
    insurance_fund_account,
    market_account,
)
from activities.ledger._cases import lock_case_account
from activities.ledger._snapshot import Prices, load_margin_snapshot
from activities.ledger._store import ensure_collateral_account, ensure_system_accounts, post
from activities.ledger.halts import refuse_untradable
from workflows.contract import VENUE_UNAVAILABLE, StageRequest, StageResult
from workflows.domain.liquidation import Fill, LiquidationPlan
from workflows.domain.policies import DEFAULT_MAX_MARK_AGE
from workflows.domain.portfolio import MarginSnapshot

Checkpoint = Callable[[str], Awaitable[None]]
"""Called with a checkpoint's name as a stage passes it: the seam where a fault test acts or freezes."""

# Where a stage calls its checkpoint.
STAGE_CHECKED: Final = "stage.checked"
"""The breach is confirmed and its prices pinned; nothing is written yet."""
STAGE_IN_TRANSACTION: Final = "stage.in_transaction"
"""Everything is written, the transaction is not yet committed."""
STAGE_AFTER_COMMIT: Final = "stage.after_commit"
"""Committed; the activity has not yet returned its result to Temporal."""


async def no_checkpoint(name: str) -> None:
    """Production's checkpoint: nothing happens at any of them."""


def pnl_posting(prefix: str, fill: Fill, collateral: str, currency: str, case_id: str) -> Posting | None:
    """A gain comes from the market to the trader's collateral, a loss goes the other way."""
    pnl = fill.realised_pnl
    if pnl == 0:
        return None
    market = market_account(currency)
    debit, credit = (market, collateral) if pnl > 0 else (collateral, market)
    amount = pnl.copy_abs()
    return Posting(
        f"{prefix}:{fill.instrument}:pnl",
        debit,
        credit,
        currency,
        amount,
        REALISED_PNL,
        case_id,
        fill.instrument,
    )


async def _stage_done(conn: asyncpg.Connection, request: StageRequest) -> StageResult | None:
    """The stage's result if it ran before with this plan; another plan under its number is a conflict."""
    done = await conn.fetchrow(
        "SELECT plan::text, result::text FROM liquidation_stages WHERE case_id = $1 AND stage = $2",
        request.case_id,
        request.stage,
    )
    if done is None:
        return None
    if LiquidationPlan.model_validate_json(done["plan"]) != request.plan:
        raise IdempotencyConflict(
            f"stage {request.stage} of case {request.case_id} ran before with another plan"
        )
    return StageResult.model_validate_json(done["result"])


async def refuse_with_orders_out(conn: asyncpg.Connection, account_id: str) -> None:
    """Sell nothing at the mark while an order of the account is out at a venue, unbooked.

    Such an order may have filled: selling the position here too would sell it
    twice. Only the ``http`` venue books it (it resends the same order id); a
    worker on the ``ledger`` venue holds the case until one does.
    """
    out = await conn.fetch(
        "SELECT client_order_id, case_id FROM venue_orders WHERE account_id = $1 AND NOT booked", account_id
    )
    if out:
        orders = ", ".join(f"{r['client_order_id']} (case {r['case_id']})" for r in out)
        raise ApplicationError(
            f"orders of account {account_id} are out at the venue and not booked: {orders};"
            " nothing sold until the http venue books them",
            type=VENUE_UNAVAILABLE,
            non_retryable=True,
        )


async def book_stage(conn: asyncpg.Connection, request: StageRequest, checkpoint: Checkpoint) -> StageResult:
    """Sell what the plan says at mark less slippage, book PnL and fee; once per (case, stage).

    Runs in the caller's transaction; the account stays locked until it commits.
    """
    plan = request.plan
    currency = await lock_case_account(conn, request.case_id, plan.account_id)
    done = await _stage_done(conn, request)
    if done is not None:
        return done
    await refuse_with_orders_out(conn, plan.account_id)

    before = await load_margin_snapshot(conn, plan.account_id)
    if not before.in_breach:
        raise AccountAboveMaintenance(
            f"account {plan.account_id} is above maintenance (equity {before.figures.equity},"
            f" maintenance {before.figures.maintenance_margin}): nothing sold"
        )
    # On the read the stage fills at: a halted instrument is not sold, a stale mark sells nothing.
    max_age = request.max_mark_age if request.max_mark_age is not None else DEFAULT_MAX_MARK_AGE
    await refuse_untradable(conn, before, {o.instrument for o in plan.orders}, max_age)
    await checkpoint(STAGE_CHECKED)
    places = before.places
    # The prices the breach was checked at are the prices the stage fills at
    # and caps its fee at: a mark written meanwhile (marks move without the
    # account lock) cannot make it sell from an account that is healthy at the
    # price it fills at.
    prices = Prices.of(before)
    collateral = await ensure_collateral_account(conn, plan.account_id, currency)
    await ensure_system_accounts(conn, currency)
    prefix = f"liquidation:{request.case_id}:{request.stage}"
    fills: list[Fill] = []
    for order in plan.orders:
        position = await conn.fetchrow(
            "SELECT quantity, entry_price FROM positions WHERE account_id = $1 AND instrument = $2 FOR UPDATE",
            plan.account_id,
            order.instrument,
        )
        if position is None or order.instrument not in prices.marks:
            continue
        fill = _pricing.fill_order(
            order,
            position["quantity"],
            position["entry_price"],
            prices.marks[order.instrument],
            plan.slippage,
            places,
        )
        if fill is None:
            continue
        posting = pnl_posting(prefix, fill, collateral, currency, request.case_id)
        if posting is not None:
            await post(conn, posting)
        await conn.execute(
            "UPDATE positions SET quantity = quantity + $3 WHERE account_id = $1 AND instrument = $2",
            plan.account_id,
            order.instrument,
            _pricing.position_change(fill),
        )
        fills.append(fill)
    sold = _pricing.sold_notional(fills)
    after_sale = await load_margin_snapshot(conn, plan.account_id, prices)
    fee = _pricing.stage_fee(sold, plan.fee_rate, after_sale.figures.equity, places)
    if fee > 0:
        fund = insurance_fund_account(currency)
        await post(
            conn,
            Posting(
                f"{prefix}:fee",
                collateral,
                fund,
                currency,
                fee,
                LIQUIDATION_FEE,
                request.case_id,
                f"stage {request.stage}",
            ),
        )
    result = StageResult(
        case_id=request.case_id,
        stage=request.stage,
        fills=fills,
        sold_notional=sold,
        fee=fee,
        snapshot_after=await load_margin_snapshot(conn, plan.account_id, prices),
    )
    await _record_stage(
        conn, request, result, before.figures.equity, before.figures.maintenance_margin, before
    )
    await checkpoint(STAGE_IN_TRANSACTION)
    return result


async def _record_stage(
    conn: asyncpg.Connection,
    request: StageRequest,
    result: StageResult,
    equity: Decimal,
    maintenance: Decimal,
    before: MarginSnapshot,
) -> None:
    """The stage's row (with the account it sold from) and one row per fill with its part of the fee."""
    plan = request.plan
    await conn.execute(
        "INSERT INTO liquidation_stages (case_id, stage, account_id, plan, result,"
        " equity_before, maintenance_before, snapshot_before)"
        " VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8::jsonb)",
        request.case_id,
        request.stage,
        plan.account_id,
        plan.model_dump_json(),
        result.model_dump_json(),
        equity,
        maintenance,
        before.model_dump_json(),
    )
    await conn.executemany(
        "INSERT INTO liquidation_fills (case_id, stage, instrument, account_id, side, quantity,"
        " mark_price, fill_price, notional, realised_pnl, fee)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        [
            (
                request.case_id,
                request.stage,
                f.instrument,
                plan.account_id,
                f.side,
                f.quantity,
                f.mark_price,
                f.fill_price,
                f.notional,
                f.realised_pnl,
                _pricing.fill_fee(result.fee, f, result.sold_notional),
            )
            for f in result.fills
        ],
    )
