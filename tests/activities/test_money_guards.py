"""The ledger's protections of money that an adversarial review found missing.

Each test names the defect it guards: bankruptcy paying a solvent trader, a
stage filling at a mark other than the one it checked, figures too large to
read, and an asset the well-known decimals table does not list.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from activities.ledger import (
    STAGE_CHECKED,
    LedgerActivities,
    collateral_account,
    credit_deposit,
    ensure_collateral_account,
    post_transfer,
    reference,
    system_account,
)
from tests.helpers import balance, open_case
from worker.market import Trader, move_market, onboard, tiers
from workflows.contract import BankruptcyRequest, Deposit, StageRequest
from workflows.domain.liquidation import LiquidationOrder, LiquidationPlan

D = Decimal


def close_plan(account: str, instrument: str, quantity: str, side: str = "sell") -> LiquidationPlan:
    return LiquidationPlan(
        account_id=account,
        orders=[LiquidationOrder(instrument=instrument, quantity=D(quantity), side=side)],
        fee_rate=D("0.002"),
        slippage=D("0"),
        target_equity=D("0"),
        reason="test",
    )


async def give_btc(pool: asyncpg.Pool, account: str, amount: Decimal) -> None:
    """Non-settlement collateral: BTC at 50,000 with a 10 % haircut."""
    async with pool.acquire() as conn:
        await reference.add_asset(conn, "BTC", 8, D("50000"), D("0.1"))
        held = await ensure_collateral_account(conn, account, "BTC")
        await post_transfer(
            conn,
            f"btc:{account}",
            system_account("external", "BTC"),
            held,
            "BTC",
            amount,
            "collateral_transfer",
        )


async def crash_and_close_out(pool: asyncpg.Pool, account: str) -> LedgerActivities:
    """Long 1 BTCUSDT from 50,000, marked at 45,000, sold in full (no slippage)."""
    ledger = LedgerActivities(pool)
    async with pool.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("45000")})
    await open_case(ledger, account, f"case-{account}")
    stage = await ledger.execute_liquidation_stage(
        StageRequest(case_id=f"case-{account}", stage=1, plan=close_plan(account, "BTCUSDT", "1"))
    )
    assert not stage.snapshot_after.portfolio.positions
    return ledger


async def test_bankruptcy_sells_other_collateral_before_the_fund_pays_a_solvent_trader(
    venue: asyncpg.Pool,
) -> None:
    """Issue item 1: USDT -4,900 after the close-out, 0.1 BTC (5,000) left: net worth +100, fund pays 0."""
    await onboard(venue, Trader("solvent", D("100"), {"BTCUSDT": (D("1"), D("50000"))}))
    await give_btc(venue, "solvent", D("0.1"))
    ledger = await crash_and_close_out(venue, "solvent")
    fund_before = await balance(venue, "insurance_fund:USDT")
    assert await balance(venue, collateral_account("solvent", "USDT")) == D("-4900")

    settled = await ledger.settle_bankruptcy(BankruptcyRequest(case_id="case-solvent", fee_rate=D("0.002")))

    assert settled.deficit == 0 and settled.covered_by_insurance_fund == 0 and settled.uncovered_loss == 0
    [sale] = settled.collateral_sold
    assert (sale.asset, sale.amount, sale.proceeds, sale.fee) == ("BTC", D("0.1"), D("5000"), D("10"))
    assert await balance(venue, collateral_account("solvent", "BTC")) == 0
    assert await balance(venue, collateral_account("solvent", "USDT")) == D("90")  # 100 left, less the fee
    assert await balance(venue, "insurance_fund:USDT") == fund_before + D("10")  # the fee, nothing paid out
    again = await ledger.settle_bankruptcy(BankruptcyRequest(case_id="case-solvent", fee_rate=D("0.002")))
    assert again == settled


async def test_bankruptcy_fund_pays_only_what_remains_after_collateral_is_sold(venue: asyncpg.Pool) -> None:
    await onboard(venue, Trader("short-of-btc", D("100"), {"BTCUSDT": (D("1"), D("50000"))}))
    await give_btc(venue, "short-of-btc", D("0.05"))
    ledger = await crash_and_close_out(venue, "short-of-btc")
    fund_before = await balance(venue, "insurance_fund:USDT")

    settled = await ledger.settle_bankruptcy(
        BankruptcyRequest(case_id="case-short-of-btc", fee_rate=D("0.002"))
    )

    # -4,900 + 2,500 from the BTC: 2,400 remains negative; no fee on a trader with nothing left.
    assert settled.collateral_sold[0].fee == 0
    assert settled.deficit == D("2400")
    assert settled.covered_by_insurance_fund == fund_before
    assert settled.uncovered_loss == D("2400") - fund_before
    assert await balance(venue, collateral_account("short-of-btc", "USDT")) == 0


async def test_bankruptcy_deficit_never_rounds_in_the_traders_favour(venue: asyncpg.Pool) -> None:
    """A balance finer than the currency's unit: the fund pays the floor, never one unit more."""
    ledger = LedgerActivities(venue)
    await onboard(venue, Trader("dust", D("0"), {}))
    async with venue.acquire() as conn:
        held = await ensure_collateral_account(conn, "dust", "USDT")
        await post_transfer(conn, "dust-loss", held, "market:USDT", "USDT", D("10.0000005"), "realised_pnl")
    await open_case(ledger, "dust", "case-dust")
    settled = await ledger.settle_bankruptcy(BankruptcyRequest(case_id="case-dust"))
    assert settled.deficit == D("10")
    assert await balance(venue, held) == D("-0.0000005")  # the dust stays on the books, visible


async def test_a_stage_fills_at_the_mark_it_checked_the_breach_at(venue: asyncpg.Pool) -> None:
    """Issue item 2: a mark written between the breach check and the fills does not change the fill."""

    async def market_recovers(checkpoint: str) -> None:
        if checkpoint == STAGE_CHECKED:
            async with venue.acquire() as other:
                await move_market(other, {"BTCUSDT": D("60000")})

    ledger = LedgerActivities(venue, checkpoint=market_recovers)
    await onboard(venue, Trader("racer", D("1000"), {"BTCUSDT": (D("0.1"), D("50000"))}))
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("40100")})  # equity 10 < maintenance 16.04
    await open_case(ledger, "racer", "case-racer")

    result = await ledger.execute_liquidation_stage(
        StageRequest(case_id="case-racer", stage=1, plan=close_plan("racer", "BTCUSDT", "0.05"))
    )
    [fill] = result.fills
    assert fill.mark_price == D("40100") and fill.fill_price == D("40100")
    assert fill.realised_pnl == D("-495")  # 0.05 * (40,100 - 50,000)
    async with venue.acquire() as conn:
        assert await conn.fetchval("SELECT price FROM mark_prices WHERE instrument = 'BTCUSDT'") == D("60000")


async def test_figures_beyond_input_limits_are_read_not_refused(venue: asyncpg.Pool) -> None:
    """Issue item 5: a bankruptcy price of 2e15 is a fact about the account, not a bad input."""
    ledger = LedgerActivities(venue)
    await onboard(
        venue,
        Trader(
            "whale",
            D("20000000"),
            {"BTCUSDT": (D("10000"), D("50000")), "ETHUSDT": (D("-0.00000001"), D("3000"))},
        ),
    )
    snapshot = await ledger.load_margin_snapshot("whale")
    eth = next(p for p in snapshot.figures.positions if p.instrument == "ETHUSDT")
    assert eth.bankruptcy_price is not None and eth.bankruptcy_price > D("1e15")
    assert snapshot.model_validate_json(snapshot.model_dump_json()) == snapshot


async def test_an_asset_outside_the_well_known_table_settles_with_the_ledgers_decimals(
    pool: asyncpg.Pool,
) -> None:
    """Issue item 6: a DAI account (18 decimals in ``assets``) is credited, liquidated and settled."""
    ledger = LedgerActivities(pool)
    async with pool.acquire() as conn:
        await reference.add_asset(conn, "DAI", 18, D(1))
        await reference.add_instrument(
            conn,
            "BTCDAI",
            "DAI",
            tiers(("0", "0.004", "0.008")),
            D("50000"),
        )
        await reference.open_account(conn, "dai-trader", "DAI")
        await reference.set_position(conn, "dai-trader", "BTCDAI", D("0.1"), D("50000"))
    booking = await credit_deposit(
        pool,
        Deposit(
            account_id="dai-trader", deposit_id="dai-1", amount=D("1000.000000000000000001"), currency="DAI"
        ),
    )
    assert not booking.already_credited
    with pytest.raises(ValueError, match="DAI allows 18 decimal places"):
        await credit_deposit(
            pool,
            Deposit(
                account_id="dai-trader", deposit_id="dai-2", amount=D("1.0000000000000000001"), currency="DAI"
            ),
        )
    async with pool.acquire() as conn:
        await move_market(conn, {"BTCDAI": D("40100")})
    await open_case(ledger, "dai-trader", "case-dai")
    snapshot = await ledger.load_margin_snapshot("dai-trader")
    assert snapshot.currency == "DAI" and snapshot.places == 18 and snapshot.in_breach
    result = await ledger.execute_liquidation_stage(
        StageRequest(case_id="case-dai", stage=1, plan=close_plan("dai-trader", "BTCDAI", "0.1"))
    )
    assert result.fills[0].realised_pnl == D("-990")
    assert result.fee == D("8.02")  # 0.2 % of 4,010, well within what is left


async def test_collateral_is_converted_at_its_price_in_the_settlement_currency(venue: asyncpg.Pool) -> None:
    """Review finding: an asset's price is in the unit of account; the settlement currency has its own."""
    ledger = LedgerActivities(venue)
    async with venue.acquire() as conn:
        await reference.add_asset(conn, "EUR", 2, D("1.25"))
        await reference.open_account(conn, "euro", "EUR")
        held = await ensure_collateral_account(conn, "euro", "EUR")
        await post_transfer(conn, "euro-loss", held, "market:EUR", "EUR", D("1000"), "realised_pnl")
    await give_btc(venue, "euro", D("0.1"))
    await open_case(ledger, "euro", "case-euro")
    settled = await ledger.settle_bankruptcy(BankruptcyRequest(case_id="case-euro"))
    assert settled.collateral_sold[0].proceeds == D("4000")  # 5,000 at 50,000 per BTC, 1.25 per EUR
    assert settled.deficit == 0
    assert await balance(venue, held) == D("3000")


async def test_a_waiver_is_kept_only_for_a_case_that_closed_waived_and_ends_as_its_scope_says(
    venue: asyncpg.Pool,
) -> None:
    """Review findings: a waive accepted just before a cure left a waiver; a timed one ended on recovery."""
    from datetime import timedelta

    from workflows.contract import CaseClosing as Closing
    from workflows.contract import CaseState, CaseStatus, Waiver

    ledger = LedgerActivities(venue)
    now = datetime.now(UTC)
    for name in ("cured", "timed", "open-ended"):
        await onboard(venue, Trader(name, D("100"), {}))
        await open_case(ledger, name, f"case-{name}")
    scope = {"cured": now + timedelta(days=1), "timed": now + timedelta(days=1), "open-ended": None}
    for name, until in scope.items():
        state = CaseState.CURED if name == "cured" else CaseState.WAIVED
        status = CaseStatus(
            case_id=f"case-{name}",
            account_id=name,
            call_id="c1",
            state=state,
            currency="USDT",
            opened_at=now,
            deadline=None,
            equity=None,
            maintenance_margin=None,
            shortfall=None,
            deposit_needed=None,
            deposits_counted=[],
            stages=[],
            fees_to_insurance_fund=D(0),
            insurance_fund_used=D(0),
            uncovered_loss=D(0),
            notices_sent=0,
            notices_failed=[],
            timeline=[],
            closed_at=now,
        )
        await ledger.close_case(
            Closing(status=status, waiver=Waiver(operator="alice", reason="goodwill", until=until))
        )
    async with venue.acquire() as conn:
        kept = {r["account_id"] for r in await conn.fetch("SELECT account_id FROM waivers")}
    assert kept == {"timed", "open-ended"}
    before = now - timedelta(minutes=1)
    assert await ledger.end_waivers(set(), before) == []  # a scan from before the waivers ends none
    assert await ledger.end_waivers(set(), await ledger.clock()) == ["open-ended"]  # healthy: it recovered
    async with venue.acquire() as conn:
        assert await conn.fetchval("SELECT ended_at FROM waivers WHERE account_id = 'timed'") is None


async def test_the_fee_on_a_sale_of_several_assets_does_not_depend_on_their_order(
    venue: asyncpg.Pool,
) -> None:
    """Review finding: the fee was capped per asset, so a sale made while still negative paid none."""
    await onboard(venue, Trader("two-assets", D("100"), {"BTCUSDT": (D("1"), D("50000"))}))
    await give_btc(venue, "two-assets", D("0.05"))  # 2,500
    async with venue.acquire() as conn:
        await reference.add_asset(conn, "ETH", 8, D("3000"), D("0.5"))  # counts 1,500 in equity
        held = await ensure_collateral_account(conn, "two-assets", "ETH")
        await post_transfer(
            conn, "eth:two-assets", "external:ETH", held, "ETH", D("1"), "collateral_transfer"
        )
    ledger = await crash_and_close_out(venue, "two-assets")
    settled = await ledger.settle_bankruptcy(
        BankruptcyRequest(case_id="case-two-assets", fee_rate=D("0.002"))
    )
    # -4,900 + 2,500 + 3,000 = 600 left: the fee is 0.2 % of the whole 5,500 sold.
    assert sum(sale.fee for sale in settled.collateral_sold) == D("11")
    assert settled.deficit == 0
    assert await balance(venue, collateral_account("two-assets", "USDT")) == D("589")
