"""What the tests share: the case stack's handle, helpers that start and watch cases, and small ledger reads.

Tests import from here (and from fixtures in ``conftest.py``), never from another test file.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from activities.ledger import LedgerActivities
from worker.market import Trader, move_market, onboard
from worker.receiver import WebhookReceiver
from worker.stack import free_port as free_port  # re-exported: the tests' one way to pick a port
from worker.stack import until as until  # re-exported: the tests' one way to wait
from workflows import contract
from workflows.contract import CaseOpening, CaseOutcome, CaseState, CaseStatus
from workflows.domain.policies import CasePolicy, PolicyBook, open_book

D = Decimal


# The tests' operator lets a case set any field within CasePolicy's outer limits,
# so that a test can run a deadline of seconds; production books are narrower.
# The suite's book: the open standard policy, and "vip" (a two-hour deadline) for an account whose
# reference data names it.
VIP_DEADLINE = timedelta(hours=2)
TEST_POLICIES = PolicyBook(
    policies=[
        *open_book().policies,
        open_book(CasePolicy(deadline=VIP_DEADLINE)).policies[0].model_copy(update={"name": "vip"}),
    ]
)


# Task failures the server records for its own reasons, not the workflow's: a
# task in flight when the case was terminated or reset, or a completion that
# raced a new signal (retried at once with it). Every other cause is a wedge.
SERVER_BOOKKEEPING = frozenset(
    {
        WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_FORCE_CLOSE_COMMAND,
        WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW,
        WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND,
    }
)


async def failed_workflow_tasks(client: Client, query: str | None = None) -> dict[str, str]:
    """Workflows (matching ``query``) whose history holds a WorkflowTaskFailed event, with its cause.

    A workflow task that fails is retried for ever: the case stays RUNNING,
    writes nothing, and later opens for the account join it. No input may do
    that, so any such event fails the test that caused it.
    """
    wedged: dict[str, str] = {}
    async for execution in client.list_workflows(query):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        async for event in handle.fetch_history_events():
            if event.event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                continue
            attributes = event.workflow_task_failed_event_attributes
            if attributes.cause in SERVER_BOOKKEEPING:
                continue
            cause = WorkflowTaskFailedCause.Name(attributes.cause)
            wedged[f"{execution.id} ({execution.run_id})"] = f"{cause}: {attributes.failure.message[:300]}"
            break
    return wedged


@dataclass
class CaseStack:
    client: Client
    pool: asyncpg.Pool
    receiver: WebhookReceiver
    notifier_url: str
    database_url: str

    def account(self, name: str) -> str:
        """A unique account id for this test (the server and ledger outlive tests)."""
        return f"{name}-{uuid.uuid4().hex[:8]}"


ENTRY, MARK = D("49900"), D("49500")


def fast_policy(**overrides: Any) -> CasePolicy:
    values: dict[str, Any] = {
        "deadline": timedelta(seconds=3),
        "reminders_before_deadline": [],
        "pause_between_stages": timedelta(seconds=0),
        "notice_delivery_window": timedelta(seconds=5),
    }
    values.update(overrides)
    return CasePolicy.model_validate(values)


async def account_with(stack: CaseStack, name: str, collateral: str) -> str:
    account = stack.account(name)
    await onboard(stack.pool, Trader(account, D(collateral), {"BTCUSDT": (D(1), ENTRY)}))
    async with stack.pool.acquire() as conn:
        await move_market(conn, {"BTCUSDT": MARK})
    return account


async def wait_state(handle: WorkflowHandle[Any, Any], *states: CaseState) -> CaseStatus:
    async def check() -> CaseStatus | None:
        status = await handle.query(contract.QUERY_STATUS, result_type=CaseStatus)
        return status if status.state in states else None

    result: CaseStatus = await until(check)
    return result


HISTORIES = Path(__file__).parent / "workflows" / "histories"


async def settled(handle: WorkflowHandle[Any, Any]) -> CaseStatus:
    """Awaiting a deposit with the opened notice delivered: nothing else will add to history."""

    async def check() -> CaseStatus | None:
        status = await handle.query(contract.QUERY_STATUS, result_type=CaseStatus)
        quiet = (
            status.state == CaseState.AWAITING_DEPOSIT
            and status.notices_sent + len(status.notices_failed) >= 1
        )
        return status if quiet else None

    result: CaseStatus = await until(check)
    return result


async def finish(handle: WorkflowHandle[Any, CaseOutcome], record: str, timeout: float = 40) -> CaseOutcome:
    """The case's outcome; with MARGIN_CALL_RECORD_HISTORIES=1 its history is kept for replay tests."""
    outcome = await asyncio.wait_for(handle.result(), timeout)
    if os.environ.get("MARGIN_CALL_RECORD_HISTORIES") == "1":
        history = await handle.fetch_history()
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{record}.json").write_text(history.to_json())
    return outcome


async def notice_kinds(stack: CaseStack, account: str) -> list[str]:
    """Kinds of the notices the receiver got for the account, once its cases' outbox is settled."""

    async def outbox_settled() -> bool | None:
        async with stack.pool.acquire() as conn:
            pending = await conn.fetchval(
                "SELECT count(*) FROM notice_outbox o JOIN margin_call_cases c USING (case_id)"
                " WHERE c.account_id = $1 AND o.delivered_at IS NULL AND o.failed_at IS NULL",
                account,
            )
        return True if pending == 0 else None

    await until(outbox_settled)
    return sorted(n["kind"] for n in stack.receiver.notices.values() if n["account_id"] == account)


async def history_event_types(handle: WorkflowHandle[Any, Any]) -> list[int]:
    return [event.event_type async for event in handle.fetch_history_events()]


async def balance(pool: asyncpg.Pool, ledger_account: str) -> Decimal:
    async with pool.acquire() as conn:
        value: Decimal = await conn.fetchval(
            "SELECT balance FROM ledger_accounts WHERE ledger_account = $1", ledger_account
        )
    return value


async def open_case(ledger: LedgerActivities, account_id: str, case_id: str) -> None:
    """Record a case for ``account_id`` directly through the activity, as a workflow would."""
    await ledger.open_case(
        CaseOpening(case_id=case_id, account_id=account_id, call_id="c1", opened_at=datetime.now(UTC))
    )


TOKENS = {
    "open-token-0123456789": frozenset({"cases:open"}),
    "deposit-token-0123456789": frozenset({"deposits:write"}),
    "read-token-0123456789": frozenset({"cases:read"}),
    "act-token-0123456789": frozenset({"cases:act"}),
    "all-token-0123456789": frozenset({"cases:open", "deposits:write", "cases:read", "cases:act"}),
}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def margin_call(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# The CLI holds a start to the operator's book as the worker does: the tests' book, from a file.
POLICIES_FILE = Path(tempfile.mkdtemp(prefix="margin-call-cli-")) / "policies.json"


def stack_env(stack: CaseStack) -> dict[str, str]:
    return {
        "MARGIN_CALL_TEMPORAL_ADDRESS": stack.client.service_client.config.target_host,
        "MARGIN_CALL_DATABASE_URL": stack.database_url,
        "MARGIN_CALL_POLICIES": str(POLICIES_FILE),
    }


TIER = {"notional_floor": "0", "maintenance_rate": "0.004", "initial_rate": "0.008"}


def run_risk(payload: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "risk"],
        input=payload,
        capture_output=True,
        text=True,
        timeout=60,
    )


def portfolio(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "collateral": [{"asset": "USDT", "amount": "500", "price": "1", "haircut": "0"}],
        "positions": [
            {
                "instrument": "BTCUSDT",
                "quantity": "0.02",
                "entry_price": "50000",
                "mark_price": "50000",
                "tiers": [TIER],
            }
        ],
    }
    document.update(overrides)
    return document


async def start_raw(stack: CaseStack, account: str, case: dict[str, Any]) -> Any:
    """Start a case the way the ``temporal`` CLI does: any JSON, no client-side validation."""
    return await stack.client.start_workflow(
        contract.WORKFLOW_TYPE,
        case,
        id=contract.workflow_id(account),
        task_queue=contract.TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        result_type=CaseOutcome,
    )
