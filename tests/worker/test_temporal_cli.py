"""A case driven only by the ``temporal`` command-line tool behaves as from Python."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

from activities.ledger import credit_deposit
from tests.helpers import CaseStack, account_with, wait_state
from worker.config import temporal_cli
from workflows import contract
from workflows.client import MarginCallClient
from workflows.contract import CaseOutcome, CaseState, Deposit


async def temporal(stack: CaseStack, *args: str) -> str:
    address = stack.client.service_client.config.target_host
    process = await asyncio.create_subprocess_exec(
        str(temporal_cli()),
        *args,
        "--address",
        address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_case_started_queried_and_cured_with_the_temporal_cli(stack: CaseStack) -> None:
    account = await account_with(stack, "cli", "550")
    workflow_id = contract.workflow_id(account)
    case_input = {"account_id": account, "call_id": "cli-1", "policy": {"deadline": "PT60S"}}
    await temporal(
        stack,
        "workflow",
        "start",
        "--type",
        contract.WORKFLOW_TYPE,
        "--task-queue",
        contract.TASK_QUEUE,
        "--workflow-id",
        workflow_id,
        "--input",
        json.dumps(case_input),
        "--search-attribute",
        f'AccountId="{account}"',
    )
    handle = stack.client.get_workflow_handle(workflow_id, result_type=CaseOutcome)
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)

    query = json.loads(
        await temporal(
            stack,
            "workflow",
            "query",
            "--workflow-id",
            workflow_id,
            "--name",
            contract.QUERY_STATUS,
            "--output",
            "json",
        )
    )
    status: dict[str, Any] = query["queryResult"][0]
    assert status["state"] == "AWAITING_DEPOSIT" and status["shortfall"] == "48"

    # The deposit handler credits the ledger, then reports the deposit by signal.
    await credit_deposit(
        stack.pool,
        Deposit(account_id=account, deposit_id="cli-dep-1", amount=Decimal("60"), currency="USDT"),
    )
    deposit = {"deposit_id": "cli-dep-1", "amount": "60", "currency": "USDT"}
    await temporal(
        stack,
        "workflow",
        "signal",
        "--workflow-id",
        workflow_id,
        "--name",
        contract.SIGNAL_DEPOSIT,
        "--input",
        json.dumps(deposit),
    )
    outcome = await asyncio.wait_for(handle.result(), 30)
    assert outcome.state == CaseState.CURED and outcome.status.deposits_counted == ["cli-dep-1"]

    # The history as a person reads it: payloads shown as JSON, not base64.
    shown = await temporal(stack, "workflow", "show", "--workflow-id", workflow_id, "--detailed")
    assert "input[0].deposit_id: cli-dep-1" in shown and "signalName: deposit" in shown
    assert '"state":"CURED"' in shown.replace(" ", "")
    events = json.loads(
        await temporal(stack, "workflow", "show", "--workflow-id", workflow_id, "--output", "json")
    )
    assert any(e["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED" for e in events["events"])

    listed = await temporal(
        stack, "workflow", "list", "--query", f"AccountId='{account}' AND MarginCallState='CURED'"
    )
    assert workflow_id in listed
    found = await MarginCallClient(stack.client).list_cases(account_id=account, state="CURED")
    assert [c.workflow_id for c in found] == [workflow_id] and timedelta(0) is not None
