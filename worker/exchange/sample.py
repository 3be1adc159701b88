"""The sample exchange, loaded through the public feeds: what ``margin-call up --sample-exchange`` starts with.

``load`` builds any small exchange the way an exchange's own systems would
fill the ledger: reference data (the listings, then one account record per
trader) through ``POST /v1/reference``, each trader's first collateral through
the movements feed, their positions as fills through the trades feed, the
insurance fund through ``POST /v1/insurance-fund/contributions``, and the
marks through the marks feed (``Market.publish``, which also quotes the venue
simulator's books around them). Every id is derived from what it is, so a
second load on the same ledger changes nothing: it answers duplicates, and the
marks, which may have moved since, are left as they are.

The sample itself (``SAMPLE_ACCOUNTS``) is the README's walkthrough: three
traders long 1 BTC who fall short of maintenance when BTC drops to 46,000
(``acct-42``, ``acct-44``, ``acct-7``), one long 2 BTC who falls below the hard
threshold and is liquidated at once (``acct-9``), and two the crash leaves
healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx

from worker.exchange.api import ApiClient, all_applied
from worker.exchange.listings import LISTINGS, SETTLEMENT, listing_records
from worker.exchange.market import BookShape, Market, VenueAdmin, shape

log = logging.getLogger("margin_call.exchange")
D = Decimal
OPERATOR = "sample-exchange"


@dataclass(frozen=True)
class Account:
    """A trader: the collateral they start with and the fills that built their positions."""

    account_id: str
    collateral: Decimal
    positions: tuple[tuple[str, Decimal, Decimal], ...]  # (instrument, signed quantity, entry price)


def reference_records(accounts: Sequence[Account]) -> list[dict[str, Any]]:
    records = listing_records()
    records += [
        {"kind": "account", "account_id": a.account_id, "settlement_currency": SETTLEMENT} for a in accounts
    ]
    return records


def collateral_records(accounts: Sequence[Account]) -> list[dict[str, Any]]:
    return [
        {
            "movement_id": f"initial-collateral:{a.account_id}",
            "account_id": a.account_id,
            "kind": "collateral_in",
            "asset": SETTLEMENT,
            "amount": str(a.collateral),
        }
        for a in accounts
        if a.collateral > 0
    ]


def trade_records(accounts: Sequence[Account]) -> list[dict[str, Any]]:
    return [
        {
            "trade_id": f"opening-fill:{a.account_id}:{instrument}",
            "account_id": a.account_id,
            "instrument": instrument,
            "side": "buy" if quantity > 0 else "sell",
            "quantity": str(abs(quantity)),
            "price": str(entry),
        }
        for a in accounts
        for instrument, quantity, entry in a.positions
    ]


async def load(
    market: Market,
    accounts: Sequence[Account],
    marks: dict[str, Decimal],
    insurance_fund: Decimal,
    operator: str = OPERATOR,
) -> bool:
    """Load ``accounts`` through the feeds (see the module's docstring); False if it was loaded before."""
    api = market.api
    reference = all_applied("/v1/reference", await api.reference(reference_records(accounts), operator))
    all_applied("/v1/feeds/movements", await api.movements(collateral_records(accounts)))
    all_applied("/v1/feeds/trades", await api.trades(trade_records(accounts)))
    if insurance_fund > 0:
        await api.fund_insurance("initial-capital", SETTLEMENT, insurance_fund, operator)
    fresh = reference.applied > 0
    if fresh:
        await market.publish(marks)
    else:
        await market.tick()  # the marks as the ledger has them; the books quoted around them
    return fresh


# --- the sample

SAMPLE_ACCOUNTS = (
    # 1 BTC from 49,800 on 3,950 USDT: at 46,000, equity 150 against maintenance 184.
    *(Account(name, D(3950), (("BTCUSDT", D(1), D(49800)),)) for name in ("acct-42", "acct-44", "acct-7")),
    # 2 BTC from 49,900 on 7,900 USDT: at 46,000, equity 100, below half of maintenance (410).
    Account("acct-9", D(7900), (("BTCUSDT", D(2), D(49900)),)),
    Account("acct-1", D(20000), (("BTCUSDT", D("0.5"), D(48000)), ("ETHUSDT", D(10), D(2900)))),
    Account("acct-3", D(2000), (("SOLUSDT", D(-100), D(155)),)),
)
SAMPLE_MARKS = {instrument: price for instrument, (price, _) in LISTINGS.items()}
SAMPLE_INSURANCE_FUND = D(100_000)
# Within 0.05 % of the mark (the standard policy's slippage), 0.7 BTC, 10 ETH, 200 SOL a side;
# more further out, where a liquidation order's limit does not reach.
SAMPLE_BOOKS: dict[str, BookShape] = {
    "BTCUSDT": shape(
        ("0.0001", "0.2"), ("0.0002", "0.2"), ("0.0004", "0.3"), ("0.001", "1"), ("0.0025", "3")
    ),
    "ETHUSDT": shape(("0.0001", "3"), ("0.0002", "3"), ("0.0004", "4"), ("0.001", "20"), ("0.0025", "50")),
    "SOLUSDT": shape(("0.0001", "50"), ("0.0002", "50"), ("0.0004", "100"), ("0.001", "500")),
}
# The sample market's tick: marks re-published when 15 s old (stale after 60 s), books requoted.
TICK_SECONDS = 5.0


@asynccontextmanager
async def sample_exchange(api_url: str, token: str, venue_url: str) -> AsyncIterator[Market]:
    """The sample loaded, and its market ticking until the block ends."""
    async with (
        ApiClient.connect(api_url, token) as api,
        httpx.AsyncClient(base_url=venue_url, timeout=10) as venue_http,
    ):
        market = Market(api, VenueAdmin(venue_http), SAMPLE_BOOKS, republish_after=timedelta(seconds=15))
        fresh = await load(market, SAMPLE_ACCOUNTS, SAMPLE_MARKS, SAMPLE_INSURANCE_FUND)
        log.info("sample exchange %s", "loaded" if fresh else "already loaded; marks kept as they are")
        stop = asyncio.Event()
        ticking = asyncio.create_task(market.run(stop, TICK_SECONDS))
        try:
            yield market
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
