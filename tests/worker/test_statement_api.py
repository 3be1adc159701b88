"""A case's statement over real HTTP and from the real command line: JSON, the printable page, the text."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio

from activities.ledger import case_statement, collateral_account, post_transfer
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
    notice_kinds,
    stack_env,
    wait_state,
)
from worker.api import create_app
from worker.serving import serving
from workflows.client import MarginCallClient
from workflows.contract import CaseState, StaffAction

POLICIES_FILE.write_text(TEST_POLICIES.model_dump_json())
READ = auth("read-token-0123456789")
SNEAKY = StaffAction(operator="mallory", reason="<script>alert('x')</script> & a wire")


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack: CaseStack) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    app = create_app(MarginCallClient(stack.client), stack.pool, TOKENS, TEST_POLICIES)
    async with (
        serving(app, port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        yield client


async def two_cases(stack: CaseStack) -> tuple[str, str, str]:
    """An account with an old case (CURED at once) and a latest one (forced, then liquidated)."""
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "stmt-http", "700")
    old = await asyncio.wait_for((await api.open_case(account, "call-1", fast_policy())).result(), 30)
    assert old.state == CaseState.CURED
    async with stack.pool.acquire() as conn:
        await post_transfer(
            conn,
            f"{account}-fee",
            collateral_account(account, "USDT"),
            "external:USDT",
            "USDT",
            Decimal(150),
            "test",
        )
    handle = await api.open_case(account, "call-2", fast_policy(deadline=timedelta(seconds=60)))
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    await api.force_liquidation(account, SNEAKY)
    latest = await asyncio.wait_for(handle.result(), 30)
    await notice_kinds(stack, account)
    return account, old.case_id, latest.case_id


async def test_statement_as_json_and_as_a_printable_page(stack: CaseStack, api: httpx.AsyncClient) -> None:
    account, old, latest = await two_cases(stack)
    answer = await api.get(f"/v1/cases/{account}/statement", headers=READ)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["case_id"] == latest and body["stages"] and body["opening"]["recorded"]
    assert isinstance(body["fees_to_insurance_fund"], str)  # money as strings
    expected = (await case_statement(stack.pool, account)).model_dump(mode="json", exclude={"generated_at"})
    assert {k: v for k, v in body.items() if k != "generated_at"} == expected
    older = await api.get(f"/v1/cases/{account}/statement", params={"case_id": old}, headers=READ)
    assert older.status_code == 200 and older.json()["case_id"] == old and older.json()["state"] == "CURED"

    page = await api.get(f"/v1/cases/{account}/statement.html", headers=READ)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert latest in html and "@media print" in html and "@page" in html
    assert not re.search(r"<(script|link|img|iframe)\b", html, re.IGNORECASE)  # nothing loaded from anywhere
    assert "&lt;script&gt;" in html  # the operator's words are shown, never run
    assert "force_liquidation" in html and "mallory" in html
    for heading in ("What happened", "At opening", "Notices to the trader", "Liquidation", "At the close"):
        assert f">{heading}<" in html
    old_page = await api.get(f"/v1/cases/{account}/statement.html", params={"case_id": old}, headers=READ)
    assert old_page.status_code == 200 and "no margin call was made" in old_page.text


@pytest.mark.parametrize("suffix", ["statement", "statement.html"])
async def test_statement_refusals_name_the_field(
    stack: CaseStack, api: httpx.AsyncClient, suffix: str
) -> None:
    other = await account_with(stack, "stmt-other", "700")
    await asyncio.wait_for(
        (await MarginCallClient(stack.client).open_case(other, "call-1", fast_policy())).result(), 30
    )
    lonely = await account_with(stack, "stmt-lonely", "700")
    cases = [
        (f"/v1/cases/{other}/{suffix}", {}, {}, 401, "authorization"),
        (f"/v1/cases/{other}/{suffix}", {}, auth("act-token-0123456789"), 403, "cases:read"),
        (f"/v1/cases/nobody-here/{suffix}", {}, READ, 404, "account_id"),
        (f"/v1/cases/{lonely}/{suffix}", {}, READ, 404, "account_id"),
        (f"/v1/cases/{lonely}/{suffix}", {"case_id": f"{other}/call-1"}, READ, 404, "case_id"),
        (f"/v1/cases/{other}/{suffix}", {"case_id": "no spaces allowed"}, READ, 422, "case_id"),
    ]
    for path, params, headers, status, field in cases:
        answer = await api.get(path, params=params, headers=headers)
        assert answer.status_code == status, (path, params, answer.text)
        detail = answer.json()["detail"]
        assert detail.startswith(field) or field in detail, detail
        assert other not in detail or (status == 404 and field == "case_id" and "for this account" in detail)


async def test_statement_from_the_command_line(stack: CaseStack) -> None:
    env = stack_env(stack)
    account, old, latest = await two_cases(stack)
    code, out, err = await margin_call(env, "cases", "statement", account)
    assert code == 0, err
    assert out.startswith(f"STATEMENT of margin call {latest}")
    for part in (
        "AT OPENING",
        "policy standard version 1",
        "LIQUIDATION",
        "stage 1",
        "force_liquidation by mallory",
    ):
        assert part in out, part
    code, out, err = await margin_call(env, "cases", "statement", account, "--case-id", old, "--json")
    assert code == 0, err
    assert json.loads(out)["case_id"] == old
    code, out, err = await margin_call(env, "cases", "statement", account, "--case-id", "not a case")
    assert code == 2 and "case_id" in err and out == ""
    code, out, err = await margin_call(env, "cases", "statement", "nobody-here")
    assert code == 2 and "account_id" in err
