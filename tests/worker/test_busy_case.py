"""A case too busy to take a request ("workflow not ready", every time) is a 503 to send again, never "no case".

The server turns down an update whose workflow task failed as it arrived; the
client asks again under the same id, and if the case stays busy the error
reaches the API. Over HTTP that must say what happened and what to do: for a
deposit, that the money is credited and a second report is safe; for a staff
action, that nothing was applied. Before, both read as "the account has no
open case" (a FAILED_PRECONDITION, like a closed case).

The API and the ledger are real; only the case is a stand-in that is always
busy, since a real server cannot be made to answer "not ready" on demand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from temporalio.service import RPCError, RPCStatusCode

from tests.helpers import TEST_POLICIES, TOKENS, CaseStack, account_with, auth, free_port
from worker.api import create_app
from worker.api._problems import no_open_case
from worker.serving import serving
from workflows.client import DepositLedger, DepositReport, MarginCallClient
from workflows.contract import CaseStatus, Deposit, StaffAction

NOT_READY = (
    b"\x08\t\x12TUnable to perform workflow execution update due to unexpected workflow task failure."
    b"\x1aJ\nHtype.googleapis.com/temporal.api.errordetails.v1.WorkflowNotReadyFailure"
)


def not_ready() -> RPCError:
    return RPCError("not ready", RPCStatusCode.FAILED_PRECONDITION, NOT_READY)


class BusyCases(MarginCallClient):
    """Credits the ledger as the real client does, then finds the case busy, as the server may say."""

    async def report_deposit(
        self, ledger: DepositLedger, deposit: Deposit, *, wait: bool = True
    ) -> DepositReport:
        await ledger.credit(deposit)
        raise not_ready()

    async def waive(self, account_id: str, action: StaffAction) -> CaseStatus:
        raise not_ready()


@pytest_asyncio.fixture(loop_scope="session")
async def api(stack: CaseStack) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    app = create_app(BusyCases(stack.client), stack.pool, TOKENS, TEST_POLICIES)
    async with (
        serving(app, port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        yield client


async def test_a_deposit_to_a_busy_case_is_credited_once_and_answered_send_again(
    stack: CaseStack, api: httpx.AsyncClient
) -> None:
    account = await account_with(stack, "busy-deposit", "550")
    body: dict[str, Any] = {
        "account_id": account,
        "deposit_id": f"{account}-w1",
        "amount": "60",
        "currency": "USDT",
    }
    for _ in range(2):  # the deposit handler does as told: it reports again
        answer = await api.post("/v1/deposits", json=body, headers=auth("deposit-token-0123456789"))
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["detail"] == (
            f"case: busy; deposit {account}-w1 is credited, report it again for the case's receipt"
        )
    async with stack.pool.acquire() as conn:
        credited = await conn.fetch("SELECT amount FROM deposits WHERE deposit_id = $1", f"{account}-w1")
    assert [r["amount"] for r in credited] == [60]  # once, however often it was reported


async def test_a_staff_action_on_a_busy_case_says_nothing_was_applied(
    stack: CaseStack, api: httpx.AsyncClient
) -> None:
    account = await account_with(stack, "busy-waive", "550")
    answer = await api.post(
        f"/v1/cases/{account}/waive",
        json={"operator": "alice", "reason": "client called"},
        headers=auth("act-token-0123456789"),
    )
    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"] == "case: busy, nothing was applied; try again"


def test_only_a_case_that_is_gone_reads_as_no_open_case() -> None:
    assert no_open_case(not_ready()) is not None and no_open_case(not_ready()).status_code == 503  # type: ignore[union-attr]
    for gone in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
        refusal = no_open_case(RPCError("workflow gone", gone, b""))
        assert refusal is not None and refusal.status_code == 404
    assert no_open_case(RPCError("server down", RPCStatusCode.UNAVAILABLE, b"")) is None
