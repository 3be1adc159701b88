"""One table of bad input, tried at every entry point: a clear error naming the field, nothing written.

Entry points: the ``submit_deposit`` update validator, the ``deposit`` signal
handler, the client API's models, ``margin-call deposit``, the HTTP API, and
``margin-call risk``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import ValidationError
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from tests.helpers import (
    POLICIES_FILE,
    TEST_POLICIES,
    TOKENS,
    CaseStack,
    account_with,
    auth,
    fast_policy,
    free_port,
    history_event_types,
    margin_call,
    portfolio,
    run_risk,
    settled,
    stack_env,
)
from worker.api import create_app
from worker.serving import serving
from workflows import contract
from workflows.client import MarginCallClient
from workflows.contract import CaseState, CaseStatus, Deposit

# ``margin-call`` reads the tests' policy book from this file (stack_env points there); run
# alone, this file must write it as test_cli.py does.
POLICIES_FILE.write_text(TEST_POLICIES.model_dump_json())

# (label, field that is wrong, deposit payload changes, words the error must contain)
TABLE: list[tuple[str, str, dict[str, Any], str]] = [
    ("negative", "amount", {"amount": "-1"}, "positive"),
    ("zero", "amount", {"amount": "0"}, "positive"),
    ("nan", "amount", {"amount": "NaN"}, "finite"),
    ("infinity", "amount", {"amount": "Infinity"}, "finite"),
    ("1e400", "amount", {"amount": "1e400"}, "magnitude"),
    ("10^40", "amount", {"amount": "1" + "0" * 40}, "magnitude"),
    ("too precise", "amount", {"amount": "1.1234567"}, "decimal places"),
    ("not a number", "amount", {"amount": "ten"}, "not a decimal"),
    ("number not string", "amount", {"amount": 10.5}, "decimal string"),
    ("boolean amount", "amount", {"amount": True}, "decimal string"),
    ("missing amount", "amount", {"amount": None}, ""),
    ("number as id", "deposit_id", {"deposit_id": 12345}, ""),
    ("boolean currency", "currency", {"currency": False}, ""),
    # Not the case's currency: only the ledger and the case know that (an asset
    # the well-known table lacks, DAI say, is a valid settlement currency).
    ("other currency", "currency", {"currency": "XYZ"}, "XYZ"),
    ("malformed currency", "currency", {"currency": "US$"}, ""),
    ("sql in id", "deposit_id", {"deposit_id": "d'; DROP TABLE transfers; --"}, ""),
    ("unicode id", "deposit_id", {"deposit_id": "dépôt-①"}, ""),
    ("oversized id", "deposit_id", {"deposit_id": "d" * 5000}, ""),
    ("extra field", "extra", {"extra": "x"}, ""),
]
IDS = [row[0] for row in TABLE]
NEEDS_THE_LEDGER = {"other currency"}
# The HTTP API does not repeat what was sent: it names what the account takes instead.
HTTP_WORDS = {"other currency": "this account settles in USDT"}


@dataclass
class Target:
    stack: CaseStack
    account: str
    handle: WorkflowHandle[Any, Any]
    http: httpx.AsyncClient

    def payload(self, changes: dict[str, Any]) -> dict[str, Any]:
        base: dict[str, Any] = {"deposit_id": f"{self.account}-bad", "amount": "10", "currency": "USDT"}
        for key, value in changes.items():
            if value is None:
                base.pop(key, None)
            else:
                base[key] = value
        return base

    async def written(self) -> tuple[int, int, int]:
        async with self.stack.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM transfers) t, (SELECT count(*) FROM deposits) d,"
                " (SELECT count(*) FROM margin_call_cases) c"
            )
        return row["t"], row["d"], row["c"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def target(case_worker: CaseStack) -> AsyncIterator[Target]:
    account = await account_with(case_worker, "badinput", "550")
    handle = await MarginCallClient(case_worker.client).open_case(
        account, "b-1", fast_policy(deadline=timedelta(minutes=10))
    )
    await settled(handle)
    port = free_port()
    app = create_app(MarginCallClient(case_worker.client), case_worker.pool, TOKENS)
    async with serving(app, port), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        yield Target(case_worker, account, handle, http)
    await handle.terminate("bad input tests done")


@pytest.mark.parametrize(("label", "field", "changes", "words"), TABLE, ids=IDS)
async def test_update_validator_refuses_and_history_is_untouched(
    target: Target, label: str, field: str, changes: dict[str, Any], words: str
) -> None:
    before = await history_event_types(target.handle)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await target.handle.execute_update(contract.UPDATE_SUBMIT_DEPOSIT, target.payload(changes))
    message = str(refused.value.cause)
    assert field in message and words in message, message
    assert await history_event_types(target.handle) == before


@pytest.mark.parametrize(("label", "field", "changes", "words"), TABLE, ids=IDS)
async def test_signal_handler_ignores_without_failing_the_workflow_task(
    target: Target, label: str, field: str, changes: dict[str, Any], words: str
) -> None:
    await target.handle.signal(contract.SIGNAL_DEPOSIT, target.payload(changes))
    status = await target.handle.query(contract.QUERY_STATUS, result_type=CaseStatus)
    assert status.deposits_counted == [] and status.state == CaseState.AWAITING_DEPOSIT
    types = await history_event_types(target.handle)
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in types


@pytest.mark.parametrize(("label", "field", "changes", "words"), TABLE, ids=IDS)
async def test_client_api_models_refuse(
    target: Target, label: str, field: str, changes: dict[str, Any], words: str
) -> None:
    if label in NEEDS_THE_LEDGER:
        Deposit.model_validate(
            {"account_id": target.account, **target.payload(changes)}
        )  # well-formed: the case and the ledger refuse it
        return
    with pytest.raises(ValidationError) as refused:
        Deposit.model_validate({"account_id": target.account, **target.payload(changes)})
    assert field in str(refused.value) and words in str(refused.value)


@pytest.mark.parametrize(("label", "field", "changes", "words"), TABLE, ids=IDS)
async def test_http_api_answers_422_and_writes_nothing(
    target: Target, label: str, field: str, changes: dict[str, Any], words: str
) -> None:
    before = await target.written()
    body = {"account_id": target.account, **target.payload(changes)}
    response = await target.http.post("/v1/deposits", json=body, headers=auth("deposit-token-0123456789"))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert list(response.json()) == ["detail"] and detail.startswith(f"{field}: "), response.text
    assert HTTP_WORDS.get(label, words) in detail, response.text
    assert await target.written() == before


CLI_AMOUNTS = [
    (label, changes["amount"], words)
    for label, field, changes, words in TABLE
    if field == "amount" and isinstance(changes["amount"], str)
]


@pytest.mark.parametrize(("label", "amount", "words"), CLI_AMOUNTS, ids=[c[0] for c in CLI_AMOUNTS])
async def test_cli_deposit_exits_2_naming_the_field(
    target: Target, label: str, amount: str, words: str
) -> None:
    before = await target.written()
    code, _, err = await margin_call(stack_env(target.stack), "deposit", target.account, "cli-bad", amount)
    assert code == 2 and "amount" in err and words in err, err
    assert len(err.strip().splitlines()) == 1
    assert await target.written() == before


@pytest.mark.parametrize(("label", "amount", "words"), CLI_AMOUNTS, ids=[c[0] for c in CLI_AMOUNTS])
def test_risk_command_exits_2_naming_the_field(label: str, amount: str, words: str) -> None:
    document = portfolio(collateral=[{"asset": "USDT", "amount": amount, "price": "1", "haircut": "0"}])
    out = run_risk(json.dumps(document))
    if label in ("negative", "zero", "too precise"):
        # A portfolio may hold a debt, an empty balance, or a price-converted odd amount.
        assert out.returncode == 0
        return
    assert out.returncode == 2 and "collateral.0.amount" in out.stderr, out.stderr


async def test_wrong_currency_and_unknown_account_everywhere(target: Target) -> None:
    before_history = await history_event_types(target.handle)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await target.handle.execute_update(
            contract.UPDATE_SUBMIT_DEPOSIT, target.payload({"currency": "USDC"})
        )
    assert "currency: this case settles in USDT" in str(refused.value.cause)
    assert await history_event_types(target.handle) == before_history
    before = await target.written()
    wrong = {"account_id": target.account, **target.payload({"currency": "USDC"})}
    response = await target.http.post("/v1/deposits", json=wrong, headers=auth("deposit-token-0123456789"))
    assert response.status_code == 422 and "currency" in response.text
    code, _, err = await margin_call(stack_env(target.stack), "deposit", "no-such-account", "x-1", "10")
    assert code == 2 and "account_id" in err
    code, _, err = await margin_call(
        stack_env(target.stack), "deposit", target.account, "x-2", "10", "--currency", "USDC"
    )
    assert code == 2 and "currency" in err
    assert await target.written() == before
