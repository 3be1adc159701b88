"""The demo's exchange: traders built to land on every path, opened through the feeds, then a crash.

Each trader's collateral is chosen so that equity at the crash marks is a
chosen multiple of maintenance (``Persona.equity_to_maintenance``): above 1
the crash leaves them healthy, below 1 it opens a case, below the policy's hard
threshold (0.5) it liquidates at once, below 0 it leaves a loss for the
insurance fund. Everything reaches the ledger through the HTTP API
(``worker.exchange.sample.load``) and the crash and rebound through the marks
feed; liquidation orders meet the books the market quotes around the marks in
the venue simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_UP, Decimal

from worker.exchange.listings import LISTINGS
from worker.exchange.market import BookShape, shape
from worker.exchange.sample import Account
from workflows.domain import margin
from workflows.domain.portfolio import Position

D = Decimal
OPERATOR = "demo-exchange"
CRASH = {"BTCUSDT": D("46500"), "ETHUSDT": D("2700"), "SOLUSDT": D("128")}
REBOUND = {"SOLUSDT": D("140")}
OPENING_MARKS = {instrument: price for instrument, (price, _) in LISTINGS.items()}
# Small on purpose: the bankruptcies exhaust it, so the uncovered loss left for
# auto-deleveraging shows too.
INSURANCE_FUND = D("600")
# The books the market quotes around each mark, requoted every ``TICK_SECONDS``: thin near the
# mark, so that a crash's orders share them and some fill only in part; deeper further out, beyond
# the limit a liquidation order may reach (the demo policy's slippage, 0.1 %).
BOOKS: dict[str, BookShape] = {
    "BTCUSDT": shape(
        ("0.0002", "0.15"),
        ("0.0004", "0.2"),
        ("0.0007", "0.3"),
        ("0.001", "0.35"),
        ("0.003", "3"),
        ("0.01", "10"),
    ),
    "ETHUSDT": shape(("0.0002", "1"), ("0.0004", "1.5"), ("0.0007", "2"), ("0.001", "3"), ("0.003", "50")),
    "SOLUSDT": shape(("0.0002", "10"), ("0.0004", "20"), ("0.0007", "30"), ("0.001", "40"), ("0.003", "500")),
}
TICK_SECONDS = 1.5


@dataclass(frozen=True)
class Persona:
    """A trader, how far below maintenance the crash leaves them, and what they (or staff) do."""

    name: str
    instrument: str
    notional: Decimal
    equity_to_maintenance: Decimal
    plays: str  # deposit | unannounced | waive | extend | recover | none

    @property
    def breached(self) -> bool:
        return self.equity_to_maintenance < 1


PERSONAS = [
    *(Persona(f"steady-{i}", "BTCUSDT", D(20000 + 5000 * i), D("2.5"), "none") for i in range(4)),
    *(Persona(f"depositor-{i}", "ETHUSDT", D(30000 + 4000 * i), D("0.8"), "deposit") for i in range(4)),
    Persona("depositor-unannounced", "BTCUSDT", D(40000), D("0.75"), "unannounced"),
    *(Persona(f"restored-{i}", "BTCUSDT", D(30000 + 5000 * i), D("0.9"), "none") for i in range(3)),
    *(Persona(f"closed-out-{i}", "BTCUSDT", D(25000 + 5000 * i), D("0.6"), "none") for i in range(2)),
    Persona("hard-line", "ETHUSDT", D(45000), D("0.3"), "none"),
    *(Persona(f"bankrupt-{i}", "BTCUSDT", D(60000 + 20000 * i), D("-1.5"), "none") for i in range(2)),
    Persona("waived-by-staff", "ETHUSDT", D(30000), D("0.9"), "waive"),
    Persona("extended-by-staff", "BTCUSDT", D(30000), D("0.9"), "extend"),
    *(Persona(f"recovers-{i}", "SOLUSDT", D(10000 + 2000 * i), D("0.7"), "recover") for i in range(2)),
]


def account_of(persona: Persona) -> Account:
    """The trader's account: collateral such that equity at crash marks is the persona's multiple of maintenance."""
    price, tiers = LISTINGS[persona.instrument]
    quantity = (persona.notional / price).quantize(D("0.001"))
    crashed = Position(
        instrument=persona.instrument,
        quantity=quantity,
        entry_price=price,
        mark_price=CRASH[persona.instrument],
        tiers=tiers,
    )
    maintenance = margin.maintenance_margin(crashed)
    collateral = persona.equity_to_maintenance * maintenance - margin.unrealised_pnl(crashed)
    return Account(
        account_id=persona.name,
        collateral=collateral.quantize(D("0.01"), rounding=ROUND_UP),
        positions=((persona.instrument, quantity, price),),
    )


ACCOUNTS = [account_of(p) for p in PERSONAS]
