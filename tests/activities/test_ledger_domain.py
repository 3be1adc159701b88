"""The ledger's domain without a database: account names, and which way each price and fee rounds."""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path

import pytest

from activities.ledger import (
    INSURANCE_FUND,
    SYSTEM_KINDS,
    collateral_account,
    cover_deficit,
    fill_order,
    insurance_fund_account,
    sell_collateral,
    stage_fee,
    system_account,
)
from workflows.domain.liquidation import LiquidationOrder
from workflows.domain.portfolio import Collateral

D = Decimal
LEDGER = Path(__file__).resolve().parents[2] / "activities" / "ledger"


def test_account_names_are_spelt_in_one_place() -> None:
    assert insurance_fund_account("USDT") == system_account(INSURANCE_FUND, "USDT") == "insurance_fund:USDT"
    assert collateral_account("alice", "BTC") == "collateral:alice:BTC"
    assert [system_account(kind, "EUR") for kind in SYSTEM_KINDS] == [
        "insurance_fund:EUR",
        "market:EUR",
        "external:EUR",
        "uncovered_loss:EUR",
    ]
    with pytest.raises(ValueError, match="kind"):
        system_account("collateral", "USDT")


@pytest.mark.parametrize("module", ["_accounts.py", "_pricing.py"])
def test_the_domain_modules_do_no_io(module: str) -> None:
    """No SQL driver, no Temporal: the arithmetic can be read and tested on its own."""
    tree = ast.parse((LEDGER / module).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    # Only the standard library and the project's domain and contract: no driver, no Temporal, no storage.
    assert not {m for m in imported if m.split(".")[0] in ("asyncpg", "temporalio", "activities")}, imported


def order(quantity: str, side: str = "sell") -> LiquidationOrder:
    return LiquidationOrder(instrument="BTCUSDT", quantity=D(quantity), side=side)  # type: ignore[arg-type]


def test_a_long_sells_below_the_mark_and_its_loss_rounds_against_the_trader() -> None:
    fill = fill_order(order("0.25"), D("1"), D("50000"), D("49500"), D("0.001"), places=6)
    assert fill is not None
    assert (fill.fill_price, fill.notional) == (D("49450.5"), D("12362.625"))
    assert fill.realised_pnl == D("-137.375")
    # A loss finer than the unit is floored: the trader is never lent the dust.
    dust = fill_order(order("0.0000001"), D("1"), D("50000"), D("49999.99"), D(0), places=2)
    assert dust is not None and dust.realised_pnl == D("-0.01")


def test_a_short_buys_back_above_the_mark_and_its_gain_rounds_down() -> None:
    fill = fill_order(order("1", "buy"), D("-2"), D("3000"), D("2999.999"), D("0.001"), places=2)
    assert fill is not None
    assert fill.fill_price == D("3002.998999")
    assert fill.realised_pnl == D("-3.00")  # -2.998999 floored
    gain = fill_order(order("1", "buy"), D("-1"), D("3000"), D("2000.004"), D(0), places=2)
    assert gain is not None and gain.realised_pnl == D("999.99")  # 999.996 floored, not rounded up


def test_an_order_only_ever_reduces_a_position() -> None:
    assert fill_order(order("1", "buy"), D("1"), D("50000"), D("49000"), D(0), 6) is None  # wrong side
    assert fill_order(order("1"), D("0"), D("50000"), D("49000"), D(0), 6) is None  # nothing held
    capped = fill_order(order("5"), D("0.1"), D("50000"), D("40100"), D(0), 6)
    assert capped is not None and capped.quantity == D("0.1")


def test_the_fee_rounds_down_and_never_exceeds_what_is_left() -> None:
    assert stage_fee(D("12362.625"), D("0.005"), D("1000"), 6) == D("61.813125")
    assert stage_fee(D("100"), D("0.0033333"), D("1000"), 2) == D("0.33")  # 0.33333 down
    assert stage_fee(D("100000"), D("0.005"), D("12.345"), 2) == D("12.34")  # capped, then down
    assert stage_fee(D("100000"), D("0.005"), D("-50"), 2) == 0  # nothing left: no fee


def test_a_collateral_sale_shares_one_fee_and_rounds_proceeds_down() -> None:
    items = [
        Collateral(asset="BTC", amount=D("0.1"), price=D("50000"), haircut=D("0.1")),
        Collateral(asset="ETH", amount=D("0.3333333"), price=D("3000"), haircut=D("0.5")),
    ]
    sales = sell_collateral(items, D(1), D("-4900"), D("0.002"), places=2)
    assert [(s.asset, s.proceeds) for s in sales] == [("BTC", D("5000.00")), ("ETH", D("999.99"))]
    # One fee on 5,999.99 (11.99998 down to 11.99), shared by proceeds, the rest on the last sale.
    assert sum(s.fee for s in sales) == D("11.99")
    assert [s.fee for s in sales] == [D("9.99"), D("2.00")]
    # The fee is capped at what the trader has left after the whole sale.
    capped = sell_collateral(items, D(1), D("-5990"), D("0.002"), places=2)
    assert sum(s.fee for s in capped) == D("9.99")


def test_the_fund_covers_the_deficit_rounded_down_and_no_more_than_it_holds() -> None:
    cover = cover_deficit(D("-10.0000005"), D("1000"), places=6)
    assert (cover.deficit, cover.covered_by_fund, cover.uncovered) == (D("10"), D("10"), D(0))
    short = cover_deficit(D("-2400"), D("1000"), places=6)
    assert (short.deficit, short.covered_by_fund, short.uncovered) == (D("2400"), D("1000"), D("1400"))
    assert cover_deficit(D("5"), D("1000"), places=6).deficit == 0
