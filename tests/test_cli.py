"""``margin-call`` as staff and services run it: real processes against the real stack."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

from tests.conftest import CaseStack
from tests.test_case_workflow import account_with, wait_state
from workflows.client import MarginCallClient
from workflows.models import CaseState


async def margin_call(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", *args,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def stack_env(stack: CaseStack) -> dict[str, str]:
    return {
        "MARGIN_CALL_TEMPORAL_ADDRESS": stack.client.service_client.config.target_host,
        "MARGIN_CALL_DATABASE_URL": stack.database_url,
    }


async def test_start_deposit_list_show_and_act_from_the_command_line(stack: CaseStack) -> None:
    env = stack_env(stack)
    account = await account_with(stack, "cmd", "550")
    code, out, err = await margin_call(env, "start", account, "--deadline", "60", "--json")
    assert code == 0, err
    started: dict[str, Any] = json.loads(out)
    handle = MarginCallClient(stack.client).handle(account)
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)

    code, out, err = await margin_call(
        env, "cases", "list", "--state", "AWAITING_DEPOSIT", "--account", account
    )
    assert code == 0, err
    assert account in out and "AWAITING_DEPOSIT" in out and "1 case(s)" in out

    code, out, err = await margin_call(env, "deposit", account, "cmd-dep-1", "10", "--json")
    assert code == 0, err
    receipt = json.loads(out)["receipt"]
    assert receipt["counted"] and receipt["state"] == "AWAITING_DEPOSIT" and receipt["shortfall"] == "38"

    code, out, err = await margin_call(env, "deposit", account, "cmd-dep-2", "1.1234567")
    assert code == 2 and "amount" in err and "6 decimal places" in err

    code, out, err = await margin_call(
        env, "cases", "extend", account, "--by", "30", "--operator", "carol", "--reason", "wire in transit"
    )
    assert code == 0, err
    assert "deadline moved" in out and "carol" in out

    code, out, err = await margin_call(env, "cases", "waive", account, "--operator", "", "--reason", "x")
    assert code == 2 and "operator" in err

    code, out, err = await margin_call(
        env, "cases", "waive", account, "--operator", "carol", "--reason", "goodwill, approved by risk"
    )
    assert code == 0, err
    assert "WAIVED" in out

    code, out, err = await margin_call(env, "cases", "show", account)
    assert code == 0, err
    for words in (
        "state       WAIVED",
        "deposit cmd-dep-1 of 10 USDT reported",
        "waived without liquidation by carol",
    ):
        assert words in out, out
    code, out, err = await margin_call(env, "cases", "show", account, "--json")
    assert json.loads(out)["call_id"] == started["call_id"]


async def test_bad_configuration_names_each_variable() -> None:
    code, _, err = await margin_call(
        {"MARGIN_CALL_TEMPORAL_ADDRESS": "nowhere", "MARGIN_CALL_DATABASE_URL": "mysql://x",
         "MARGIN_CALL_METRICS_PORT": "http", "MARGIN_CALL_WORKFLOW_SANDBOX": "maybe"},
        "cases", "list",
    )  # fmt: skip
    assert code == 2
    for name in ("MARGIN_CALL_TEMPORAL_ADDRESS", "MARGIN_CALL_DATABASE_URL", "MARGIN_CALL_METRICS_PORT",
                 "MARGIN_CALL_WORKFLOW_SANDBOX"):  # fmt: skip
        assert name in err


async def test_worker_stops_gracefully_on_sigterm(stack: CaseStack) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker",
        env={**os.environ, **stack_env(stack), "MARGIN_CALL_NOTIFIER_URL": stack.notifier_url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[str] = []
    while not any("worker polling" in line for line in lines):
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        assert line, "worker exited early:\n" + "".join(lines)
        lines.append(line)
    process.send_signal(signal.SIGTERM)
    _, rest = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    assert "worker stopped" in rest.decode()
    assert json.loads(lines[-1])["logger"] == "margin_call.worker"  # structured lines
