"""The feeds over real HTTP (scopes, the one error shape, per-record answers) and ``margin-call feed``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest_asyncio
from temporalio.client import Client

from tests.helpers import TEST_POLICIES, auth, free_port, margin_call
from worker.api import MAX_FEED_BODY_BYTES, create_app
from worker.serving import serving
from workflows.client import MarginCallClient

TOKENS = {
    "feed-token-0123456789": frozenset({"feed:write"}),
    "admin-token-0123456789": frozenset({"admin"}),
    "read-token-0123456789": frozenset({"cases:read"}),
}
FEED, ADMIN = auth("feed-token-0123456789"), auth("admin-token-0123456789")
AS_OF = "2030-01-01T00:00:00+00:00"


@pytest_asyncio.fixture(loop_scope="session")
async def api(venue: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    # The feeds never ask Temporal: a client that connects only when used is enough.
    cases = MarginCallClient(await Client.connect("127.0.0.1:1", lazy=True))
    port = free_port()
    app = create_app(cases, venue, TOKENS, TEST_POLICIES)
    async with (
        serving(app, port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        yield client


async def test_feeds_over_http_with_scopes(venue: asyncpg.Pool, api: httpx.AsyncClient) -> None:
    account = {"kind": "account", "account_id": "h-1", "settlement_currency": "USDT"}
    no_admin = await api.post("/v1/reference", json={"operator": "ops", "records": [account]}, headers=FEED)
    assert no_admin.status_code == 403 and no_admin.json() == {
        "detail": "authorization: this token lacks the admin scope"
    }
    listed = await api.post("/v1/reference", json={"operator": "ops", "records": [account]}, headers=ADMIN)
    assert listed.status_code == 200 and listed.json()["applied"] == 1, listed.text

    fund = {
        "movement_id": "h-f",
        "account_id": "h-1",
        "kind": "collateral_in",
        "asset": "USDT",
        "amount": "1000",
    }
    assert (await api.post("/v1/feeds/movements", json={"records": [fund]}, headers=ADMIN)).status_code == 403
    assert (await api.post("/v1/feeds/movements", json={"records": [fund]})).status_code == 401
    moved = await api.post("/v1/feeds/movements", json={"records": [fund]}, headers=FEED)
    assert moved.json()["applied"] == 1

    trade = {
        "trade_id": "h-t1",
        "account_id": "h-1",
        "instrument": "BTCUSDT",
        "side": "buy",
        "quantity": "0.01",
        "price": "50000",
        "fee": "0.2",
    }
    bad = {**trade, "trade_id": "h-t2", "price": "NaN"}
    traded = await api.post("/v1/feeds/trades", json={"records": [trade, bad]}, headers=FEED)
    assert traded.status_code == 200
    body = traded.json()
    assert (body["applied"], body["refused"]) == (1, 1)
    assert body["records"][1]["key"] == "h-t2" and body["records"][1]["detail"].startswith("price:")
    again = await api.post("/v1/feeds/trades", json={"records": [trade]}, headers=FEED)
    assert again.json()["duplicate"] == 1

    marks = [
        {"instrument": "BTCUSDT", "price": "50500", "as_of": AS_OF},
        {"instrument": "BTCUSDT", "price": "49000", "as_of": "2029-12-31T23:59:00+00:00"},
    ]
    marked = await api.post("/v1/feeds/marks", json={"records": marks}, headers=FEED)
    assert [r["status"] for r in marked.json()["records"]] == ["applied", "ignored"]

    withdrawal = {"withdrawal_id": "h-w", "account_id": "h-1", "asset": "USDT", "amount": "2000"}
    refused = await api.post("/v1/feeds/withdrawals", json={"records": [withdrawal]}, headers=FEED)
    assert refused.json()["records"][0]["detail"].startswith("amount:")

    view = {"account_id": "h-1", "positions": [{"instrument": "BTCUSDT", "quantity": "0.02"}]}
    reconciled = await api.post("/v1/feeds/reconciliation", json=view, headers=FEED)
    assert [d["field"] for d in reconciled.json()["differences"]] == [
        "positions.BTCUSDT.quantity",
        "collateral.USDT",
    ]
    unknown = await api.post("/v1/feeds/reconciliation", json={"account_id": "nobody"}, headers=FEED)
    assert unknown.status_code == 404 and unknown.json() == {"detail": "account_id: no such account"}

    not_a_batch = await api.post("/v1/feeds/trades", json={"records": "x"}, headers=FEED)
    assert not_a_batch.status_code == 422 and not_a_batch.json()["detail"].startswith("records:")
    # A feed's batch may be far larger than another route's body (thousands of records), not unbounded.
    as_json = {**FEED, "content-type": "application/json"}
    spaced = await api.post(
        "/v1/feeds/trades", content=b'{"records": [' + b" " * 70_000 + b"]}", headers=as_json
    )
    assert spaced.status_code == 200 and spaced.json()["records"] == [], spaced.text
    too_big = await api.post(
        "/v1/feeds/marks", content=b'{"records": [' + b" " * MAX_FEED_BODY_BYTES + b"]}", headers=FEED
    )
    assert too_big.status_code == 413 and too_big.json()["detail"].startswith("body: ")


async def test_feed_command_loads_files_and_names_bad_records(
    venue: asyncpg.Pool, ledger_url: str, tmp_path: Path
) -> None:
    env = {"MARGIN_CALL_DATABASE_URL": ledger_url}
    reference = tmp_path / "reference.json"
    reference.write_text(
        json.dumps([{"kind": "account", "account_id": "c-1", "settlement_currency": "USDT"}])
    )
    code, out, err = await margin_call(env, "feed", "reference", str(reference))
    assert (
        code == 2
        and err.strip() == "error: --operator: required for reference data (the audit names who changed it)"
    )
    code, out, err = await margin_call(env, "feed", "reference", str(reference), "--operator", "ops")
    assert code == 0, err
    assert "applied 1" in out

    trades = tmp_path / "trades.jsonl"
    line = {
        "trade_id": "c-t1",
        "account_id": "c-1",
        "instrument": "BTCUSDT",
        "side": "sell",
        "quantity": "0.01",
        "price": "50000",
    }
    trades.write_text(
        json.dumps(line) + "\n\n" + json.dumps({**line, "trade_id": "c-t2", "side": "sideways"}) + "\n"
    )
    code, out, err = await margin_call(env, "feed", "trades", str(trades))
    assert code == 2 and err.strip().startswith("error: record 1 (c-t2): side:"), err
    assert await venue.fetchval("SELECT count(*) FROM trades") == 0  # nothing of the file written

    trades.write_text(
        json.dumps(line) + "\n" + json.dumps({**line, "trade_id": "c-t2", "account_id": "nobody"})
    )
    code, out, err = await margin_call(env, "feed", "trades", str(trades), "--json")
    assert code == 2 and err.strip() == "error: record 1 (c-t2): account_id: no account 'nobody'", err
    assert json.loads(out)["applied"] == 1
    assert await venue.fetchval("SELECT quantity FROM positions WHERE account_id = 'c-1'") == Decimal("-0.01")

    broken = tmp_path / "marks.jsonl"
    broken.write_text('{"instrument": "BTCUSDT", "price": "1", "as_of": "2030-01-01T00:00:00Z"}\n{oops\n')
    code, out, err = await margin_call(env, "feed", "marks", str(broken))
    assert code == 2 and err.strip() == "error: line 2: not valid JSON"
