"""The ledger activities: every read and write of money a case makes.

``LedgerActivities`` owns the asyncpg pool for the worker's lifetime (the
pattern of the money-transfer sample's ``BankingActivities``). Each write is one
transaction keyed by the case id and stage, or by the deposit id, so a retry
after a crash finds its own rows and returns the first result without writing
twice. Accounts are locked (``FOR NO KEY UPDATE``) for the length of each write,
which serialises deposits, stages and settlements on the same account.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_FLOOR, Decimal, localcontext
from typing import Any, ParamSpec, TypeVar

import asyncpg
from temporalio import activity

from activities import failpoints
from activities.exceptions import (
    AccountAboveMaintenance,
    CurrencyMismatch,
    IdempotencyConflict,
    InvalidAmount,
    LedgerError,
    PolicyRefused,
    PositionsStillOpen,
    UnknownAccount,
    UnknownCase,
    non_retryable,
)
from workflows import contract
from workflows.contract import (
    BankruptcyRequest,
    BankruptcySettlement,
    Breach,
    BreachScan,
    CaseClosing,
    CaseEvent,
    CaseOpening,
    CaseState,
    CollateralSale,
    Deposit,
    DepositBooking,
    StageRequest,
    StageResult,
)
from workflows.domain import margin
from workflows.domain.liquidation import Fill, LiquidationPlan
from workflows.domain.money import AmountError, money_amount
from workflows.domain.policies import STANDARD_BOOK, PolicyBook, PolicyError
from workflows.domain.portfolio import MarginSnapshot, Portfolio

ZERO = Decimal(0)


def collateral_account(account_id: str, asset: str) -> str:
    return f"collateral:{account_id}:{asset}"


def system_account(kind: str, asset: str) -> str:
    """The insurance fund, the market, the outside world, uncovered loss: one per asset."""
    return f"{kind}:{asset}"


async def ensure_system_accounts(conn: asyncpg.Connection, asset: str) -> None:
    await conn.executemany(
        "INSERT INTO ledger_accounts (ledger_account, kind, asset) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING",
        [
            (system_account(kind, asset), kind, asset)
            for kind in ("insurance_fund", "market", "external", "uncovered_loss")
        ],
    )


async def ensure_collateral_account(conn: asyncpg.Connection, account_id: str, asset: str) -> str:
    name = collateral_account(account_id, asset)
    await conn.execute(
        "INSERT INTO ledger_accounts (ledger_account, kind, asset, account_id)"
        " VALUES ($1, 'collateral', $2, $3) ON CONFLICT DO NOTHING",
        name,
        asset,
        account_id,
    )
    return name


async def post_transfer(
    conn: asyncpg.Connection,
    transfer_id: str,
    debit: str,
    credit: str,
    asset: str,
    amount: Decimal,
    kind: str,
    case_id: str | None = None,
    reference: str | None = None,
) -> bool:
    """Post one double-entry transfer; True if new, False if this exact one was posted before."""
    if not (amount.is_finite() and amount > 0):
        raise InvalidAmount(f"transfer {transfer_id}: amount must be positive and finite, got {amount}")
    outcome = await conn.fetchval(
        "SELECT post_transfer($1, $2, $3, $4, $5, $6, $7, $8)",
        transfer_id,
        debit,
        credit,
        asset,
        amount,
        kind,
        case_id,
        reference,
    )
    if outcome == "conflict":
        raise IdempotencyConflict(f"transfer {transfer_id} was posted before with a different body")
    return bool(outcome == "posted")


_SNAPSHOT_SQL = """
SELECT a.account_id, a.settlement_currency, a.status, now() AS as_of,
  (SELECT decimals FROM assets WHERE asset = a.settlement_currency) AS currency_decimals,
  coalesce((
    SELECT json_agg(json_build_object(
             'asset', la.asset, 'amount', la.balance::text,
             'price', s.price::text, 'haircut', s.haircut::text) ORDER BY la.asset)
      FROM ledger_accounts la JOIN assets s ON s.asset = la.asset
     WHERE la.kind = 'collateral' AND la.account_id = a.account_id), '[]')::text AS collateral,
  coalesce((
    SELECT json_agg(json_build_object(
             'instrument', p.instrument, 'quantity', p.quantity::text,
             'entry_price', p.entry_price::text, 'mark_price', m.price::text,
             'tiers', (SELECT json_agg(json_build_object(
                                'notional_floor', t.notional_floor::text,
                                'maintenance_rate', t.maintenance_rate::text,
                                'initial_rate', t.initial_rate::text) ORDER BY t.notional_floor)
                         FROM instrument_tiers t WHERE t.instrument = p.instrument))
           ORDER BY p.instrument)
      FROM positions p JOIN mark_prices m ON m.instrument = p.instrument
     WHERE p.account_id = a.account_id AND p.quantity <> 0), '[]')::text AS positions
  FROM accounts a
 WHERE a.account_id = $1
"""


@dataclass(frozen=True)
class Prices:
    """Marks and collateral prices pinned from one read, for work that must not see them move."""

    marks: dict[str, Decimal]
    assets: dict[str, Decimal]

    @classmethod
    def of(cls, snapshot: MarginSnapshot) -> Prices:
        portfolio = snapshot.portfolio
        return cls(
            marks={p.instrument: p.mark_price for p in portfolio.positions},
            assets={c.asset: c.price for c in portfolio.collateral},
        )

    def pin(self, collateral: list[dict[str, Any]], positions: list[dict[str, Any]]) -> None:
        for item in collateral:
            if item["asset"] in self.assets:
                item["price"] = str(self.assets[item["asset"]])
        for item in positions:
            if item["instrument"] in self.marks:
                item["mark_price"] = str(self.marks[item["instrument"]])


async def read_snapshot(
    conn: asyncpg.Connection, account_id: str, prices: Prices | None = None
) -> MarginSnapshot:
    """The account at current marks (or at ``prices`` where given), in one round trip."""
    row = await conn.fetchrow(_SNAPSHOT_SQL, account_id)
    if row is None:
        raise UnknownAccount(f"account_id: no account {account_id!r}")
    collateral, positions = json.loads(row["collateral"]), json.loads(row["positions"])
    if prices is not None:
        prices.pin(collateral, positions)
    portfolio = Portfolio.model_validate({"collateral": collateral, "positions": positions})
    as_of: datetime = row["as_of"]
    return MarginSnapshot(
        account_id=row["account_id"],
        currency=row["settlement_currency"],
        status=row["status"],
        portfolio=portfolio,
        figures=margin.assess(portfolio),
        as_of=as_of,
        currency_decimals=row["currency_decimals"],
    )


# One statement over all accounts: tier bands joined by notional range, collateral
# and positions aggregated per account, filtered to equity below maintenance.
_SCAN_SQL = """
WITH exposure AS (
    SELECT p.account_id,
           sum(p.quantity * (m.price - p.entry_price)) AS upnl,
           sum(abs(p.quantity) * m.price * b.maintenance_rate - b.maintenance_cum) AS mm
      FROM positions p
      JOIN mark_prices m ON m.instrument = p.instrument
      JOIN instrument_tier_bands b
        ON b.instrument = p.instrument
       AND abs(p.quantity) * m.price >= b.notional_floor
       AND (b.next_floor IS NULL OR abs(p.quantity) * m.price < b.next_floor)
     WHERE p.quantity <> 0
     GROUP BY p.account_id
), collateral AS (
    SELECT la.account_id,
           sum(CASE WHEN la.balance > 0 THEN la.balance * s.price * (1 - s.haircut)
                    ELSE la.balance * s.price END) AS value
      FROM ledger_accounts la JOIN assets s ON s.asset = la.asset
     WHERE la.kind = 'collateral'
     GROUP BY la.account_id
)
SELECT e.account_id, a.settlement_currency AS currency,
       coalesce(c.value, 0) + e.upnl AS equity, e.mm AS maintenance_margin,
       e.mm - (coalesce(c.value, 0) + e.upnl) AS shortfall,
       EXISTS (SELECT 1 FROM waivers w
                WHERE w.account_id = e.account_id AND w.ended_at IS NULL
                  AND (w.until IS NULL OR w.until > now())) AS waived
  FROM exposure e
  JOIN accounts a ON a.account_id = e.account_id
  LEFT JOIN collateral c ON c.account_id = e.account_id
 WHERE coalesce(c.value, 0) + e.upnl < e.mm
 ORDER BY shortfall DESC, e.account_id
"""


def _quantize(amount: Decimal, places: int, rounding: str) -> Decimal:
    """To the settlement currency's unit, as the ledger's ``assets.decimals`` defines it."""
    with localcontext() as ctx:
        ctx.prec = margin.PRECISION
        return amount.quantize(Decimal(1).scaleb(-places), rounding=rounding)


async def _sell_other_collateral(
    conn: asyncpg.Connection,
    request: BankruptcyRequest,
    snapshot: MarginSnapshot,
    settlement: str,
    currency: str,
    places: int,
) -> list[CollateralSale]:
    """Convert every positive non-settlement balance at its price, as transfers through the market.

    Proceeds round down and the fee is capped at what the trader has left after
    the whole sale, so neither the fund nor the trader gains from rounding, and
    the fund never charges a fee it would then pay for itself.
    """
    balance: Decimal = await conn.fetchval(
        "SELECT balance FROM ledger_accounts WHERE ledger_account = $1", settlement
    )
    # Asset prices are in one unit of account; the settlement currency has its own price in it.
    settlement_price: Decimal = await conn.fetchval("SELECT price FROM assets WHERE asset = $1", currency)
    sold = [c for c in snapshot.portfolio.collateral if c.asset != currency and c.amount > 0]
    prefix = f"bankruptcy:{request.case_id}:sell"
    # Every asset leg first (in asset order), then the settlement legs: two
    # settlements lock the shared market accounts in one order, not in turns.
    for item in sold:
        await ensure_system_accounts(conn, item.asset)
        await post_transfer(
            conn,
            f"{prefix}:{item.asset}:collateral",
            collateral_account(snapshot.account_id, item.asset),
            system_account("market", item.asset),
            item.asset,
            item.amount,
            "collateral_sale",
            request.case_id,
        )
    proceeds = [_quantize(c.amount * c.price / settlement_price, places, ROUND_DOWN) for c in sold]
    for item, amount in zip(sold, proceeds, strict=True):
        if amount > 0:
            await post_transfer(
                conn,
                f"{prefix}:{item.asset}:proceeds",
                system_account("market", currency),
                settlement,
                currency,
                amount,
                "collateral_sale",
                request.case_id,
                item.asset,
            )
    # One fee on the whole sale, capped at what is left after it, whatever the order of the assets;
    # shared out by proceeds (down, the rest on the last) so each sale records its part.
    total = sum(proceeds, ZERO)
    fee = _quantize(min(total * request.fee_rate, max(ZERO, balance + total)), places, ROUND_DOWN)
    shares = [_quantize(fee * p / total, places, ROUND_DOWN) if total else ZERO for p in proceeds]
    if shares:
        shares[-1] = fee - sum(shares[:-1], ZERO)
    sales: list[CollateralSale] = []
    for item, amount, share in zip(sold, proceeds, shares, strict=True):
        if share > 0:
            await post_transfer(
                conn,
                f"{prefix}:{item.asset}:fee",
                settlement,
                system_account("insurance_fund", currency),
                currency,
                share,
                "liquidation_fee",
                request.case_id,
                f"collateral sale {item.asset}",
            )
        sales.append(
            CollateralSale(asset=item.asset, amount=item.amount, price=item.price, proceeds=amount, fee=share)
        )
    return sales


P = ParamSpec("P")
R = TypeVar("R")


def exact(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Run money arithmetic at the risk math's precision, so a product is not rounded (half-even,
    at 28 digits) before the rounding that is meant to favour neither side."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with localcontext() as ctx:
            ctx.prec = margin.PRECISION
            return await fn(*args, **kwargs)

    return wrapper


class LedgerActivities:
    """Ledger reads and writes for the case workflow; owns the asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, policies: PolicyBook = STANDARD_BOOK) -> None:
        self.pool = pool
        # The operator's book: every case opened through this worker is held to it.
        self.policies = policies

    async def snapshot(self, account_id: str) -> MarginSnapshot:
        async with self.pool.acquire() as conn:
            return await read_snapshot(conn, account_id)

    @activity.defn(name=contract.ACTIVITY_READ_ACCOUNT)
    @non_retryable
    async def load_margin_snapshot(self, account_id: str) -> MarginSnapshot:
        """Re-read the account: the ledger, not the message, decides whether a case is cured."""
        return await self.snapshot(account_id)

    @activity.defn(name=contract.ACTIVITY_OPEN_CASE)
    @non_retryable
    async def open_case(self, opening: CaseOpening) -> MarginSnapshot:
        """Record the case (once) and return the account's snapshot, in one transaction.

        A call id that already closed a case cannot open another: its stages and
        fills are keyed by the case id, so reusing it would replay old results.
        """
        if opening.policy is not None:
            try:
                self.policies.check(opening.policy_name, opening.policy)
            except PolicyError as error:
                raise PolicyRefused(str(error)) from None
        async with self.pool.acquire() as conn, conn.transaction():
            snapshot = await read_snapshot(conn, opening.account_id)
            await conn.execute(
                "INSERT INTO margin_call_cases (case_id, account_id, call_id, state, opened_at)"
                " VALUES ($1, $2, $3, 'OPEN', $4) ON CONFLICT (case_id) DO NOTHING",
                opening.case_id,
                opening.account_id,
                opening.call_id,
                opening.opened_at,
            )
            existing = await conn.fetchrow(
                "SELECT account_id, closed_at FROM margin_call_cases WHERE case_id = $1", opening.case_id
            )
            if existing["account_id"] != opening.account_id or existing["closed_at"] is not None:
                raise IdempotencyConflict(
                    f"call_id: case {opening.case_id} already closed; open a new case with a new call id"
                )
            return snapshot

    @activity.defn(name=contract.ACTIVITY_LIQUIDATION_STAGE)
    @non_retryable
    @exact
    async def execute_liquidation_stage(self, request: StageRequest) -> StageResult:
        """Sell what the plan says at mark less slippage, book PnL and fee; once per (case, stage)."""
        plan = request.plan
        async with self.pool.acquire() as conn, conn.transaction():
            account = await self._lock_case_account(conn, request.case_id, plan.account_id)
            currency = account["settlement_currency"]
            done = await conn.fetchrow(
                "SELECT plan::text, result::text FROM liquidation_stages WHERE case_id = $1 AND stage = $2",
                request.case_id,
                request.stage,
            )
            if done is not None:
                if LiquidationPlan.model_validate_json(done["plan"]) != plan:
                    raise IdempotencyConflict(
                        f"stage {request.stage} of case {request.case_id} ran before with another plan"
                    )
                return StageResult.model_validate_json(done["result"])

            before = await read_snapshot(conn, plan.account_id)
            if not before.in_breach:
                raise AccountAboveMaintenance(
                    f"account {plan.account_id} is above maintenance (equity {before.figures.equity},"
                    f" maintenance {before.figures.maintenance_margin}): nothing sold"
                )
            await failpoints.reach("stage.checked")
            places = before.places
            # The prices the breach was checked at are the prices the stage fills
            # at and caps its fee at: a mark written meanwhile (marks move without
            # the account lock) cannot make it sell from an account that is
            # healthy at the price it fills at.
            prices = Prices.of(before)
            marks = prices.marks
            collateral = await ensure_collateral_account(conn, plan.account_id, currency)
            await ensure_system_accounts(conn, currency)
            prefix = f"liquidation:{request.case_id}:{request.stage}"
            fills: list[Fill] = []
            for order in plan.orders:
                position = await conn.fetchrow(
                    "SELECT quantity, entry_price FROM positions"
                    " WHERE account_id = $1 AND instrument = $2 FOR UPDATE",
                    plan.account_id,
                    order.instrument,
                )
                if position is None or order.instrument not in marks:
                    continue
                held: Decimal = position["quantity"]
                sign = 1 if held > 0 else -1
                # Only ever reduce: a plan for a side the account no longer holds sells nothing.
                if held == 0 or (order.side == "sell") != (held > 0):
                    continue
                quantity = min(order.quantity, abs(held))
                mark = marks[order.instrument]
                fill_price = mark * (1 - sign * plan.slippage)
                # Rounded against the trader (floor), so rounding never lends them money.
                pnl = _quantize(quantity * sign * (fill_price - position["entry_price"]), places, ROUND_FLOOR)
                if pnl > 0:
                    await post_transfer(
                        conn,
                        f"{prefix}:{order.instrument}:pnl",
                        system_account("market", currency),
                        collateral,
                        currency,
                        pnl,
                        "realised_pnl",
                        request.case_id,
                        order.instrument,
                    )
                elif pnl < 0:
                    await post_transfer(
                        conn,
                        f"{prefix}:{order.instrument}:pnl",
                        collateral,
                        system_account("market", currency),
                        currency,
                        -pnl,
                        "realised_pnl",
                        request.case_id,
                        order.instrument,
                    )
                await conn.execute(
                    "UPDATE positions SET quantity = quantity - $3 WHERE account_id = $1 AND instrument = $2",
                    plan.account_id,
                    order.instrument,
                    sign * quantity,
                )
                fills.append(
                    Fill(
                        instrument=order.instrument,
                        side=order.side,
                        quantity=quantity,
                        mark_price=mark,
                        fill_price=fill_price,
                        notional=quantity * fill_price,
                        realised_pnl=pnl,
                    )
                )
            sold = sum((f.notional for f in fills), ZERO)
            after_sale = await read_snapshot(conn, plan.account_id, prices)
            # The fee is what the rate asks, capped at what the trader has left.
            leftover = max(ZERO, after_sale.figures.equity)
            fee = _quantize(min(sold * plan.fee_rate, leftover), places, ROUND_DOWN)
            if fee > 0:
                await post_transfer(
                    conn,
                    f"{prefix}:fee",
                    collateral,
                    system_account("insurance_fund", currency),
                    currency,
                    fee,
                    "liquidation_fee",
                    request.case_id,
                    f"stage {request.stage}",
                )
            result = StageResult(
                case_id=request.case_id,
                stage=request.stage,
                fills=fills,
                sold_notional=sold,
                fee=fee,
                snapshot_after=await read_snapshot(conn, plan.account_id, prices),
            )
            await conn.execute(
                "INSERT INTO liquidation_stages (case_id, stage, account_id, plan, result,"
                " equity_before, maintenance_before) VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7)",
                request.case_id,
                request.stage,
                plan.account_id,
                plan.model_dump_json(),
                result.model_dump_json(),
                before.figures.equity,
                before.figures.maintenance_margin,
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
                        fee * f.notional / sold if sold else ZERO,
                    )
                    for f in fills
                ],
            )
            await failpoints.reach("stage.in_transaction")
        await failpoints.reach("stage.after_commit")
        return result

    @activity.defn(name=contract.ACTIVITY_SETTLE_BANKRUPTCY)
    @non_retryable
    @exact
    async def settle_bankruptcy(self, request: BankruptcyRequest) -> BankruptcySettlement:
        """Sell what other collateral is left, then cover what is still negative from the insurance fund.

        The fund pays only for a trader who has nothing left: collateral in
        other assets is sold first at the asset's price (less the liquidation
        fee, capped at what is left), so a trader with net worth never keeps it
        while the fund pays. What the fund cannot cover is the uncovered loss,
        left for auto-deleveraging. Once per case: a retry returns the record.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            case = await conn.fetchrow(
                "SELECT account_id FROM margin_call_cases WHERE case_id = $1", request.case_id
            )
            if case is None:
                raise UnknownCase(f"case_id: no case {request.case_id!r}")
            account_id: str = case["account_id"]
            account = await self._lock_case_account(conn, request.case_id, account_id)
            currency = account["settlement_currency"]
            done = await conn.fetchrow(
                "SELECT *, collateral_sold::text AS sold FROM bankruptcy_settlements WHERE case_id = $1",
                request.case_id,
            )
            if done is None:
                snapshot = await read_snapshot(conn, account_id)
                if snapshot.portfolio.positions:
                    raise PositionsStillOpen(
                        f"case {request.case_id}: close out every position before settling bankruptcy"
                    )
                await ensure_system_accounts(conn, currency)
                settlement = await ensure_collateral_account(conn, account_id, currency)
                sales = await _sell_other_collateral(
                    conn, request, snapshot, settlement, currency, snapshot.places
                )
                balance: Decimal = await conn.fetchval(
                    "SELECT balance FROM ledger_accounts WHERE ledger_account = $1", settlement
                )
                # Down, so the fund never pays more than the loss; dust below the
                # currency's unit stays on the trader's account, in the books.
                deficit = _quantize(max(ZERO, -balance), snapshot.places, ROUND_DOWN)
                fund_name = system_account("insurance_fund", currency)
                fund: Decimal = await conn.fetchval(
                    "SELECT balance FROM ledger_accounts WHERE ledger_account = $1 FOR UPDATE", fund_name
                )
                covered = min(deficit, max(ZERO, fund))
                uncovered = deficit - covered
                if covered > 0:
                    await post_transfer(
                        conn,
                        f"bankruptcy:{request.case_id}:insurance_fund",
                        fund_name,
                        settlement,
                        currency,
                        covered,
                        "insurance_fund_cover",
                        request.case_id,
                    )
                if uncovered > 0:
                    await post_transfer(
                        conn,
                        f"bankruptcy:{request.case_id}:uncovered",
                        system_account("uncovered_loss", currency),
                        settlement,
                        currency,
                        uncovered,
                        "uncovered_loss",
                        request.case_id,
                    )
                done = await conn.fetchrow(
                    "INSERT INTO bankruptcy_settlements (case_id, account_id, deficit, covered_by_fund,"
                    " uncovered_loss, collateral_sold) VALUES ($1, $2, $3, $4, $5, $6::jsonb)"
                    " RETURNING *, collateral_sold::text AS sold",
                    request.case_id,
                    account_id,
                    deficit,
                    covered,
                    uncovered,
                    json.dumps([sale.model_dump(mode="json") for sale in sales]),
                )
            return BankruptcySettlement(
                case_id=request.case_id,
                account_id=done["account_id"],
                deficit=done["deficit"],
                covered_by_insurance_fund=done["covered_by_fund"],
                uncovered_loss=done["uncovered_loss"],
                collateral_sold=json.loads(done["sold"] or "[]"),
            )

    async def scan_breaches(self, scan: BreachScan) -> list[Breach]:
        """Every account with equity below maintenance, worst shortfall first, in one statement.

        Read through a cursor ``scan.limit`` rows at a time, never cut at a
        limit: accounts whose cases are already open must not crowd out one
        that has none.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            return [Breach.model_validate(dict(r)) async for r in conn.cursor(_SCAN_SQL, prefetch=scan.limit)]

    async def clock(self) -> datetime:
        """The ledger's time, so that what a scan saw is compared with rows on one clock."""
        async with self.pool.acquire() as conn:
            now: datetime = await conn.fetchval("SELECT now()")
        return now

    async def end_waivers(self, breached: set[str], scanned_at: datetime) -> list[str]:
        """End waivers past their time, and open-ended ones whose account the scan found healthy.

        A timed waiver holds until its time whatever the account does; only a
        waiver that existed before the scan began can be ended by what it saw.
        """
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "UPDATE waivers SET ended_at = now(),"
                " ended_why = CASE WHEN until <= now() THEN 'expired' ELSE 'account recovered' END"
                " WHERE ended_at IS NULL AND (until <= now()"
                "   OR (until IS NULL AND created_at < $2 AND NOT (account_id = ANY($1::text[]))))"
                " RETURNING account_id",
                sorted(breached),
                scanned_at,
            )
        return [r["account_id"] for r in rows]

    @activity.defn(name=contract.ACTIVITY_CLOSE_CASE)
    async def close_case(self, closing: CaseClosing) -> None:
        """Write the case's outcome to its record; rewriting the same outcome is harmless."""
        status = closing.status
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE margin_call_cases SET state = $2, closed_at = $3, outcome = $4::jsonb,"
                " updated_at = now() WHERE case_id = $1",
                status.case_id,
                status.state.value,
                status.closed_at,
                status.model_dump_json(),
            )
            if closing.waiver is not None and status.state == CaseState.WAIVED:
                # The waive's scope, for the risk monitor: recorded only when the case did close WAIVED.
                await conn.execute(
                    "INSERT INTO waivers (case_id, account_id, until, operator, reason)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (case_id) DO NOTHING",
                    status.case_id,
                    status.account_id,
                    closing.waiver.until,
                    closing.waiver.operator,
                    closing.waiver.reason,
                )
            # The notices the case still owes go to the outbox in the same
            # transaction: the case completes now, the dispatcher delivers them.
            # From now at the earliest: a close recorded late (a worker was down) still gets the whole window.
            deliver_by = (
                max(status.closed_at or datetime.now(UTC), datetime.now(UTC)) + closing.notice_delivery_window
            )
            await conn.executemany(
                "INSERT INTO notice_outbox (notice_id, case_id, body, deliver_by)"
                " VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT (notice_id) DO NOTHING",
                [(n.notice_id, status.case_id, n.model_dump_json(), deliver_by) for n in closing.notices],
            )

    @activity.defn(name=contract.ACTIVITY_RECORD_CASE_EVENT)
    async def record_case_event(self, event: CaseEvent) -> None:
        """Add a line to the case's audit trail (once per event id)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO case_events (case_id, event_id, at, kind, operator, reason, detail)"
                " VALUES ($1, $2, $3, $4, $5, $6, jsonb_build_object('what', $7::text))"
                " ON CONFLICT (case_id, event_id) DO NOTHING",
                event.case_id,
                event.event_id,
                event.at,
                event.kind,
                event.operator,
                event.reason,
                event.detail,
            )

    @staticmethod
    async def _lock_case_account(conn: asyncpg.Connection, case_id: str, account_id: str) -> asyncpg.Record:
        case = await conn.fetchrow("SELECT account_id FROM margin_call_cases WHERE case_id = $1", case_id)
        if case is None:
            raise UnknownCase(f"case_id: no case {case_id!r}")
        if case["account_id"] != account_id:
            raise LedgerError(f"case {case_id} belongs to {case['account_id']}, not {account_id}")
        account = await conn.fetchrow(
            "SELECT settlement_currency FROM accounts WHERE account_id = $1 FOR NO KEY UPDATE", account_id
        )
        if account is None:
            raise UnknownAccount(f"account_id: no account {account_id!r}")
        return account


async def credit_deposit(pool: asyncpg.Pool, deposit: Deposit) -> DepositBooking:
    """Book a deposit (external -> trader collateral), idempotent by deposit id.

    Shared by the activity and the client API's deposit handler helper, which
    credits the ledger before it reports the deposit to the case.
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
                system_account("external", deposit.currency),
                collateral,
                deposit.currency,
                deposit.amount,
                "deposit",
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

    def __init__(self, pool: asyncpg.Pool, policies: PolicyBook = STANDARD_BOOK) -> None:
        self.pool = pool
        # The operator's book: every case opened through this worker is held to it.
        self.policies = policies

    async def credit(self, deposit: Deposit) -> DepositBooking:
        return await credit_deposit(self.pool, deposit)
