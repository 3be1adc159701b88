"""Halting and resuming an instrument through the API (scope ``admin``) and ``margin-call instruments``."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from activities.ledger import reference as exchange
from tests.helpers import (
    MARK,
    POLICIES_FILE,
    TEST_POLICIES,
    TOKENS,
    CaseStack,
    auth,
    free_port,
    margin_call,
    stack_env,
)
from worker.api import create_app
from worker.market import LISTINGS, SETTLEMENT
from worker.serving import serving
from workflows.client import MarginCallClient

ADMIN = "admin-token-0123456789"
POLICIES_FILE.write_text(TEST_POLICIES.model_dump_json())  # the CLI reads the operator's book at start


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack: CaseStack) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    tokens = {**TOKENS, ADMIN: frozenset({"admin"})}
    app = create_app(MarginCallClient(stack.client), stack.pool, tokens, TEST_POLICIES)
    async with (
        serving(app, port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        yield client


async def _instrument(stack: CaseStack) -> str:
    name = f"T{uuid.uuid4().hex[:10].upper()}USDT"
    async with stack.pool.acquire() as conn:
        await exchange.add_instrument(conn, name, SETTLEMENT, LISTINGS["BTCUSDT"][1], MARK)
    return name


async def _audit(stack: CaseStack, instrument: str) -> list[tuple[str, str, str]]:
    async with stack.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT action, operator, reason FROM instrument_halts WHERE instrument = $1 ORDER BY event_id",
            instrument,
        )
    return [tuple(r) for r in rows]


async def test_halt_and_resume_over_http(stack: CaseStack, api: httpx.AsyncClient) -> None:
    instrument = await _instrument(stack)
    body = {"operator": "ops@exchange", "reason": "wick under investigation"}
    url = f"/v1/instruments/{instrument}"
    # Scope: a token without admin is refused, nothing written.
    assert (await api.post(f"{url}/halt", json=body, headers=auth("act-token-0123456789"))).status_code == 403
    assert (await api.post(f"{url}/halt", json=body)).status_code == 401
    halted = await api.post(f"{url}/halt", json=body, headers=auth(ADMIN))
    assert halted.status_code == 200, halted.text
    assert halted.json()["changed"] is True and halted.json()["instrument"]["halted"] is True
    again = await api.post(f"{url}/halt", json=body, headers=auth(ADMIN))
    assert again.json()["changed"] is False
    listed = await api.get("/v1/instruments", params={"halted": "true"}, headers=auth(ADMIN))
    assert instrument in [i["instrument"] for i in listed.json()]
    # Bad input is named, nothing written.
    blank = await api.post(f"{url}/resume", json={"operator": "ops", "reason": " "}, headers=auth(ADMIN))
    assert blank.status_code == 422 and "reason" in blank.json()["detail"]
    missing = await api.post("/v1/instruments/NOPEUSDT/halt", json=body, headers=auth(ADMIN))
    assert missing.status_code == 404 and missing.json()["detail"].startswith("instrument:")
    bad_name = await api.post("/v1/instruments/bad name!/halt", json=body, headers=auth(ADMIN))
    assert bad_name.status_code == 422 and "instrument" in bad_name.json()["detail"]
    extra = await api.post(f"{url}/resume", json={**body, "force": True}, headers=auth(ADMIN))
    assert extra.status_code == 422 and "force" in extra.json()["detail"]
    resumed = await api.post(
        f"{url}/resume", json={"operator": "lead", "reason": "cleared"}, headers=auth(ADMIN)
    )
    assert resumed.json()["changed"] is True and resumed.json()["instrument"]["halted"] is False
    assert await _audit(stack, instrument) == [
        ("halt", "ops@exchange", "wick under investigation"),
        ("resume", "lead", "cleared"),
    ]


async def test_halt_and_resume_from_the_cli(stack: CaseStack) -> None:
    instrument = await _instrument(stack)
    env = stack_env(stack)
    code, out, err = await margin_call(
        env, "instruments", "halt", instrument, "--operator", "ops", "--reason", "outage", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["changed"] is True and json.loads(out)["instrument"]["halt_reason"] == "outage"
    code, out, _ = await margin_call(env, "instruments", "list", "--halted")
    assert code == 0 and f"{instrument}: HALTED" in out and "outage" in out
    code, _, err = await margin_call(
        env, "instruments", "halt", "NOPEUSDT", "--operator", "ops", "--reason", "x"
    )
    assert code == 2 and err.startswith("error: instrument:")
    code, _, err = await margin_call(
        env, "instruments", "resume", instrument, "--operator", "ops", "--reason", ""
    )
    assert code == 2 and "reason" in err
    code, _, err = await margin_call(env, "instruments", "resume", instrument, "--operator", "ops")
    assert code == 2 and "--reason" in err
    code, out, err = await margin_call(
        env, "instruments", "resume", instrument, "--operator", "ops", "--reason", "cleared"
    )
    assert code == 0 and out.startswith("resumed:"), err
    assert [a for a, _, _ in await _audit(stack, instrument)] == ["halt", "resume"]
