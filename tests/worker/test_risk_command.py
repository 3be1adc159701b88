"""``margin-call risk`` as a user runs it: a real process, JSON in and out."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from hypothesis import given, settings, target
from hypothesis import strategies as st

from tests.helpers import TIER, portfolio, run_risk
from worker import risk_command


def test_published_vectors_through_the_command() -> None:
    out = run_risk(json.dumps(portfolio()))
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert set(figures) == {
        "equity",
        "maintenance_margin",
        "initial_margin",
        "shortfall",
        "margin_ratio",
        "positions",
    }
    assert abs(Decimal(figures["positions"][0]["liquidation_price"]) - Decimal("25100.40")) <= Decimal("0.01")
    assert figures["positions"][0]["bankruptcy_price"] == "25000"
    assert figures["equity"] == "500" and figures["maintenance_margin"] == "4"

    dydx = {
        "collateral": [{"asset": "USD", "amount": "1000", "price": "1", "haircut": "0"}],
        "positions": [
            {
                "instrument": "ETH-USD",
                "quantity": "-3",
                "entry_price": "3000",
                "mark_price": "3000",
                "tiers": [{"notional_floor": "0", "maintenance_rate": "0.05", "initial_rate": "0.1"}],
            }
        ],
    }
    out = run_risk(json.dumps(dydx))
    assert out.returncode == 0, out.stderr
    lp = Decimal(json.loads(out.stdout)["positions"][0]["liquidation_price"])
    assert abs(lp - Decimal("3174.60")) <= Decimal("0.01")


def test_margin_ratio_is_null_when_equity_is_not_positive() -> None:
    doc = portfolio()
    doc["positions"][0]["mark_price"] = "20000"
    figures = json.loads(run_risk(json.dumps(doc)).stdout)
    assert figures["margin_ratio"] is None
    assert Decimal(figures["shortfall"]) > 0


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ("{not json", "input: not valid JSON"),
        (json.dumps({"positions": []}), "collateral: missing required field"),
        (
            json.dumps(
                portfolio(collateral=[{"asset": "USDT", "amount": "1", "price": "1", "haircut": "-0.1"}])
            ),
            "collateral.0.haircut",
        ),
        (
            json.dumps(
                portfolio(
                    positions=[
                        {
                            "instrument": "X",
                            "quantity": "1",
                            "entry_price": "1",
                            "mark_price": "1",
                            "tiers": [TIER, TIER],
                        }
                    ]
                )
            ),
            "positions.0.tiers",
        ),
        (
            json.dumps(
                portfolio(collateral=[{"asset": "USDT", "amount": 1.5, "price": "1", "haircut": "0"}])
            ),
            "collateral.0.amount",
        ),
        (
            json.dumps(
                portfolio(collateral=[{"asset": "USDT", "amount": "NaN", "price": "1", "haircut": "0"}])
            ),
            "collateral.0.amount",
        ),
        (json.dumps(portfolio(extra="x")), "extra: unknown field"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_field(payload: str, field: str) -> None:
    out = run_risk(payload)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], out.stderr


# --- every input ends in figures or in one line naming the field ------------------


def run_in_process(payload: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    code = risk_command.run(StringIO(payload), out, err)
    return code, out.getvalue(), err.getvalue()


def assert_figures_or_one_line(code: int, out: str, err: str) -> dict[str, Any] | None:
    """The command's whole contract: figures and exit 0, or exit 2 and one ``error: field: problem``."""
    if code == 0:
        assert err == ""
        figures: dict[str, Any] = json.loads(out)
        values = [figures[k] for k in ("equity", "maintenance_margin", "initial_margin", "shortfall")]
        values.append(figures["margin_ratio"])
        for p in figures["positions"]:
            values += [p["notional"], p["maintenance_margin"], p["liquidation_price"], p["bankruptcy_price"]]
        for value in values:
            assert value is None or Decimal(value).is_finite(), value
        return figures
    assert code == 2, (code, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and ": " in lines[0][7:], err
    return None


D = Decimal
# Magnitudes the command accepts, weighted to its edges: the largest amount, the smallest unit.
EDGE_MAGNITUDES = st.sampled_from([D("1e15"), D("1e-18"), D("999999999999999.999999999999999999"), D(1)])
magnitude = st.one_of(
    EDGE_MAGNITUDES,
    EDGE_MAGNITUDES,
    st.builds(lambda m, e: D(m).scaleb(e), st.integers(1, 10**6), st.integers(-18, 9)),
)
signed = st.one_of(st.builds(lambda sign, m: sign * m, st.sampled_from([1, -1]), magnitude), st.just(D(0)))
fraction = st.one_of(
    st.sampled_from([D(0), D("0.004"), D("1e-18"), D("0.999999999999999999")]),
    st.builds(lambda m: D(m).scaleb(-18), st.integers(0, 10**18 - 1)),
)


@st.composite
def bounded_tiers(draw: st.DrawFn) -> list[dict[str, str]]:
    floors = [D(0), *sorted(set(draw(st.lists(magnitude, max_size=3))))]
    rates = sorted(draw(st.lists(fraction, min_size=2 * len(floors), max_size=2 * len(floors))))
    return [
        {
            "notional_floor": str(f),
            "maintenance_rate": str(rates[2 * i]),
            "initial_rate": str(rates[2 * i + 1]),
        }
        for i, f in enumerate(floors)
    ]


@st.composite
def bounded_portfolios(draw: st.DrawFn) -> dict[str, Any]:
    """Portfolios within every bound of the command: each of them must be assessed."""
    collateral = [
        {
            "asset": "USDT",
            "amount": str(draw(signed)),
            "price": str(draw(magnitude)),
            "haircut": str(draw(fraction)),
        }
        for _ in range(draw(st.integers(0, 3)))
    ]
    positions = []
    for _ in range(draw(st.integers(0, 3))):
        entry = draw(magnitude)
        positions.append(
            {
                "instrument": draw(st.sampled_from(["BTCUSDT", "ETHUSDT"])),
                "quantity": str(draw(signed)),
                "entry_price": str(entry),
                # At the entry price the equity is the collateral alone: tiny collateral, huge ratios.
                "mark_price": str(draw(st.one_of(st.just(entry), magnitude))),
                "tiers": draw(bounded_tiers()),
            }
        )
    return {"collateral": collateral, "positions": positions}


# What a caller might send where a number goes: past the bounds, or no number at all.
WILD = [
    "1000000000000000.000000000000000001",
    "1e-19",
    "1e-50",
    "-1e-50",
    "1e16",
    "1E+999999",
    "-1e999999999999999999",
    "NaN",
    "-Infinity",
    "",
    "0x10",
    " 7 ",
    "-0",
    "1" * 70,
]
wild = st.one_of(
    st.sampled_from(WILD),
    st.builds(lambda m, e: str(D(m).scaleb(e)), st.integers(-(10**36), 10**36), st.integers(-60, 40)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**20), 10**20),
    st.none(),
    st.just([]),
)


@st.composite
def any_portfolios(draw: st.DrawFn) -> dict[str, Any]:
    """A bounded portfolio with a few figures replaced by wild values: a portfolio but for a field or two."""
    document = draw(bounded_portfolios())
    slots: list[tuple[dict[str, Any], str]] = []
    for item in document["collateral"]:
        slots += [(item, key) for key in ("amount", "price", "haircut")]
    for position in document["positions"]:
        slots += [(position, key) for key in ("quantity", "entry_price", "mark_price")]
        for tier in position["tiers"]:
            slots += [(tier, key) for key in ("notional_floor", "maintenance_rate", "initial_rate")]
    for _ in range(draw(st.integers(0, 3)) if slots else 0):
        container, key = draw(st.sampled_from(slots))
        container[key] = draw(wild)
    return document


@settings(max_examples=500, deadline=None)
@given(any_portfolios())
def test_any_portfolio_ends_in_figures_or_one_line_naming_the_field(document: dict[str, Any]) -> None:
    assert_figures_or_one_line(*run_in_process(json.dumps(document)))


@settings(max_examples=500, deadline=None)
@given(bounded_portfolios())
def test_every_portfolio_within_the_bounds_is_assessed(document: dict[str, Any]) -> None:
    code, out, err = run_in_process(json.dumps(document))
    assert code == 0, err
    figures = assert_figures_or_one_line(code, out, err)
    assert figures is not None
    shortfall = max(D(0), D(figures["maintenance_margin"]) - D(figures["equity"]))
    assert abs(D(figures["shortfall"]) - shortfall) <= D("1e-11") * max(D(1), shortfall)
    # Steer towards the largest figures (prices of dust positions, ratios over dust equity):
    # printing those to 12 places is what overflowed the context.
    printed = [figures["margin_ratio"]] + [p["bankruptcy_price"] for p in figures["positions"]]
    target(float(max((D(v).adjusted() for v in printed if v is not None), default=0)))


def tiny_position(quantity: str, price: str = "50000") -> dict[str, Any]:
    return {
        "instrument": "BTCUSDT",
        "quantity": quantity,
        "entry_price": price,
        "mark_price": price,
        "tiers": [TIER],
    }


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (portfolio(positions=[tiny_position("-1e-50")]), "positions.0.quantity: at most 18 decimal places"),
        (
            portfolio(
                collateral=[{"asset": "USDT", "amount": "1e-50", "price": "1", "haircut": "0"}],
                positions=[tiny_position("1e15", "1")],
            ),
            "collateral.0.amount: at most 18 decimal places",
        ),
        (portfolio(positions=[tiny_position("1e16")]), "positions.0.quantity: magnitude exceeds"),
        (portfolio(positions=[tiny_position("1", "1e999999")]), "positions.0.entry_price: magnitude exceeds"),
        (
            portfolio(collateral=[{"asset": "USDT", "amount": "1", "price": "1", "haircut": "1e-30"}]),
            "collateral.0.haircut: at most 18 decimal places",
        ),
        (
            portfolio(collateral=[{"asset": "USDT", "amount": "1", "price": "1", "haircut": "0"}] * 257),
            "collateral: at most 256",
        ),
        (portfolio(positions=[tiny_position("1")] * 1025), "positions: at most 1024"),
        (
            portfolio(
                positions=[
                    {
                        **tiny_position("1"),
                        "tiers": [
                            {"notional_floor": str(i), "maintenance_rate": "0.01", "initial_rate": "0.02"}
                            for i in range(65)
                        ],
                    }
                ]
            ),
            "positions.0.tiers: at most 64",
        ),
    ],
)
def test_inputs_past_the_bounds_are_refused_naming_the_field(document: dict[str, Any], field: str) -> None:
    code, out, err = run_in_process(json.dumps(document))
    assert_figures_or_one_line(code, out, err)
    assert code == 2 and field in err, err


@pytest.mark.parametrize(
    "document",
    [
        portfolio(positions=[tiny_position("-1e-18")]),
        portfolio(
            collateral=[{"asset": "USDT", "amount": "1e-18", "price": "1e-18", "haircut": "0"}],
            positions=[tiny_position("1e15", "1e15")],
        ),
        portfolio(positions=[tiny_position("1e15", "1e15")]),
        portfolio(
            collateral=[{"asset": "USDT", "amount": "1e15", "price": "1e15", "haircut": "0"}] * 256,
            positions=[tiny_position("-1e-18", "1e15")],
        ),
        portfolio(positions=[tiny_position("1")] * 1024),
    ],
)
def test_extremes_within_the_bounds_give_figures(document: dict[str, Any]) -> None:
    assert assert_figures_or_one_line(*run_in_process(json.dumps(document))) is not None


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "input: nested deeper than"),
        (b'{"collateral": [], "positions": [], "a\\nb": 1}', "a\\nb: unknown field"),
        (b'{"collateral": [], "positions": [' + b"1" * 5000 + b"]}", "input: not valid JSON"),
        (b'{"collateral": [], "positions": ["\xff"]}', "input: not valid UTF-8"),
    ],
)
def test_what_is_no_portfolio_at_all_is_one_line_from_the_real_process(payload: bytes, field: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", "risk"], input=payload, capture_output=True, timeout=60
    )
    assert_figures_or_one_line(out.returncode, out.stdout.decode(), out.stderr.decode())
    assert out.returncode == 2 and field in out.stderr.decode(), out.stderr


def test_the_reported_inputs_through_the_real_process() -> None:
    """The four inputs that ended in tracebacks: tiny quantities and collateral, 1e15 at 1e15."""
    for document, code in [
        (portfolio(positions=[tiny_position("-1e-50")]), 2),
        (
            portfolio(
                collateral=[{"asset": "USDT", "amount": "1e-50", "price": "1", "haircut": "0"}],
                positions=[tiny_position("1e15", "1")],
            ),
            2,
        ),
        (portfolio(positions=[tiny_position("1e15", "1e15")]), 0),
        (portfolio(positions=[tiny_position("-1e-18")]), 0),
    ]:
        out = run_risk(json.dumps(document))
        assert_figures_or_one_line(out.returncode, out.stdout, out.stderr)
        assert out.returncode == code, out.stderr
