"""The margin math against the published vectors in docs/margin-math.md."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from pydantic import ValidationError

from workflows.domain import margin
from workflows.domain.portfolio import Collateral, Portfolio, Position, Tier

TOLERANCE = Decimal("0.01")
FLAT = [Tier(notional_floor=Decimal(0), maintenance_rate=Decimal("0.004"), initial_rate=Decimal("0.01"))]


def usdt(amount: str) -> Collateral:
    return Collateral(asset="USDT", amount=Decimal(amount), price=Decimal(1), haircut=Decimal(0))


def position(quantity: str, entry: str, mark: str | None = None, tiers: list[Tier] = FLAT) -> Position:
    return Position(
        instrument="BTCUSDT",
        quantity=Decimal(quantity),
        entry_price=Decimal(entry),
        mark_price=Decimal(mark or entry),
        tiers=tiers,
    )


def test_binance_cross_liquidation_price_vector_1() -> None:
    figures = margin.assess(Portfolio(collateral=[usdt("500")], positions=[position("0.02", "50000")]))
    lp = figures.positions[0].liquidation_price
    assert lp is not None and abs(lp - Decimal("25100.40")) <= TOLERANCE
    assert abs(lp - Decimal("25100.4016")) < Decimal("0.0001")


def test_dydx_short_liquidation_price_vector_2() -> None:
    tiers = [Tier(notional_floor=Decimal(0), maintenance_rate=Decimal("0.05"), initial_rate=Decimal("0.1"))]
    figures = margin.assess(
        Portfolio(collateral=[usdt("1000")], positions=[position("-3", "3000", tiers=tiers)])
    )
    lp = figures.positions[0].liquidation_price
    assert lp is not None and abs(lp - Decimal(10000) / Decimal("3.15")) <= TOLERANCE
    assert abs(lp - Decimal("3174.60")) <= TOLERANCE


BINANCE_TIERS = [
    Tier(notional_floor=Decimal(f), maintenance_rate=Decimal(m), initial_rate=Decimal(i))
    for f, m, i in [
        ("0", "0.004", "0.008"),
        ("50000", "0.005", "0.01"),
        ("250000", "0.01", "0.02"),
        ("1000000", "0.025", "0.05"),
    ]
]


def test_tier_cumulative_amounts_vector_3() -> None:
    assert margin.cumulative_amounts(BINANCE_TIERS) == [0, 50, 1300, 16300]


def test_tiered_maintenance_is_continuous_across_a_floor() -> None:
    # With derived cums, margin just below and at a floor agree (no jump).
    below = margin.margin_at(BINANCE_TIERS, Decimal("249999.99"), "maintenance_rate")
    at = margin.margin_at(BINANCE_TIERS, Decimal("250000"), "maintenance_rate")
    assert abs(at - below) < Decimal("0.001")
    assert at == Decimal("250000") * Decimal("0.01") - 1300


def test_equity_shortfall_ratio_and_haircut() -> None:
    btc = Collateral(asset="BTC", amount=Decimal("0.1"), price=Decimal("20000"), haircut=Decimal("0.1"))
    portfolio = Portfolio(collateral=[usdt("100"), btc], positions=[position("1", "30000", "25000")])
    figures = margin.assess(portfolio)
    # collateral 100 + 0.1*20000*0.9 = 1900; upnl -5000
    assert figures.collateral_value == Decimal("1900")
    assert figures.equity == Decimal("-3100")
    assert figures.maintenance_margin == Decimal("100")  # 25000 * 0.004
    assert figures.shortfall == Decimal("3200")
    assert figures.margin_ratio is None
    assert margin.deposit_to_reach(figures.equity, Decimal("125")) == Decimal("3225")


def test_margin_ratio_and_bankruptcy_price() -> None:
    figures = margin.assess(Portfolio(collateral=[usdt("500")], positions=[position("0.02", "50000")]))
    assert figures.margin_ratio == Decimal("4") / Decimal("500")
    bp = figures.positions[0].bankruptcy_price
    assert bp == Decimal("25000")  # 50000 - 500 / 0.02


def test_no_liquidation_price_when_collateral_covers_everything() -> None:
    figures = margin.assess(Portfolio(collateral=[usdt("100000")], positions=[position("0.02", "50000")]))
    assert figures.positions[0].liquidation_price is None
    assert figures.positions[0].bankruptcy_price is None


def test_liquidation_price_recomputed_in_the_tier_it_lands_in() -> None:
    # 10 BTC at 30,000 = 300,000 notional (tier 3); the liquidation price lands in tier 2.
    p = position("10", "30000", tiers=BINANCE_TIERS)
    figures = margin.assess(Portfolio(collateral=[usdt("60000")], positions=[p]))
    lp = figures.positions[0].liquidation_price
    assert lp is not None
    landed = margin.tier_index(BINANCE_TIERS, 10 * lp)
    assert landed == 1
    # At that price equity equals maintenance margin, to the cent.
    moved = p.model_copy(update={"mark_price": lp})
    equity = Decimal(60000) + margin.unrealised_pnl(moved)
    assert abs(equity - margin.maintenance_margin(moved)) <= TOLERANCE


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([("0", "0.01", "0.02"), ("0", "0.02", "0.03")], "strictly ascending"),
        ([("10", "0.01", "0.02")], "must be 0"),
        ([("0", "-0.01", "0.02")], "maintenance_rate"),
    ],
)
def test_bad_tier_tables_are_refused(tiers: list[tuple[str, str, str]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Position.model_validate(
            {
                "instrument": "X",
                "quantity": "1",
                "entry_price": "1",
                "mark_price": "1",
                "tiers": [
                    {"notional_floor": f, "maintenance_rate": m, "initial_rate": i} for f, m, i in tiers
                ],
            }
        )


@pytest.mark.parametrize(
    ("collateral", "quantity", "price"),
    [
        ("500", "-1e-50", "50000"),  # a dust short: its bankruptcy price is near 1e55
        ("1e-50", "1e15", "1"),  # dust equity under a large position: a margin ratio near 1e63
        ("500", "1e15", "1e15"),  # a 1e30 notional
        ("1e15", "-1e-18", "1e15"),
        ("-1e15", "1e15", "1e-18"),
    ],
)
def test_the_figures_of_dust_and_giant_positions_are_computed_not_raised(
    collateral: str, quantity: str, price: str
) -> None:
    cash = Collateral(asset="USDT", amount=Decimal(collateral), price=Decimal(price), haircut=Decimal(0))
    figures = margin.assess(Portfolio(collateral=[cash], positions=[position(quantity, price)]))
    p = figures.positions[0]
    for value in (figures.equity, figures.maintenance_margin, figures.margin_ratio, p.bankruptcy_price):
        assert value is None or value.is_finite()
    assert figures.shortfall == max(Decimal(0), figures.maintenance_margin - figures.equity)


@pytest.mark.parametrize("exponent", range(-60, 90, 7))
@pytest.mark.parametrize("sign", [1, -1])
def test_display_keeps_12_places_where_they_fit_and_never_raises(exponent: int, sign: int) -> None:
    value = sign * Decimal("1.234567890123456789").scaleb(exponent)
    shown = margin._display(value)
    assert shown.is_finite()
    with localcontext() as ctx:
        ctx.prec = 200
        if exponent + 1 + 12 <= 60:  # 12 places fit in the math's 60 digits
            assert shown == value.quantize(Decimal("1e-12"))
        else:
            assert abs(shown - value) <= abs(value) * Decimal("1e-59")
