"""``margin-call risk`` as a user runs it: a real process, JSON in and out."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest

TIER = {"notional_floor": "0", "maintenance_rate": "0.004", "initial_rate": "0.008"}


def run_risk(payload: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "risk"],
        input=payload,
        capture_output=True,
        text=True,
        timeout=60,
    )


def portfolio(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "collateral": [{"asset": "USDT", "amount": "500", "price": "1", "haircut": "0"}],
        "positions": [
            {
                "instrument": "BTCUSDT",
                "quantity": "0.02",
                "entry_price": "50000",
                "mark_price": "50000",
                "tiers": [TIER],
            }
        ],
    }
    document.update(overrides)
    return document


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
