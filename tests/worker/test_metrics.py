"""The worker's Prometheus endpoint: the SDK's own metrics and the cases' business metrics."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from temporalio.testing import WorkflowEnvironment

from tests.helpers import TEST_POLICIES, CaseStack, account_with, fast_policy, free_port
from worker.config import DEV_WEBHOOK_SECRET, temporal_cli
from worker.worker import metrics_runtime, running_worker
from workflows import contract
from workflows.client import MarginCallClient, connect


async def test_worker_exposes_sdk_and_case_metrics(stack: CaseStack) -> None:
    # A server of its own, so that only this worker (with metrics) polls its task queue.
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()), search_attributes=contract.SEARCH_ATTRIBUTES
    )
    try:
        port = free_port()
        target = env.client.service_client.config.target_host
        client = await connect(target, runtime=metrics_runtime(port))
        account = await account_with(stack, "metrics", "100")  # bankrupt: a stage, a fee-free close-out
        async with running_worker(
            client, stack.database_url, stack.notifier_url, DEV_WEBHOOK_SECRET, policies=TEST_POLICIES
        ):
            api = MarginCallClient(client)
            handle = await api.open_case(account, "m-1", fast_policy(deadline=timedelta(seconds=30)))
            await asyncio.wait_for(handle.result(), 30)
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        await env.shutdown()
    assert "margin_call_cases_opened" in text
    closed = [line for line in text.splitlines() if line.startswith("margin_call_cases_closed")]
    assert any('outcome="BANKRUPT"' in line and line.endswith(" 1") for line in closed), closed
    assert "margin_call_liquidation_notional_sum" in text
    assert "temporal_workflow_completed" in text  # the SDK's own
