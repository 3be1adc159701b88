"""The sample exchange's listings: one settlement asset and three perpetuals with Binance-style tier tables.

Pure data, shared by the exchange side (``worker.exchange``, the demo), the
tests, the benchmarks and the soak, so that their figures are known and
repeatable.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from workflows.domain.portfolio import Tier

SETTLEMENT = "USDT"
SETTLEMENT_DECIMALS = 6


def tiers(*rows: tuple[str, str, str]) -> list[Tier]:
    return [
        Tier(notional_floor=Decimal(f), maintenance_rate=Decimal(m), initial_rate=Decimal(i))
        for f, m, i in rows
    ]


# Binance-style tier tables (floors and rates only; the cums are derived).
LISTINGS: dict[str, tuple[Decimal, list[Tier]]] = {
    "BTCUSDT": (
        Decimal("50000"),
        tiers(
            ("0", "0.004", "0.008"),
            ("50000", "0.005", "0.01"),
            ("250000", "0.01", "0.02"),
            ("1000000", "0.025", "0.05"),
        ),
    ),
    "ETHUSDT": (Decimal("3000"), tiers(("0", "0.005", "0.01"), ("100000", "0.0065", "0.0133"))),
    "SOLUSDT": (Decimal("150"), tiers(("0", "0.01", "0.02"), ("50000", "0.02", "0.04"))),
}
# The quantity step each instrument trades in (a trade or an order finer than it is refused).
QUANTITY_STEP = Decimal("0.001")


def listing_records() -> list[dict[str, Any]]:
    """The reference feed's records that list the settlement asset and every instrument, first mark included."""
    records: list[dict[str, Any]] = [
        {"kind": "asset", "asset": SETTLEMENT, "decimals": SETTLEMENT_DECIMALS, "price": "1"}
    ]
    for instrument, (price, table) in LISTINGS.items():
        records.append(
            {
                "kind": "instrument",
                "instrument": instrument,
                "quote_asset": SETTLEMENT,
                "quantity_step": str(QUANTITY_STEP),
                "tiers": [tier.model_dump(mode="json") for tier in table],
                "mark_price": str(price),
            }
        )
    return records
