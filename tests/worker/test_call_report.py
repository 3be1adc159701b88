"""The regulator's daily record of margin calls, from real cases: the CLI and the API, CSV and JSON alike."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import httpx
import pytest_asyncio

from activities.ledger import PostgresDeposits
from tests.helpers import (
    POLICIES_FILE,
    TEST_POLICIES,
    TOKENS,
    CaseStack,
    account_with,
    auth,
    fast_policy,
    free_port,
    margin_call,
    stack_env,
    wait_state,
)
from worker.api import create_app
from worker.serving import serving
from workflows.client import MarginCallClient
from workflows.contract import CaseState, DeadlineExtension, Deposit, Waiver

POLICIES_FILE.write_text(TEST_POLICIES.model_dump_json())
READ = auth("read-token-0123456789")


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack: CaseStack) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    app = create_app(MarginCallClient(stack.client), stack.pool, TOKENS, TEST_POLICIES)
    async with (
        serving(app, port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        yield client


async def calls_of_several_outcomes(stack: CaseStack) -> dict[str, str]:
    """Real cases, one per way a call ends (and one still open); the healthy account makes no call."""
    cases = MarginCallClient(stack.client)
    accounts = {
        kind: await account_with(stack, f"rep-{kind}", "550")  # shortfall 48 USDT
        for kind in ("deposit", "liquidation", "waiver", "open")
    }
    healthy = await account_with(stack, "rep-healthy", "700")
    slow = fast_policy(deadline=timedelta(minutes=10))
    handles = {
        kind: await cases.open_case(
            account, "rep-1", fast_policy(deadline=timedelta(seconds=1)) if kind == "liquidation" else slow
        )
        for kind, account in accounts.items()
    }
    healthy_case = await cases.open_case(healthy, "rep-1", slow)
    for kind in ("deposit", "waiver", "open"):
        await wait_state(handles[kind], CaseState.AWAITING_DEPOSIT)

    deposit = Deposit(
        account_id=accounts["deposit"], deposit_id=f"{accounts['deposit']}-w", amount=D(60), currency="USDT"
    )
    await cases.report_deposit(PostgresDeposits(stack.pool), deposit)
    await cases.waive(accounts["waiver"], Waiver(operator="erin", reason="goodwill, approved by risk"))
    status = await wait_state(handles["open"], CaseState.AWAITING_DEPOSIT)
    assert status.deadline is not None
    later = DeadlineExtension(
        operator="dana", reason="wire in transit", new_deadline=status.deadline + timedelta(minutes=5)
    )
    await cases.extend_deadline(accounts["open"], later)
    cured, liquidated, waived = await asyncio.gather(
        *(handles[k].result() for k in ("deposit", "liquidation", "waiver"))
    )
    assert (cured.state, waived.state) == (CaseState.CURED, CaseState.WAIVED)
    assert liquidated.state in (CaseState.RESTORED, CaseState.CLOSED_OUT, CaseState.BANKRUPT)
    assert (await healthy_case.result()).state == CaseState.CURED
    return {**accounts, "healthy": healthy}


async def test_the_days_calls_read_the_same_from_the_cli_and_the_api(
    stack: CaseStack, api: httpx.AsyncClient
) -> None:
    accounts = await calls_of_several_outcomes(stack)
    ours = {account: kind for kind, account in accounts.items()}
    try:
        env = stack_env(stack)
        async with stack.pool.acquire() as conn:
            called = await conn.fetch(
                "SELECT DISTINCT (opened_at AT TIME ZONE 'UTC')::date AS day FROM margin_call_cases"
                " WHERE account_id = ANY($1::text[])",
                list(ours),
            )
        days = sorted(r["day"] for r in called)  # one day, or two if the test ran across midnight UTC
        api_json: list[dict[str, Any]] = []
        api_csv: list[dict[str, str]] = []
        cli_json: list[dict[str, Any]] = []
        cli_csv: list[dict[str, str]] = []
        for day in days:
            answer = await api.get("/v1/reports/calls", params={"day": day.isoformat()}, headers=READ)
            assert answer.status_code == 200, answer.text
            document = answer.json()
            assert document["day"] == day.isoformat() and document["timezone"] == "UTC"
            api_json += document["calls"]
            as_csv = await api.get(
                "/v1/reports/calls", params={"day": day.isoformat(), "format": "csv"}, headers=READ
            )
            assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
            api_csv += list(csv.DictReader(io.StringIO(as_csv.text)))
            code, out, err = await margin_call(env, "report", "calls", "--day", day.isoformat(), "--json")
            assert code == 0, err
            cli_json += json.loads(out)["calls"]
            code, out, err = await margin_call(env, "report", "calls", "--day", day.isoformat())
            assert code == 0, err
            cli_csv += list(csv.DictReader(io.StringIO(out)))
    finally:
        await MarginCallClient(stack.client).handle(accounts["open"]).terminate("report test done")

    def mine(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {ours[r["account_id"]]: r for r in records if r["account_id"] in ours}

    calls = mine(api_json)
    assert set(calls) == {"deposit", "liquidation", "waiver", "open"}  # the healthy account made no call
    assert mine(cli_json) == calls
    cells = {
        kind: {k: "" if v is None else str(v) for k, v in record.items()} for kind, record in calls.items()
    }
    assert mine(api_csv) == cells and mine(cli_csv) == cells  # CSV and JSON agree, cell for cell

    for record in calls.values():
        # Amounts are decimal strings: the shortfall at opening, and the deposit asked (rounded up).
        assert isinstance(record["call_amount"], str) and D(record["call_amount"]) == D(48)
        assert isinstance(record["deposit_asked"], str) and D(record["deposit_asked"]) == D(48)
        called_at = datetime.fromisoformat(record["called_at"])
        assert called_at.utcoffset() == timedelta(0)
    due = {
        kind: datetime.fromisoformat(r["due_at"]) - datetime.fromisoformat(r["called_at"])
        for kind, r in calls.items()
    }
    assert due == {
        "deposit": timedelta(minutes=10),
        "liquidation": timedelta(seconds=1),
        "waiver": timedelta(minutes=10),
        "open": timedelta(minutes=10),
    }

    assert (calls["deposit"]["met_by"], calls["deposit"]["outcome"]) == ("deposit", "CURED")
    assert D(calls["deposit"]["deposited"]) == D(60) and calls["deposit"]["met_at"]
    assert calls["liquidation"]["met_by"] == "liquidation" and calls["liquidation"]["liquidation_stages"] >= 1
    assert D(calls["liquidation"]["sold_notional"]) > 0
    assert (calls["waiver"]["met_by"], calls["waiver"]["waived_by"]) == ("waiver", "erin")
    still = calls["open"]
    assert (still["met_by"], still["met_at"], still["outcome"]) == ("still open", None, "OPEN")
    assert still["extensions"] == 1
    assert datetime.fromisoformat(still["extended_to"]) - datetime.fromisoformat(
        still["due_at"]
    ) == timedelta(minutes=5)


async def test_a_bad_day_is_refused_naming_it(stack: CaseStack, api: httpx.AsyncClient) -> None:
    for day in ("2025-02-30", "28-11-2025", "2025-11-28T00:00:00Z", "", "x" * 41):
        answer = await api.get("/v1/reports/calls", params={"day": day}, headers=READ)
        assert answer.status_code == 422 and answer.json()["detail"].startswith("day:"), (day, answer.text)
    missing = await api.get("/v1/reports/calls", headers=READ)
    assert missing.status_code == 422 and missing.json()["detail"].startswith("day:"), missing.text
    odd = await api.get("/v1/reports/calls", params={"day": "2025-11-28", "format": "xml"}, headers=READ)
    assert odd.status_code == 422 and odd.json()["detail"].startswith("format:"), odd.text
    anonymous = await api.get("/v1/reports/calls", params={"day": "2025-11-28"})
    assert anonymous.status_code == 401
    wrong = await api.get(
        "/v1/reports/calls", params={"day": "2025-11-28"}, headers=auth("open-token-0123456789")
    )
    assert wrong.status_code == 403
    last = await api.get("/v1/reports/calls", params={"day": date.max.isoformat()}, headers=READ)
    assert last.status_code == 200 and last.json()["calls"] == []

    code, out, err = await margin_call(stack_env(stack), "report", "calls", "--day", "2025-13-01")
    assert code == 2 and "argument --day" in err and out == ""
