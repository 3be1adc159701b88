"""A liquidation stage through an order venue: record the orders, send them, book what the venue reports.

The ``ledger`` venue fills a stage inside one transaction (``_stages.book_stage``).
An order gateway cannot be inside a database transaction, so here a stage is
three steps, each safe to repeat:

1. one transaction writes each order's row (``venue_orders``, keyed by its
   client order id) *before* anything is sent; a retry finds the rows still
   unbooked and resends exactly those orders, never new ones;
2. the orders go to the venue (``Venue.place``), a few tries within the
   attempt if it does not answer; the gateway answers an id it has seen with
   that order's result, so a resend cannot make a second order;
3. one transaction books every answered order (position reduced, realised PnL,
   the fee capped as for the ledger venue), marks its row booked, and records
   the stage; an order already booked is not booked again.

A rejection is final at the venue: its row is marked and the stage fails with
``OrderRejected``; the case waits and tries again, and the next try is a new
order (the attempt number moves on). A venue that does not answer fails the
stage with ``VenueUnavailable``, the order's row left unbooked, so the next try
resends the same id. Partial fills are booked as they come: the rest stays in
the account, and the workflow plans it again in its next stage. A stage the
case sends to the backstop (``StageRequest.backstop``, after the market took
nothing too often) is booked as the ``ledger`` venue books it, once no order of
it is still out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.exceptions import AccountAboveMaintenance
from activities.ledger import _pricing
from activities.ledger._accounts import LIQUIDATION_FEE, Posting, insurance_fund_account
from activities.ledger._cases import lock_case_account
from activities.ledger._snapshot import load_margin_snapshot
from activities.ledger._stages import (
    STAGE_IN_TRANSACTION,
    Checkpoint,
    _record_stage,
    _stage_done,
    book_stage,
    pnl_posting,
)
from activities.ledger._store import ensure_collateral_account, ensure_system_accounts, post
from activities.ledger.halts import refuse_untradable
from activities.venue import (
    ORDER_REJECTED,
    VENUE_REPORT_INVALID,
    VENUE_UNAVAILABLE,
    OrderReport,
    OrderStatus,
    Venue,
    VenueOrder,
    VenueUnavailable,
    client_order_id,
    report_problem,
)
from workflows.contract import StageRequest, StageResult
from workflows.domain.liquidation import Fill, LiquidationOrder
from workflows.domain.policies import DEFAULT_MAX_MARK_AGE

STAGE_ORDER_SENT: Final = "stage.order_sent"
"""The venue answered every order of the stage; nothing of its answer is booked yet."""

# Tries of one order within one attempt of the activity when the venue does not answer,
# and the pauses between them; past them the case is told and tries again later.
SEND_TRIES: Final = 3
SEND_PAUSES: Final = (0.2, 0.5)
SEND_SHARE_OF_ATTEMPT: Final = 0.8
SEND_BUDGET_OUTSIDE_ACTIVITY: Final = 30.0


@dataclass(frozen=True)
class _Sent:
    order: VenueOrder
    mark: Decimal
    report: OrderReport


async def run_stage(
    pool: asyncpg.Pool, request: StageRequest, venue: Venue, checkpoint: Checkpoint
) -> StageResult:
    """The stage through ``venue``; once per (case, stage) like the ledger venue's."""
    async with pool.acquire() as conn, conn.transaction():
        await lock_case_account(conn, request.case_id, request.plan.account_id)
        done = await _stage_done(conn, request)
        if done is not None:
            return done
        orders = await _orders_to_send(conn, request)
        if orders is None:
            # The market took nothing too often: the backstop takes the positions over, as the
            # ``ledger`` venue would, in this transaction (no order of the stage is still out).
            result = await book_stage(conn, request, checkpoint)
    if orders is None:
        return result
    sent: list[_Sent] = []
    until = asyncio.get_running_loop().time() + _send_budget()
    for order, mark in orders:
        sent.append(_Sent(order, mark, await _send(venue, order, until)))
    rejected = [s for s in sent if s.report.status == OrderStatus.REJECTED]
    if rejected:
        async with pool.acquire() as conn, conn.transaction():
            await lock_case_account(conn, request.case_id, request.plan.account_id)
            for s in rejected:
                await conn.execute(
                    "UPDATE venue_orders SET status = 'rejected', reason = $2, booked = true"
                    " WHERE client_order_id = $1 AND NOT booked",
                    s.order.client_order_id,
                    s.report.reason,
                )
        raise ApplicationError(
            "; ".join(
                f"order {s.order.client_order_id} ({s.order.side} {s.order.quantity} {s.order.instrument}"
                f" limit {s.order.limit_price}) rejected: {s.report.reason or 'no reason given'}"
                for s in rejected
            ),
            type=ORDER_REJECTED,
            non_retryable=True,
        )
    await checkpoint(STAGE_ORDER_SENT)
    async with pool.acquire() as conn, conn.transaction():
        currency = await lock_case_account(conn, request.case_id, request.plan.account_id)
        done = await _stage_done(conn, request)
        if done is not None:
            return done
        result = await _book(conn, request, currency, sent)
        await checkpoint(STAGE_IN_TRANSACTION)
    return result


async def _orders_to_send(
    conn: asyncpg.Connection, request: StageRequest
) -> list[tuple[VenueOrder, Decimal]] | None:
    """The stage's unbooked orders if a try before wrote them, else new ones from the plan (written now).

    None when the stage goes to the backstop instead: asked for, and no order of the account is out.
    Orders already written and not booked, for any case of the account, are resent whatever the
    request says (they may exist at the venue, and nothing new is sold before they are booked);
    new ones are checked first like the ``ledger`` venue's stage: breach, halts, the marks' age.
    """
    plan = request.plan
    pending = await conn.fetch(
        "SELECT * FROM venue_orders WHERE account_id = $1 AND NOT booked ORDER BY created_at, client_order_id",
        plan.account_id,
    )
    if pending:
        # Sent, perhaps, by a try that crashed or found the venue down (this case's, or one that
        # ended with it out): the same orders again, booked with this stage, before anything new.
        return [(_order_of(r), r["mark_price"]) for r in pending]
    if request.backstop:
        return None
    rows = await conn.fetch(
        "SELECT instrument, max(attempt) AS attempt FROM venue_orders WHERE case_id = $1 AND stage = $2"
        " GROUP BY instrument",
        request.case_id,
        request.stage,
    )
    attempts = {r["instrument"]: r["attempt"] + 1 for r in rows}
    before = await load_margin_snapshot(conn, plan.account_id)
    if not before.in_breach:
        raise AccountAboveMaintenance(
            f"account {plan.account_id} is above maintenance (equity {before.figures.equity},"
            f" maintenance {before.figures.maintenance_margin}): nothing sold"
        )
    max_age = request.max_mark_age if request.max_mark_age is not None else DEFAULT_MAX_MARK_AGE
    await refuse_untradable(conn, before, {o.instrument for o in plan.orders}, max_age)
    marks = {p.instrument: p for p in before.portfolio.positions}
    orders = []
    for planned in plan.orders:
        position = marks.get(planned.instrument)
        if position is None or position.quantity == 0 or (planned.side == "sell") != (position.quantity > 0):
            continue
        bankruptcy = _pricing.bankruptcy_price(position.quantity, position.mark_price, before.figures.equity)
        attempt = attempts.get(planned.instrument, 0)
        order = VenueOrder(
            client_order_id=client_order_id(request.case_id, request.stage, planned.instrument, attempt),
            instrument=planned.instrument,
            side=planned.side,
            quantity=min(planned.quantity, abs(position.quantity)),
            limit_price=_pricing.limit_price(
                planned.side, position.mark_price, plan.slippage, bankruptcy, before.places
            ),
        )
        await conn.execute(
            "INSERT INTO venue_orders (client_order_id, case_id, stage, instrument, attempt, account_id, side,"
            ' quantity, "limit", mark_price) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)',
            order.client_order_id,
            request.case_id,
            request.stage,
            order.instrument,
            attempt,
            plan.account_id,
            order.side,
            order.quantity,
            order.limit_price,
            position.mark_price,
        )
        orders.append((order, position.mark_price))
    return orders


def _order_of(row: asyncpg.Record) -> VenueOrder:
    return VenueOrder(
        client_order_id=row["client_order_id"],
        instrument=row["instrument"],
        side=row["side"],
        quantity=row["quantity"],
        limit_price=row["limit"],
    )


def _send_budget() -> float:
    """Seconds this attempt may spend on the venue: most of its start-to-close timeout, so that an
    outage reaches the case as ``VenueUnavailable`` (a hold it shows) before Temporal times the
    attempt out and starts another beside it."""
    if activity.in_activity():
        timeout = activity.info().start_to_close_timeout
        if timeout is not None:
            return timeout.total_seconds() * SEND_SHARE_OF_ATTEMPT
    return SEND_BUDGET_OUTSIDE_ACTIVITY


async def _send(venue: Venue, order: VenueOrder, until: float) -> OrderReport:
    """The venue's answer to ``order``, the same id resent while it does not answer (a few times).

    ``until`` is the event loop's time by which to give up. A report the ledger
    cannot trust (``report_problem``) fails the stage with ``VenueReportInvalid``
    before anything is booked; the case holds and shows it to staff.
    """
    loop = asyncio.get_running_loop()
    problem: Exception | None = None
    for pause in (0.0, *SEND_PAUSES)[:SEND_TRIES]:
        if loop.time() + pause >= until:
            break
        await asyncio.sleep(pause)
        try:
            report = await asyncio.wait_for(venue.place(order), until - loop.time())
        except (VenueUnavailable, TimeoutError) as error:
            problem = error
            continue
        wrong = report_problem(order, report)
        if wrong is not None:
            raise ApplicationError(
                f"order {order.client_order_id} ({order.side} {order.quantity} {order.instrument}"
                f" limit {order.limit_price}): the venue reports {wrong}; nothing booked",
                type=VENUE_REPORT_INVALID,
                non_retryable=True,
            )
        return report
    raise ApplicationError(
        f"order {order.client_order_id} ({order.side} {order.quantity} {order.instrument}):"
        f" no answer after {SEND_TRIES} tries: {problem or 'no time left in the attempt'}",
        type=VENUE_UNAVAILABLE,
        non_retryable=True,
    )


async def _book(
    conn: asyncpg.Connection, request: StageRequest, currency: str, sent: list[_Sent]
) -> StageResult:
    """Book every answered order once (its row's ``booked`` flag), then record the stage."""
    plan = request.plan
    before = await load_margin_snapshot(conn, plan.account_id)
    places = before.places
    collateral = await ensure_collateral_account(conn, plan.account_id, currency)
    await ensure_system_accounts(conn, currency)
    fills: list[Fill] = []
    fee_total = Decimal(0)
    for s in sent:
        order, report = s.order, s.report
        booked = await conn.fetchval(
            "SELECT booked FROM venue_orders WHERE client_order_id = $1 FOR UPDATE", order.client_order_id
        )
        if booked:
            continue
        fill = None
        position = await conn.fetchrow(
            "SELECT quantity, entry_price FROM positions WHERE account_id = $1 AND instrument = $2 FOR UPDATE",
            plan.account_id,
            order.instrument,
        )
        if report.filled_quantity > 0 and (
            position is None
            or report.average_price is None
            or (order.side == "sell") != (position["quantity"] > 0)
            or report.filled_quantity > abs(position["quantity"])
        ):
            # The venue sold what the ledger does not hold: they disagree, and only people can say why.
            held = None if position is None else position["quantity"]
            raise ApplicationError(
                f"order {order.client_order_id}: the venue reports {order.side} {report.filled_quantity}"
                f" {order.instrument} filled, the ledger holds {held}; nothing booked",
                type=VENUE_REPORT_INVALID,
                non_retryable=True,
            )
        if position is not None and report.average_price is not None:
            fill = _pricing.venue_fill(
                LiquidationOrder(instrument=order.instrument, quantity=order.quantity, side=order.side),
                position["quantity"],
                position["entry_price"],
                s.mark,
                report.filled_quantity,
                report.average_price,
                places,
            )
        fee = Decimal(0)
        if fill is not None:
            prefix = f"venue:{order.client_order_id}"
            posting = pnl_posting(prefix, fill, collateral, currency, request.case_id)
            if posting is not None:
                await post(conn, posting)
            await conn.execute(
                "UPDATE positions SET quantity = quantity + $3 WHERE account_id = $1 AND instrument = $2",
                plan.account_id,
                order.instrument,
                _pricing.position_change(fill),
            )
            after_sale = await load_margin_snapshot(conn, plan.account_id)
            fee = _pricing.stage_fee(fill.notional, plan.fee_rate, after_sale.figures.equity, places)
            if fee > 0:
                await post(
                    conn,
                    Posting(
                        f"{prefix}:fee",
                        collateral,
                        insurance_fund_account(currency),
                        currency,
                        fee,
                        LIQUIDATION_FEE,
                        request.case_id,
                        f"stage {request.stage}",
                    ),
                )
            fills.append(fill)
            fee_total += fee
        await conn.execute(
            "UPDATE venue_orders SET status = $2, filled_quantity = $3, average_price = $4, fee = $5,"
            " reason = $6, booked = true WHERE client_order_id = $1",
            order.client_order_id,
            report.status.value,
            fill.quantity if fill is not None else Decimal(0),
            report.average_price if fill is not None else None,
            fee,
            report.reason,
        )
    result = StageResult(
        case_id=request.case_id,
        stage=request.stage,
        fills=fills,
        sold_notional=_pricing.sold_notional(fills),
        fee=fee_total,
        snapshot_after=await load_margin_snapshot(conn, plan.account_id),
    )
    # The figures the stage sold at, when the account is still in breach as it books (a deposit
    # may have landed while the orders were out; what the venue filled is booked all the same).
    figures = before.figures
    in_breach = before.in_breach
    await _record_stage(
        conn,
        request,
        result,
        figures.equity if in_breach else None,  # type: ignore[arg-type]
        figures.maintenance_margin if in_breach else None,  # type: ignore[arg-type]
        before,
    )
    return result
