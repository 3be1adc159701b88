"""Feed throughput: trades and marks through the HTTP API into the ledger, as a crash brings them.

A crash brings thousands of trades and marks a second, and every figure a
case reads (equity, shortfall, a stage's fills) is only as fresh as the
ledger's intake of them. So the intake is measured where an exchange's systems
meet it: the real app (``worker.api.create_app``, served by
``worker.serving.serving`` on a loopback port, as ``margin-call api`` serves
it) over a pool of the production size, on a database of its own beside the
bench's ledger, so nothing booked here reaches the crash phases' scans.

Bodies are encoded before the clock starts, and the client is httpx over
aiohttp (the notifier's, for its lower CPU per request) in this same process:
the figures pay for one interpreter both serving and calling, so they are a
floor for an API process of its own.

The work is split into streams as an exchange partitions its feeds, each
stream's requests one after another and the streams side by side: trades by
account (two batches on one account would queue on its row lock), marks by
instrument (the ledger applies only an instrument's newest mark in a batch and
answers the rest ignored, so a batch is one tick: a mark per instrument).
Every record must come back applied, and the ledger is counted afterwards;
anything else stops the bench.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import httpx
from httpx_aiohttp import HttpxAiohttpClient
from temporalio.client import Client

from tools.bench.harness import fresh_database, pct
from worker.api import MAX_BODY_BYTES, create_app
from worker.serving import serving
from worker.stack import free_port
from workflows.client import MarginCallClient

D = Decimal
# Per second, from issue 12: a crash brings thousands of trades and marks a second.
TRADES_GOAL = 2_000.0
MARKS_GOAL = 10_000.0
TRADES_PER_REQUEST = 500
MARKS_PER_REQUEST = 500
TRADES_PER_ACCOUNT = 12  # three fills on each of four instruments
TICKS = 25  # marks per instrument
# Instruments the accounts trade, at about their prices; the marks feed also covers listings of its own.
MAJORS = {
    "BTCUSDT": D("50000"),
    "ETHUSDT": D("3000"),
    "SOLUSDT": D("150"),
    "BNBUSDT": D("600"),
    "XRPUSDT": D("0.6"),
    "DOGEUSDT": D("0.15"),
    "ADAUSDT": D("0.45"),
    "AVAXUSDT": D("35"),
}
STEP = D("0.001")
TIERS = [
    {"notional_floor": "0", "maintenance_rate": "0.005", "initial_rate": "0.01"},
    {"notional_floor": "100000", "maintenance_rate": "0.01", "initial_rate": "0.02"},
]


@dataclass(frozen=True)
class Body:
    records: int
    content: bytes


@dataclass(frozen=True)
class Sent:
    records: int
    most_per_request: int
    streams: int
    seconds: float
    latencies: list[float]

    def figure(self, goal: float) -> dict[str, Any]:
        return {
            "records": self.records,
            "requests": len(self.latencies),
            "most_per_request": self.most_per_request,
            "streams": self.streams,
            "seconds": self.seconds,
            "per_second": self.records / self.seconds,
            "request_p50_ms": pct(self.latencies, 0.5) * 1000,
            "request_p99_ms": pct(self.latencies, 0.99) * 1000,
            "goal_per_second": goal,
        }


def text(value: Decimal) -> str:
    return format(value, "f")


def packed(
    records: Sequence[dict[str, Any]], most: int, envelope: dict[str, Any] | None = None
) -> list[Body]:
    """``records`` in request bodies of at most ``most`` records, each under the API's body cap.

    The cap (64 KiB) binds before ``most`` for wide records: a trade is about
    150 bytes, so a request holds about 430 of them, far from the ledger's
    ``MAX_BATCH`` of 10,000.
    """
    head = json.dumps({**(envelope or {}), "records": []}, separators=(",", ":"))[:-2].encode()
    bodies: list[Body] = []
    chunk: list[bytes] = []
    size = len(head) + 2
    for record in records:
        encoded = json.dumps(record, separators=(",", ":")).encode()
        if chunk and (len(chunk) == most or size + len(encoded) + 1 > MAX_BODY_BYTES):
            bodies.append(Body(len(chunk), head + b",".join(chunk) + b"]}"))
            chunk, size = [], len(head) + 2
        chunk.append(encoded)
        size += len(encoded) + 1
    if chunk:
        bodies.append(Body(len(chunk), head + b",".join(chunk) + b"]}"))
    return bodies


async def post(http: httpx.AsyncClient, path: str, body: Body, token: str) -> None:
    """One request, refused unless the ledger applied every record of it."""
    response = await http.post(
        path,
        content=body.content,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    if response.status_code != 200:
        raise RuntimeError(f"{path}: {response.status_code} {response.text[:500]}")
    answer = response.json()
    if answer["applied"] != body.records:
        others = [r for r in answer["records"] if r["status"] != "applied"]
        raise RuntimeError(
            f"{path}: {answer['applied']} of {body.records} applied"
            f" ({answer['duplicate']} duplicate, {answer['ignored']} ignored, {answer['refused']} refused);"
            f" first: {others[:1]}"
        )


async def streamed(http: httpx.AsyncClient, path: str, streams: list[list[Body]], token: str) -> Sent:
    """The streams side by side, each stream's requests one after another, timed from first to last."""
    latencies: list[float] = []

    async def stream(bodies: list[Body]) -> None:
        for body in bodies:
            begun = time.perf_counter()
            await post(http, path, body, token)
            latencies.append(time.perf_counter() - begun)

    begun = time.perf_counter()
    await asyncio.gather(*(stream(s) for s in streams))
    seconds = time.perf_counter() - begun
    sizes = [b.records for s in streams for b in s]
    return Sent(sum(sizes), max(sizes), len(streams), seconds, latencies)


def listings(n_instruments: int) -> list[str]:
    """The majors, then listings of their own for the marks feed up to ``n_instruments``."""
    return [*MAJORS, *(f"X{i:04d}USDT" for i in range(max(0, n_instruments - len(MAJORS))))]


def reference_records(accounts: list[str], instruments: list[str]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = [{"kind": "asset", "asset": "USDT", "decimals": 6, "price": "1"}]
    for i, name in enumerate(instruments):
        price = MAJORS.get(name, D(10 + i % 90))
        records.append(
            {
                "kind": "instrument",
                "instrument": name,
                "quote_asset": "USDT",
                "quantity_step": text(STEP),
                "tiers": TIERS,
                "mark_price": text(price),
            }
        )
    records += [{"kind": "account", "account_id": a, "settlement_currency": "USDT"} for a in accounts]
    return records


def trade_streams(accounts: list[str], streams: int, rng: random.Random) -> list[list[Body]]:
    """Each account opens a long or a short on four majors in three fills; fills in the engine's order.

    Only opening fills, so no trade realises PnL and the market's ledger
    account is never written; each pays a taker fee, so the fees account is,
    by every trade of every stream, as it is on an exchange.
    """
    majors = list(MAJORS)
    per_stream: list[list[dict[str, Any]]] = [[] for _ in range(streams)]
    for fill in range(TRADES_PER_ACCOUNT // 4):
        for i, account in enumerate(accounts):
            for j in range(4):
                instrument = majors[(i + j) % len(majors)]
                reference = MAJORS[instrument]
                price = (reference * D(1 + rng.uniform(-0.002, 0.002))).quantize(D("0.0001"))
                quantity = (D(rng.uniform(500, 5000)) / price).quantize(STEP, ROUND_DOWN) or STEP
                fee = (quantity * price * D("0.0004")).quantize(D("0.000001"), ROUND_DOWN)
                per_stream[i % streams].append(
                    {
                        "trade_id": f"ft-{account}-{j}-{fill}",
                        "account_id": account,
                        "instrument": instrument,
                        "side": "buy" if (i + j) % 2 == 0 else "sell",
                        "quantity": text(quantity),
                        "price": text(price),
                        "fee": text(fee),
                    }
                )
    return [packed(records, TRADES_PER_REQUEST) for records in per_stream]


def mark_streams(
    instruments: list[str], streams: int, rng: random.Random
) -> tuple[list[list[Body]], datetime]:
    """``TICKS`` ticks, each stream's instruments one request a tick, each ``as_of`` past the last.

    Also the last tick's moment, which every instrument's mark holds once all are applied.
    """
    start = datetime.now(UTC) + timedelta(seconds=1)  # after the listings' own marks
    prices = {name: MAJORS.get(name, D(10 + i % 90)) for i, name in enumerate(instruments)}
    bodies: list[list[Body]] = [[] for _ in range(streams)]
    last = start
    for tick in range(TICKS):
        last = start + timedelta(milliseconds=100 * tick)
        as_of = last.isoformat()
        for s in range(streams):
            marks = []
            for name in instruments[s::streams]:
                prices[name] = (prices[name] * D(1 + rng.uniform(-0.001, 0.001))).quantize(D("0.00001"))
                marks.append({"instrument": name, "price": text(prices[name]), "as_of": as_of})
            if marks:
                bodies[s] += packed(marks, MARKS_PER_REQUEST)
    return bodies, last


async def feed_throughput(url: str, temporal: Client, n: int, streams: int) -> dict[str, Any]:
    """Trades and marks for ``n`` accounts through the API, ``streams`` requests at a time.

    ``12 n`` trades; marks for ``n`` instruments (at least the majors, at most
    a full request per stream), ``TICKS`` each, so a small run still sends
    every kind of request and a large one fills them.
    """
    pool = await fresh_database(url, "feeds")
    feed, admin = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    app = create_app(
        MarginCallClient(temporal), pool, {feed: frozenset({"feed:write"}), admin: frozenset({"admin"})}
    )
    port = free_port()
    rng = random.Random(12)
    accounts = [f"feed-{i:05d}" for i in range(n)]
    instruments = listings(min(max(n, len(MAJORS)), streams * MARKS_PER_REQUEST))
    try:
        async with (
            serving(app, port),
            HttpxAiohttpClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as http,
        ):
            begun = time.perf_counter()
            for body in packed(reference_records(accounts, instruments), 500, {"operator": "bench"}):
                await post(http, "/v1/reference", body, admin)
            funding = [
                {
                    "movement_id": f"fund-{a}",
                    "account_id": a,
                    "kind": "collateral_in",
                    "asset": "USDT",
                    "amount": "100000",
                }
                for a in accounts
            ]
            for body in packed(funding, 500):
                await post(http, "/v1/feeds/movements", body, feed)
            setup = time.perf_counter() - begun
            trades = await streamed(http, "/v1/feeds/trades", trade_streams(accounts, streams, rng), feed)
            ticks, last = mark_streams(instruments, streams, rng)
            marks = await streamed(http, "/v1/feeds/marks", ticks, feed)
        async with pool.acquire() as conn:
            booked = await conn.fetchval("SELECT count(*) FROM trades")
            fresh = await conn.fetchval("SELECT count(*) FROM mark_prices WHERE as_of = $1", last)
    finally:
        await pool.close()
    if booked != trades.records or fresh != len(instruments):
        raise RuntimeError(
            f"the ledger holds {booked} of {trades.records} trades and {fresh} of {len(instruments)} fresh marks"
        )
    print(
        f"  feeds through the API: {trades.records:,} trades at {trades.records / trades.seconds:,.0f}/s,"
        f" {marks.records:,} marks at {marks.records / marks.seconds:,.0f}/s"
        f" ({streams} requests at a time; reference data and funding {setup:.1f} s)",
        flush=True,
    )
    return {
        "accounts": n,
        "instruments": len(instruments),
        "reference_and_funding_seconds": setup,
        "trades": trades.figure(TRADES_GOAL),
        "marks": marks.figure(MARKS_GOAL),
    }
