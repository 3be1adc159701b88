"""The HTTP API over real HTTP: every route, every status code, idempotent repeats."""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio
from starlette.types import Message, Receive, Scope, Send

from tests.helpers import TEST_POLICIES, TOKENS, CaseStack, account_with, auth, free_port, wait_state
from worker.api import MAX_BODY_BYTES, create_app
from worker.serving import BodyLimit, serving
from workflows.client import MarginCallClient
from workflows.contract import CaseState
from workflows.domain.policies import CasePolicy

FAST = {"deadline": "PT60S", "reminders_before_deadline": [], "pause_between_stages": "PT0S"}


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack: CaseStack) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    app = create_app(MarginCallClient(stack.client), stack.pool, TOKENS, TEST_POLICIES)
    async with (
        serving(app, port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        yield client


async def count_rows(stack: CaseStack) -> tuple[int, int, int]:
    async with stack.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM transfers) t, (SELECT count(*) FROM deposits) d,"
            " (SELECT count(*) FROM margin_call_cases) c"
        )
    return row["t"], row["d"], row["c"]


async def test_open_deposit_read_and_act_over_http(stack: CaseStack, api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    account = await account_with(stack, "http", "550")
    body = {"account_id": account, "call_id": "http-1", "overrides": FAST}
    opened = await api.post("/v1/margin-calls", json=body, headers=auth("open-token-0123456789"))
    assert opened.status_code == 202, opened.text
    again = await api.post("/v1/margin-calls", json=body, headers=auth("open-token-0123456789"))
    assert again.status_code == 202 and again.json()["run_id"] == opened.json()["run_id"]
    await wait_state(MarginCallClient(stack.client).handle(account), CaseState.AWAITING_DEPOSIT)

    shown = await api.get(f"/v1/cases/{account}", headers=auth("read-token-0123456789"))
    assert shown.status_code == 200 and shown.json()["state"] == "AWAITING_DEPOSIT"
    listed = await api.get("/v1/cases", params={"account_id": account}, headers=auth("read-token-0123456789"))
    assert listed.status_code == 200 and [c["account_id"] for c in listed.json()] == [account]

    deposit = {"account_id": account, "deposit_id": f"{account}-w1", "amount": "10", "currency": "USDT"}
    first = await api.post("/v1/deposits", json=deposit, headers=auth("deposit-token-0123456789"))
    assert first.status_code == 200, first.text
    assert first.json()["receipt"]["counted"] and not first.json()["booking"]["already_credited"]
    repeat = await api.post("/v1/deposits", json=deposit, headers=auth("deposit-token-0123456789"))
    assert repeat.json()["booking"]["already_credited"] and not repeat.json()["receipt"]["counted"]
    before = await count_rows(stack)
    conflict = await api.post(
        "/v1/deposits", json={**deposit, "amount": "11"}, headers=auth("deposit-token-0123456789")
    )
    assert conflict.status_code == 409 and "deposit_id" in conflict.json()["detail"]
    assert await count_rows(stack) == before

    status = (await api.get(f"/v1/cases/{account}", headers=auth("read-token-0123456789"))).json()
    later = (
        __import__("datetime").datetime.fromisoformat(status["deadline"]) + timedelta(seconds=30)
    ).isoformat()
    extend = {"operator": "dana", "reason": "wire in transit", "new_deadline": later}
    extended = await api.post(
        f"/v1/cases/{account}/extend", json=extend, headers=auth("act-token-0123456789")
    )
    assert extended.status_code == 200, extended.text
    refused = await api.post(f"/v1/cases/{account}/extend", json=extend, headers=auth("act-token-0123456789"))
    assert refused.status_code == 409 and refused.json()["detail"].startswith("new_deadline: must be later")
    forced = await api.post(
        f"/v1/cases/{account}/force-liquidation",
        json={"operator": "dana", "reason": "client unreachable"},
        headers=auth("act-token-0123456789"),
    )
    assert forced.status_code == 200, forced.text
    outcome = await asyncio.wait_for(MarginCallClient(stack.client).handle(account).result(), 30)
    assert outcome.status.stages
    late_waive = await api.post(
        f"/v1/cases/{account}/waive",
        json={"operator": "dana", "reason": "too late"},
        headers=auth("act-token-0123456789"),
    )
    assert late_waive.status_code in (404, 409)
    closed = await api.get(f"/v1/cases/{account}", headers=auth("read-token-0123456789"))
    assert closed.json()["state"] == outcome.state.value
    # Opening again with the closed case's call id answers with that case, starting nothing.
    replay = await api.post("/v1/margin-calls", json=body, headers=auth("open-token-0123456789"))
    assert replay.status_code == 202 and replay.json()["state"] == outcome.state.value


async def test_waive_over_http(stack: CaseStack, api: httpx.AsyncClient) -> None:
    account = await account_with(stack, "http-waive", "550")
    body = {"account_id": account, "call_id": "w-1", "overrides": FAST}
    assert (
        await api.post("/v1/margin-calls", json=body, headers=auth("all-token-0123456789"))
    ).status_code == 202
    await wait_state(MarginCallClient(stack.client).handle(account), CaseState.AWAITING_DEPOSIT)
    waived = await api.post(
        f"/v1/cases/{account}/waive",
        json={"operator": "erin", "reason": "goodwill"},
        headers=auth("all-token-0123456789"),
    )
    assert waived.status_code == 200 and waived.json()["state"] == "WAIVED"


async def test_a_large_waive_is_approved_over_http_by_a_second_operator(
    stack: CaseStack, api: httpx.AsyncClient
) -> None:
    cases = MarginCallClient(stack.client)
    account = await account_with(stack, "http-approve", "550")  # 48 USDT short: above the policy's 10
    policy = CasePolicy.model_validate({**FAST, "waive_approval_above": "10"})
    await cases.open_case(account, "a-1", policy)
    await wait_state(cases.handle(account), CaseState.AWAITING_DEPOSIT)
    actor = auth("act-token-0123456789")
    waive = await api.post(
        f"/v1/cases/{account}/waive", json={"operator": "erin", "reason": "goodwill"}, headers=actor
    )
    assert waive.status_code == 200, waive.text
    assert (
        waive.json()["state"] == "AWAITING_DEPOSIT" and waive.json()["pending_waiver"]["operator"] == "erin"
    )

    async def audit_rows() -> int:
        async with stack.pool.acquire() as conn:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM case_events e JOIN margin_call_cases c USING (case_id)"
                " WHERE c.account_id = $1",
                account,
            )
        return count

    before = await audit_rows()
    path = f"/v1/cases/{account}/approve-waive"
    own = await api.post(path, json={"operator": "Erin", "reason": "me again"}, headers=actor)
    assert own.status_code == 409 and own.json()["detail"].startswith("operator:"), own.text
    blank = await api.post(path, json={"operator": "frank"}, headers=actor)
    assert blank.status_code == 422 and blank.json()["detail"].startswith("reason:"), blank.text
    reader = await api.post(
        path, json={"operator": "frank", "reason": "ok"}, headers=auth("read-token-0123456789")
    )
    assert reader.status_code == 403
    nobody = await api.post(
        f"/v1/cases/{stack.account('nobody')}/approve-waive",
        json={"operator": "f", "reason": "ok"},
        headers=actor,
    )
    assert nobody.status_code == 404 and nobody.json()["detail"].startswith("account_id:")
    assert await audit_rows() == before  # no refusal wrote anything

    approved = await api.post(path, json={"operator": "frank", "reason": "checked"}, headers=actor)
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["state"] == "WAIVED" and body["pending_waiver"] is None
    assert (body["waiver"]["operator"], body["waiver_approval"]["operator"]) == ("erin", "frank")
    again = await api.post(path, json={"operator": "frank", "reason": "checked"}, headers=actor)
    assert again.status_code in (404, 409)


async def test_auth_validation_and_unknown_accounts_write_nothing(
    stack: CaseStack, api: httpx.AsyncClient
) -> None:
    account = await account_with(stack, "http-bad", "700")
    before = await count_rows(stack)
    deposit = {"account_id": account, "deposit_id": "bad-1", "amount": "10", "currency": "USDT"}
    routes = [
        ("post", "/v1/margin-calls", {"account_id": account, "call_id": "x"}, "cases:open"),
        ("post", "/v1/deposits", deposit, "deposits:write"),
        ("get", f"/v1/cases/{account}", None, "cases:read"),
        ("get", "/v1/cases", None, "cases:read"),
        (
            "post",
            f"/v1/cases/{account}/extend",
            {"operator": "a", "reason": "b", "new_deadline": "2030-01-01T00:00:00Z"},
            "cases:act",
        ),
        ("post", f"/v1/cases/{account}/waive", {"operator": "a", "reason": "b"}, "cases:act"),
        ("post", f"/v1/cases/{account}/force-liquidation", {"operator": "a", "reason": "b"}, "cases:act"),
    ]
    for method, path, body, scope in routes:
        missing = await api.request(method, path, json=body)
        assert missing.status_code == 401, (path, missing.text)
        wrong = await api.request(method, path, json=body, headers=auth("not-a-token-at-all"))
        assert wrong.status_code == 401, path
        other = next(t for t, s in TOKENS.items() if scope not in s)
        forbidden = await api.request(method, path, json=body, headers=auth(other))
        assert forbidden.status_code == 403 and scope in forbidden.json()["detail"], path
    bad_bodies = [
        ({**deposit, "amount": "-1"}, "amount"),
        ({**deposit, "amount": "NaN"}, "amount"),
        ({**deposit, "amount": "1e400"}, "amount"),
        ({**deposit, "amount": 10}, "amount"),
        ({**deposit, "amount": "1.0000001"}, "amount"),
        ({**deposit, "currency": True}, "currency"),
        ({**deposit, "deposit_id": "x'; DROP TABLE transfers; --"}, "deposit_id"),
        ({**deposit, "extra": 1}, "extra"),
        ({k: v for k, v in deposit.items() if k != "amount"}, "amount"),
    ]
    for bad, field in bad_bodies:
        response = await api.post("/v1/deposits", json=bad, headers=auth("deposit-token-0123456789"))
        assert response.status_code == 422, (bad, response.text)
        assert_problem(response, 422, field)
    unknown = {**deposit, "account_id": "nobody-here"}
    assert (
        await api.post("/v1/deposits", json=unknown, headers=auth("deposit-token-0123456789"))
    ).status_code == 404
    opened = await api.post(
        "/v1/margin-calls",
        json={"account_id": "nobody-here", "call_id": "c"},
        headers=auth("open-token-0123456789"),
    )
    assert opened.status_code == 404
    assert (await api.get("/v1/cases/nobody-here", headers=auth("read-token-0123456789"))).status_code == 404
    no_case = await api.get(f"/v1/cases/{account}", headers=auth("read-token-0123456789"))
    assert no_case.status_code == 404
    huge = await api.post(
        "/v1/deposits",
        content=b"{" + b" " * 70_000 + b"}",
        headers={**auth("deposit-token-0123456789"), "content-type": "application/json"},
    )
    assert huge.status_code == 413
    assert await count_rows(stack) == before


async def test_openapi_property_run_finds_no_server_error(stack: CaseStack, api: httpx.AsyncClient) -> None:
    """Schemathesis generates requests from the OpenAPI document; none may answer 5xx."""
    schema = await api.get("/openapi.json")
    assert schema.status_code == 200 and "/v1/deposits" in schema.json()["paths"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        str(api.base_url).rstrip("/") + "/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "25",
        "--header",
        "Authorization: Bearer all-token-0123456789",
        "--generation-deterministic",
        "--phases",
        "examples,coverage,fuzzing",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, out.decode()[-4000:]
    # The fuzzer may reuse account ids it read from GET /v1/cases and open real cases:
    # stop them; the stack fixture then checks the ledger still balances.
    cases = MarginCallClient(stack.client)
    for case in await cases.list_cases():
        if case.running and case.account_id:
            await cases.handle(case.account_id).terminate("fuzzing done")


def assert_problem(response: httpx.Response, status: int, field: str) -> str:
    """The one error shape: ``{"detail": "field: problem"}``, with nothing of our internals."""
    assert response.status_code == status, (status, response.status_code, response.text)
    body = response.json()
    assert isinstance(body, dict) and list(body) == ["detail"] and isinstance(body["detail"], str), body
    detail: str = body["detail"]
    assert detail.startswith(f"{field}: "), (field, detail)
    assert "Error" not in detail and "Traceback" not in detail, detail
    return detail


def deposit_json(account: str, deposit_id: str) -> bytes:
    body = {"account_id": account, "deposit_id": deposit_id, "amount": "10", "currency": "USDT"}
    return json.dumps(body).encode()


class Streamed:
    """A chunked body (no Content-Length): ``head``, then spaces up to ``size`` bytes."""

    def __init__(self, head: bytes, size: int, chunk: int = 64 * 1024) -> None:
        self.head, self.size, self.chunk, self.sent = head, size, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        self.sent = len(self.head)
        padding = b" " * self.chunk
        while self.sent < self.size:
            piece = padding[: self.size - self.sent]
            self.sent += len(piece)
            yield piece


async def test_chunked_body_over_the_limit_is_cut_off_before_authentication(
    stack: CaseStack, api: httpx.AsyncClient
) -> None:
    """Before: the 8 MiB deposit was credited (or its 422 echoed it) and a big body without a token was read whole for a 401."""
    account = await account_with(stack, "http-chunked", "550")
    json_type = {"content-type": "application/json"}
    before = await count_rows(stack)
    for headers in ({**json_type, **auth("deposit-token-0123456789")}, json_type):
        streamed = Streamed(deposit_json(account, f"{account}-big"), 8 * 1024 * 1024)
        response = await api.post("/v1/deposits", content=streamed, headers=headers)
        detail = assert_problem(response, 413, "body")
        assert account not in detail
    huge = Streamed(b"", 64 * 1024 * 1024, chunk=1024 * 1024)
    assert_problem(await api.post("/v1/deposits", content=huge, headers=json_type), 413, "body")
    assert await count_rows(stack) == before
    # Under the limit, however it is chunked, the body reaches the route whole.
    small = Streamed(deposit_json(account, f"{account}-small"), MAX_BODY_BYTES, chunk=1000)
    credited = await api.post(
        "/v1/deposits", content=small, headers={**json_type, **auth("deposit-token-0123456789")}
    )
    assert credited.status_code == 200, credited.text
    assert credited.json()["booking"]["amount"] == "10"


async def test_body_limit_stops_reading_at_the_limit() -> None:
    """The app behind the limit never runs, and no more than the limit (plus one chunk) is read."""
    pulled: list[int] = []
    sent: list[Message] = []
    reached: list[bool] = []

    async def endless() -> Message:
        pulled.append(1000)
        return {"type": "http.request", "body": b" " * 1000, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(True)

    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    await BodyLimit(app, limit=10_000)(scope, endless, send)
    assert sum(pulled) == 11_000 and not reached
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {"detail": "body: larger than 10000 bytes"}


async def test_every_error_has_one_shape_naming_the_field_and_writes_nothing(
    stack: CaseStack, api: httpx.AsyncClient
) -> None:
    account = await account_with(stack, "http-shape", "550")
    await api.post(
        "/v1/deposits",
        json={"account_id": account, "deposit_id": f"{account}-d", "amount": "1", "currency": "USDT"},
        headers=auth("deposit-token-0123456789"),
    )
    before = await count_rows(stack)
    deposit = auth("deposit-token-0123456789") | {"content-type": "application/json"}
    reader, actor = auth("read-token-0123456789"), auth("act-token-0123456789")
    marker = "ECHO-MARKER-" + "x" * 200
    raw = f'{{"account_id": "{account}", "deposit_id": "{account}-raw", "currency": "USDT", "amount": '
    naive = "2030-01-01T00:00:00"
    # (method, path, request arguments, status, field named)
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("post", "/v1/deposits", {"content": raw + "NaN}", "headers": deposit}, 422, "amount"),
        ("post", "/v1/deposits", {"content": raw + "1e400}", "headers": deposit}, 422, "amount"),
        ("post", "/v1/deposits", {"content": raw + "-Infinity}", "headers": deposit}, 422, "amount"),
        ("post", "/v1/deposits", {"content": "NaN", "headers": deposit}, 422, "body"),
        ("post", "/v1/deposits", {"content": raw, "headers": deposit}, 422, "body"),
        ("post", "/v1/deposits", {"content": b"\xff\xfe{}", "headers": deposit}, 422, "body"),
        ("post", "/v1/deposits", {"headers": deposit}, 422, "body"),
        ("post", "/v1/deposits", {"content": raw + f'"{marker}"}}', "headers": deposit}, 422, "amount"),
        ("post", "/v1/deposits", {"content": raw + '"-1"}', "headers": deposit}, 422, "amount"),
        ("post", "/v1/deposits", {"json": {"account_id": marker}, "headers": deposit}, 422, "account_id"),
        ("post", "/v1/deposits", {"content": raw + '"10", "x": 1}', "headers": deposit}, 422, "x"),
        (
            "post",
            "/v1/deposits",
            {"content": raw.replace(account, "nobody") + '"1"}', "headers": deposit},
            404,
            "account_id",
        ),
        ("post", "/v1/deposits", {"content": raw + '"1"}'}, 401, "authorization"),
        ("post", "/v1/deposits", {"content": raw + '"1"}', "headers": reader}, 403, "authorization"),
        ("post", "/v1/deposits", {"content": b" " * (MAX_BODY_BYTES + 1), "headers": deposit}, 413, "body"),
        ("delete", "/v1/deposits", {"headers": deposit}, 405, "method"),
        ("get", "/v1/nowhere", {"headers": reader}, 404, "path"),
        ("get", "/v1/cases", {"params": {"opened_since": naive}, "headers": reader}, 422, "opened_since"),
        (
            "get",
            "/v1/cases",
            {"params": {"deadline_before": naive}, "headers": reader},
            422,
            "deadline_before",
        ),
        ("get", "/v1/cases", {"params": {"opened_since": marker}, "headers": reader}, 422, "opened_since"),
        ("get", "/v1/cases", {"params": {"limit": "0"}, "headers": reader}, 422, "limit"),
        ("get", "/v1/cases", {"params": {"state": marker}, "headers": reader}, 422, "state"),
        ("get", "/v1/cases/a%20b", {"headers": reader}, 422, "account_id"),
        ("get", f"/v1/cases/{account}", {"headers": reader}, 404, "account_id"),
        (
            "post",
            f"/v1/cases/{account}/extend",
            {"json": {"operator": "a", "reason": "b", "new_deadline": naive}, "headers": actor},
            422,
            "new_deadline",
        ),
        (
            "post",
            f"/v1/cases/{account}/waive",
            {"json": {"operator": "a", "reason": "b"}, "headers": actor},
            404,
            "account_id",
        ),
        (
            "post",
            "/v1/margin-calls",
            {"json": {"account_id": account, "call_id": "a/b"}, "headers": auth("open-token-0123456789")},
            422,
            "call_id",
        ),
        (
            "post",
            "/v1/margin-calls",
            {
                "json": {"account_id": account, "call_id": "c", "overrides": {"deadline": marker}},
                "headers": auth("open-token-0123456789"),
            },
            422,
            "overrides.deadline",
        ),
    ]
    for method, path, arguments, status, field in cases:
        response = await api.request(method, path, **arguments)
        assert_problem(response, status, field)
        assert marker[:20] not in response.text, (path, response.text)
    assert (await api.post("/v1/deposits", headers=deposit)).headers["content-type"] == "application/json"
    assert await count_rows(stack) == before


async def test_reused_deposit_id_names_nothing_of_the_other_deposit(
    stack: CaseStack, api: httpx.AsyncClient
) -> None:
    first, second = (
        await account_with(stack, "http-reuse-a", "550"),
        await account_with(stack, "http-reuse-b", "550"),
    )
    deposit_id = f"{first}-shared"
    headers = auth("deposit-token-0123456789")
    booked = {"account_id": first, "deposit_id": deposit_id, "amount": "123.45", "currency": "USDT"}
    assert (await api.post("/v1/deposits", json=booked, headers=headers)).status_code == 200
    before = await count_rows(stack)
    for other in ({**booked, "account_id": second, "amount": "7"}, {**booked, "amount": "7"}):
        response = await api.post("/v1/deposits", json=other, headers=headers)
        assert response.json() == {"detail": "deposit_id: already used for another deposit"}, response.text
        assert response.status_code == 409
    assert await count_rows(stack) == before


async def test_bearer_tokens_are_compared_in_constant_time(
    stack: CaseStack, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every configured token is compared with hmac.compare_digest, whichever matches, if any."""
    compared: list[int] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        compared.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for token, status in [*((t, 200) for t in TOKENS), ("not-a-token-at-all", 401)]:
        compared.clear()
        response = await api.get("/v1/cases", params={"limit": 1}, headers=auth(token))
        assert response.status_code in (status, 403), (token, response.text)
        assert len(compared) == len(TOKENS), (token, len(compared))


class Broken:
    """A case client whose Temporal calls fail with words that must not reach the caller."""

    async def list_cases(self, **_: Any) -> list[Any]:
        raise RuntimeError("ValueError: secret internals at /srv/worker")


async def test_server_errors_have_the_same_shape_and_show_no_internals(stack: CaseStack) -> None:
    port = free_port()
    app = create_app(cast(MarginCallClient, Broken()), stack.pool, TOKENS)
    async with (
        serving(app, port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        response = await client.get("/v1/cases", headers=auth("read-token-0123456789"))
    assert_problem(response, 500, "server")
    assert "secret" not in response.text
