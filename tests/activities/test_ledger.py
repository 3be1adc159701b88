"""The ledger on a real PostgreSQL: idempotent writes, double entry, exact balances."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError

from activities.exceptions import IdempotencyConflict
from activities.ledger import LedgerActivities, collateral_account, credit_deposit, post_transfer
from activities.ledger.audit import check_ledger
from activities.ledger.migrate import migrate
from tests.helpers import balance, open_case
from worker.market import Trader, move_market, onboard
from workflows.contract import BankruptcyRequest, BreachScan, Deposit, StageRequest
from workflows.domain.liquidation import LiquidationOrder, LiquidationPlan

D = Decimal


async def count(pool: asyncpg.Pool, sql: str, *args: object) -> int:
    async with pool.acquire() as conn:
        value: int = await conn.fetchval(sql, *args)
    return value


def deposit(account: str, deposit_id: str, amount: str, currency: str = "USDT") -> Deposit:
    return Deposit(account_id=account, deposit_id=deposit_id, amount=D(amount), currency=currency)


async def test_migrations_are_safe_to_run_twice(ledger_url: str) -> None:
    conn = await asyncpg.connect(ledger_url)
    try:
        assert await migrate(conn) == []  # the template already holds them
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") >= 1
    finally:
        await conn.close()


@pytest.mark.parametrize("amount", ["0", "-5", "NaN", "Infinity", "-Infinity"])
async def test_database_refuses_bad_transfer_amounts(venue: asyncpg.Pool, amount: str) -> None:
    async with venue.acquire() as conn:
        before = await conn.fetchval("SELECT count(*) FROM transfers")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO transfers (transfer_id, debit_account, credit_account, asset, amount, kind)"
                " VALUES ('t-bad', 'external:USDT', 'market:USDT', 'USDT', $1::numeric, 'test')",
                amount,
            )
        assert await conn.fetchval("SELECT count(*) FROM transfers") == before


async def test_transfer_repeat_is_a_no_op_and_a_different_body_is_refused(venue: asyncpg.Pool) -> None:
    async with venue.acquire() as conn:
        assert await post_transfer(conn, "t1", "external:USDT", "market:USDT", "USDT", D("10"), "test")
        assert not await post_transfer(conn, "t1", "external:USDT", "market:USDT", "USDT", D("10"), "test")
        with pytest.raises(IdempotencyConflict):
            await post_transfer(conn, "t1", "external:USDT", "market:USDT", "USDT", D("11"), "test")
    assert await balance(venue, "market:USDT") == D("10")


async def test_deposit_repeated_counts_once_and_conflict_writes_nothing(venue: asyncpg.Pool) -> None:
    await onboard(venue, Trader("alice", D("100"), {}))
    first = await credit_deposit(venue, deposit("alice", "dep-1", "25.5"))
    again = await credit_deposit(venue, deposit("alice", "dep-1", "25.5"))
    assert (first.already_credited, again.already_credited) == (False, True)
    transfers_before = await count(venue, "SELECT count(*) FROM transfers")
    with pytest.raises(IdempotencyConflict, match="deposit_id"):
        await credit_deposit(venue, deposit("alice", "dep-1", "30"))
    assert await count(venue, "SELECT count(*) FROM transfers") == transfers_before
    assert await balance(venue, collateral_account("alice", "USDT")) == D("125.5")


async def test_deposit_refusals_name_the_field(venue: asyncpg.Pool) -> None:
    from activities.exceptions import CurrencyMismatch, UnknownAccount

    await onboard(venue, Trader("bob", D("10"), {}))
    with pytest.raises(UnknownAccount, match="account_id"):
        await credit_deposit(venue, deposit("nobody", "dep-x", "1"))
    with pytest.raises(CurrencyMismatch, match="currency"):
        await credit_deposit(venue, deposit("bob", "dep-y", "1", currency="USDC"))
    assert await count(venue, "SELECT count(*) FROM deposits WHERE deposit_id IN ('dep-x', 'dep-y')") == 0


async def test_same_deposit_id_concurrently_counts_once(venue: asyncpg.Pool) -> None:
    await onboard(venue, Trader("carol", D("0"), {}))
    results = await asyncio.gather(
        *(credit_deposit(venue, deposit("carol", "dep-same", "7")) for _ in range(10))
    )
    assert sum(not r.already_credited for r in results) == 1
    assert await balance(venue, collateral_account("carol", "USDT")) == D("7")


def btc_plan(account: str, quantity: str) -> LiquidationPlan:
    return LiquidationPlan(
        account_id=account,
        orders=[LiquidationOrder(instrument="BTCUSDT", quantity=D(quantity), side="sell")],
        fee_rate=D("0.005"),
        slippage=D("0.001"),
        target_equity=D("0"),
        reason="test",
    )


async def test_liquidation_stage_run_twice_writes_one_set_of_fills(venue: asyncpg.Pool) -> None:
    ledger = LedgerActivities(venue)
    await onboard(venue, Trader("dave", D("600"), {"BTCUSDT": (D("1"), D("50000"))}))
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49500")})
    await open_case(ledger, "dave", "case-dave")
    request = StageRequest(case_id="case-dave", stage=1, plan=btc_plan("dave", "0.25"))
    first = await ledger.execute_liquidation_stage(request)
    second = await ledger.execute_liquidation_stage(request)
    assert first == second
    assert await count(venue, "SELECT count(*) FROM liquidation_fills WHERE case_id = 'case-dave'") == 1
    # 0.25 sold at 49500 * 0.999 against an entry of 50000
    fill = first.fills[0]
    assert fill.quantity == D("0.25") and fill.fill_price == D("49450.5")
    assert fill.realised_pnl == D("-137.375")
    assert first.fee == (D("0.25") * D("49450.5") * D("0.005")).quantize(D("0.000001"))
    expected = D("600") - D("137.375") - first.fee
    assert await balance(venue, collateral_account("dave", "USDT")) == expected
    assert await balance(venue, "insurance_fund:USDT") == D("1000") + first.fee
    assert first.snapshot_after.figures.equity == expected + D("0.75") * (D("49500") - D("50000"))
    async with venue.acquire() as conn:
        assert await conn.fetchval("SELECT quantity FROM positions WHERE account_id = 'dave'") == D("0.75")
    # Another plan for a stage already executed is a conflict, not a second sale.
    with pytest.raises(ApplicationError) as refused:
        await ledger.execute_liquidation_stage(
            StageRequest(case_id="case-dave", stage=1, plan=btc_plan("dave", "0.5"))
        )
    assert refused.value.type == "IdempotencyConflict" and refused.value.non_retryable


async def test_a_stage_never_flips_a_position(venue: asyncpg.Pool) -> None:
    ledger = LedgerActivities(venue)
    await onboard(venue, Trader("erin", D("1000"), {"BTCUSDT": (D("0.1"), D("50000"))}))
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("40100")})  # equity 10 < maintenance 16.04
    await open_case(ledger, "erin", "case-erin")
    result = await ledger.execute_liquidation_stage(
        StageRequest(case_id="case-erin", stage=1, plan=btc_plan("erin", "5"))
    )
    assert result.fills[0].quantity == D("0.1")
    async with venue.acquire() as conn:
        assert await conn.fetchval("SELECT quantity FROM positions WHERE account_id = 'erin'") == 0


async def test_failed_stage_leaves_nothing_behind(venue: asyncpg.Pool) -> None:
    ledger = LedgerActivities(venue)
    await onboard(venue, Trader("fay", D("1000"), {"BTCUSDT": (D("0.1"), D("50000"))}))
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("40100")})
    await open_case(ledger, "fay", "case-fay")
    # Sabotage: the fee transfer id is already taken with another body, so the stage must roll back.
    async with venue.acquire() as conn:
        await post_transfer(
            conn, "liquidation:case-fay:1:fee", "external:USDT", "market:USDT", "USDT", D("1"), "sabotage"
        )
    transfers_before = await count(venue, "SELECT count(*) FROM transfers")
    with pytest.raises(ApplicationError, match="different body"):
        await ledger.execute_liquidation_stage(
            StageRequest(case_id="case-fay", stage=1, plan=btc_plan("fay", "0.05"))
        )
    assert await count(venue, "SELECT count(*) FROM transfers") == transfers_before
    assert await count(venue, "SELECT count(*) FROM liquidation_stages") == 0
    assert await count(venue, "SELECT count(*) FROM liquidation_fills") == 0
    async with venue.acquire() as conn:
        assert await conn.fetchval("SELECT quantity FROM positions WHERE account_id = 'fay'") == D("0.1")
    assert await balance(venue, collateral_account("fay", "USDT")) == D("1000")


async def test_fifty_concurrent_deposits_and_a_stage_leave_the_exact_balance(venue: asyncpg.Pool) -> None:
    ledger = LedgerActivities(venue)
    await onboard(venue, Trader("gus", D("500"), {"BTCUSDT": (D("1"), D("50000"))}))
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49600")})
    await open_case(ledger, "gus", "case-gus")
    stage = ledger.execute_liquidation_stage(
        StageRequest(case_id="case-gus", stage=1, plan=btc_plan("gus", "0.5"))
    )
    deposits = [credit_deposit(venue, deposit("gus", f"gus-{i}", "1.01")) for i in range(50)]
    results = await asyncio.gather(stage, *deposits)
    stage_result = results[0]
    fill = stage_result.fills[0]  # type: ignore[union-attr]
    expected = D("500") + 50 * D("1.01") + fill.realised_pnl - stage_result.fee  # type: ignore[union-attr]
    assert await balance(venue, collateral_account("gus", "USDT")) == expected


async def test_bankruptcy_uses_the_insurance_fund_then_records_uncovered_loss(venue: asyncpg.Pool) -> None:
    ledger = LedgerActivities(venue)
    await onboard(venue, Trader("hal", D("500"), {"BTCUSDT": (D("1"), D("50000"))}))
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("48000")})  # equity -1500
    await open_case(ledger, "hal", "case-hal")
    stage = await ledger.execute_liquidation_stage(
        StageRequest(case_id="case-hal", stage=1, plan=btc_plan("hal", "1"))
    )
    assert stage.fee == 0  # nothing left to charge
    equity = stage.snapshot_after.figures.equity
    assert equity < 0
    settled = await ledger.settle_bankruptcy(BankruptcyRequest(case_id="case-hal"))
    assert settled.deficit == -equity
    assert settled.covered_by_insurance_fund == D("1000")
    assert settled.uncovered_loss == -equity - D("1000")
    again = await ledger.settle_bankruptcy(BankruptcyRequest(case_id="case-hal"))
    assert again == settled
    assert await balance(venue, collateral_account("hal", "USDT")) == 0
    assert await balance(venue, "insurance_fund:USDT") == 0
    assert await balance(venue, "uncovered_loss:USDT") == -settled.uncovered_loss


async def test_scan_breaches_worst_first_matches_the_snapshot(venue: asyncpg.Pool) -> None:
    ledger = LedgerActivities(venue)
    await onboard(venue, Trader("ok", D("10000"), {"BTCUSDT": (D("1"), D("50000"))}))
    await onboard(venue, Trader("thin", D("600"), {"BTCUSDT": (D("1"), D("50000"))}))
    await onboard(
        venue, Trader("thinner", D("400"), {"BTCUSDT": (D("1"), D("50000")), "ETHUSDT": (D("-2"), D("3000"))})
    )
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49500"), "ETHUSDT": D("3010")})
    breaches = await ledger.scan_breaches(BreachScan(limit=10))
    assert [b.account_id for b in breaches] == ["thinner", "thin"]
    for breach in breaches:
        snapshot = await ledger.load_margin_snapshot(breach.account_id)
        assert breach.equity == snapshot.figures.equity
        assert breach.maintenance_margin == snapshot.figures.maintenance_margin
        assert breach.shortfall == snapshot.figures.shortfall
    # A page of one row is how the scan reads, not where it stops: every breached account comes back.
    assert [b.account_id for b in await ledger.scan_breaches(BreachScan(limit=1))] == ["thinner", "thin"]


async def test_ledger_check_detects_a_drifted_balance(venue: asyncpg.Pool) -> None:
    async with venue.acquire() as conn:
        assert (await check_ledger(conn)).balanced
        await conn.execute(
            "UPDATE ledger_accounts SET balance = balance + 1 WHERE ledger_account = 'market:USDT'"
        )
        check = await check_ledger(conn)
        assert not check.balanced and check.drifted_accounts == ["market:USDT"]
        await conn.execute(
            "UPDATE ledger_accounts SET balance = balance - 1 WHERE ledger_account = 'market:USDT'"
        )


async def test_a_stage_never_sells_from_an_account_above_maintenance(venue: asyncpg.Pool) -> None:
    ledger = LedgerActivities(venue)
    await onboard(venue, Trader("gil", D("1000"), {"BTCUSDT": (D("0.1"), D("50000"))}))
    await open_case(ledger, "gil", "case-gil")
    transfers_before = await count(venue, "SELECT count(*) FROM transfers")
    with pytest.raises(ApplicationError) as refused:
        await ledger.execute_liquidation_stage(
            StageRequest(case_id="case-gil", stage=1, plan=btc_plan("gil", "0.05"))
        )
    assert refused.value.type == "AccountAboveMaintenance" and refused.value.non_retryable
    assert await count(venue, "SELECT count(*) FROM transfers") == transfers_before
    assert await count(venue, "SELECT count(*) FROM liquidation_stages") == 0
    # And the database itself refuses a stage row that says it sold from a healthy account.
    async with venue.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO liquidation_stages (case_id, stage, account_id, plan, result, equity_before,"
                " maintenance_before) VALUES ('case-gil', 1, 'gil', '{}', '{}', 100, 20)"
            )
