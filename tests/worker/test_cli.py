"""``margin-call`` as staff and services run it: real processes against the real stack."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from tests.helpers import (
    POLICIES_FILE,
    TEST_POLICIES,
    CaseStack,
    account_with,
    margin_call,
    portfolio,
    stack_env,
    until,
    wait_state,
)
from workflows.client import MarginCallClient
from workflows.contract import CaseState
from workflows.domain.policies import CasePolicy

POLICIES_FILE.write_text(TEST_POLICIES.model_dump_json())


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
        "waived without liquidation",
        "by carol: goodwill, approved by risk",
    ):
        assert words in out, out
    code, out, err = await margin_call(env, "cases", "show", account, "--json")
    assert json.loads(out)["call_id"] == started["call_id"]


async def test_bad_configuration_names_each_variable() -> None:
    code, _, err = await margin_call(
        {
            "MARGIN_CALL_TEMPORAL_ADDRESS": "nowhere",
            "MARGIN_CALL_DATABASE_URL": "mysql://x",
            "MARGIN_CALL_METRICS_PORT": "http",
            "MARGIN_CALL_WORKFLOW_SANDBOX": "maybe",
        },
        "cases",
        "list",
    )
    assert code == 2
    for name in (
        "MARGIN_CALL_TEMPORAL_ADDRESS",
        "MARGIN_CALL_DATABASE_URL",
        "MARGIN_CALL_METRICS_PORT",
        "MARGIN_CALL_WORKFLOW_SANDBOX",
    ):
        assert name in err


async def test_worker_stops_gracefully_on_sigterm(stack: CaseStack) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        env={**os.environ, **stack_env(stack), "MARGIN_CALL_NOTIFIER_URL": stack.notifier_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
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


def assert_refused(code: int, err: str, *words: str) -> None:
    """Exit 2 and words that name what was wrong, never a traceback."""
    assert code == 2, err
    assert "Traceback" not in err, err
    for word in words:
        assert word in err, err


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("start", "{account}", "--deadline", "inf"), "--deadline"),
        (("start", "{account}", "--deadline", "1e20"), "--deadline"),
        (("start", "{account}", "--deadline", "nan"), "--deadline"),
        (("start", "{account}", "--deadline", "0"), "--deadline"),
        (("start", "{account}", "--deadline", "-30"), "--deadline"),
        (("start", "{account}", "--deadline", "2592001"), "--deadline"),
        (("start", "{account}", "--deadline", "soon"), "--deadline"),
        (("cases", "extend", "{account}", "--by", "inf", "--operator", "a", "--reason", "b"), "--by"),
        (("cases", "extend", "{account}", "--by", "1e300", "--operator", "a", "--reason", "b"), "--by"),
        (("cases", "extend", "{account}", "--by", "0", "--operator", "a", "--reason", "b"), "--by"),
        (("monitor", "--interval", "inf"), "--interval"),
        (("cases", "waive", "{account}", "--for", "inf", "--operator", "a", "--reason", "b"), "--for"),
        (("cases", "waive", "{account}", "--for", "2592001", "--operator", "a", "--reason", "b"), "--for"),
        (("cases", "list", "--since", "2030-01-01T00:00:00"), "--since"),
        (("cases", "list", "--deadline-before", "tomorrow"), "--deadline-before"),
    ],
)
async def test_durations_out_of_bounds_are_refused_naming_the_option(
    stack: CaseStack, args: tuple[str, ...], option: str
) -> None:
    """Each once ended in an OverflowError traceback, or (0) silently took the default deadline."""
    account = await account_with(stack, "dur", "550")
    env = stack_env(stack)
    if args[:2] in {("cases", "extend"), ("cases", "waive")}:
        code, _, err = await margin_call(env, "start", account, "--deadline", "3600")
        assert code == 0, err
    code, _, err = await margin_call(env, *(a.format(account=account) for a in args))
    assert_refused(code, err, f"argument {option}")
    if args[0] == "start":  # nothing was started
        assert [c async for c in stack.client.list_workflows(f"AccountId = '{account}'")] == []


async def test_cases_list_refuses_an_unknown_state_naming_the_known_ones(stack: CaseStack) -> None:
    code, out, err = await margin_call(stack_env(stack), "cases", "list", "--state", "BOGUS")
    assert_refused(code, err, "--state", "AWAITING_DEPOSIT", "FAILED")
    assert out == ""
    code, out, err = await margin_call(stack_env(stack), "cases", "list", "--state", "awaiting_deposit")
    assert code == 0, err


def test_risk_takes_json_like_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", "risk", "--json"],
        input=json.dumps(portfolio()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["equity"] == "500"


def closed_reader(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str]:
    """The command with nobody reading its stdout any more, as in ``margin-call ... | head -0``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", *args],
        env={**os.environ, **(env or {})},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(stdin.encode(), timeout=60)
    return process.returncode, err.decode()


async def test_a_reader_that_goes_away_ends_the_command_quietly(stack: CaseStack) -> None:
    for args in (("risk",), ("risk", "--json")):
        code, err = closed_reader(*args, stdin=json.dumps(portfolio()))
        assert (code, err) == (141, ""), err
    code, err = await asyncio.to_thread(closed_reader, "cases", "list", "--json", env=stack_env(stack))
    assert (code, err) == (141, ""), err


async def test_start_refuses_an_account_the_ledger_does_not_know(stack: CaseStack) -> None:
    account = stack.account("nobody")
    code, out, err = await margin_call(stack_env(stack), "start", account)
    assert_refused(code, err, "account_id", "no account", account)
    assert out == ""
    assert [c async for c in stack.client.list_workflows(f"AccountId = '{account}'")] == []


async def ended(handle: Any, status: WorkflowExecutionStatus) -> None:
    async def check() -> bool:
        return bool((await handle.describe()).status == status)

    await until(check)


async def test_a_case_that_failed_or_was_terminated_is_never_listed_as_open(stack: CaseStack) -> None:
    """Such a case once stayed OPEN in ``cases list`` for ever and ``cases show`` printed a traceback."""
    env = stack_env(stack)
    cases = MarginCallClient(stack.client)
    unknown = stack.account("ghost")  # started behind the CLI's back: fails at its first ledger call
    await ended(await cases.open_case(unknown, "ghost-1"), WorkflowExecutionStatus.FAILED)
    terminated = await account_with(stack, "ended", "550")
    handle = await cases.open_case(terminated, "ended-1")
    await wait_state(handle, CaseState.AWAITING_DEPOSIT)
    await handle.terminate(reason="ops: duplicate of an older case")
    await ended(handle, WorkflowExecutionStatus.TERMINATED)

    for account, state, reason in (
        (unknown, "FAILED", f"no account '{unknown}'"),
        (terminated, "TERMINATED", "ops: duplicate of an older case"),
    ):
        code, out, err = await margin_call(env, "cases", "list", "--account", account, "--json")
        assert code == 0, err
        assert [row["state"] for row in json.loads(out)] == [state]
        code, out, err = await margin_call(env, "cases", "list", "--account", account)
        assert code == 0, err
        assert state in out and "OPEN" not in out and "AWAITING" not in out, out
        for open_state in ("OPEN", "AWAITING_DEPOSIT"):
            code, out, err = await margin_call(
                env, "cases", "list", "--account", account, "--state", open_state
            )
            assert code == 0 and "0 case(s)" in out, (out, err)
        code, out, err = await margin_call(env, "cases", "list", "--account", account, "--state", state)
        assert code == 0 and "1 case(s)" in out, (out, err)

        code, out, err = await margin_call(env, "cases", "show", account)
        assert code == 0 and "Traceback" not in err, err
        assert f"state       {state}" in out and reason in out, out
        code, out, err = await margin_call(env, "cases", "show", account, "--json")
        assert code == 0, err
        shown = json.loads(out)
        assert shown["state"] == state and reason in shown["reason"], shown

    code, out, err = await margin_call(env, "cases", "show", stack.account("never"))
    assert_refused(code, err, "no case for")


async def test_a_waive_from_the_cli_holds_for_the_time_given(stack: CaseStack) -> None:
    """Item 9: ``cases waive --for`` records the waive's scope for the risk monitor."""
    account = await account_with(stack, "cli-waive", "550")
    env = stack_env(stack)
    code, _, err = await margin_call(env, "start", account, "--deadline", "3600")
    assert code == 0, err
    code, out, err = await margin_call(
        env,
        "cases",
        "waive",
        account,
        "--for",
        "3600",
        "--operator",
        "dana",
        "--reason",
        "goodwill",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["state"] == "WAIVED"
    async with stack.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT until - created_at AS span, operator FROM waivers WHERE account_id = $1", account
        )
    assert row["operator"] == "dana" and abs(row["span"].total_seconds() - 3600) < 60


async def test_a_large_waive_is_approved_from_the_command_line_by_a_second_operator(stack: CaseStack) -> None:
    account = await account_with(stack, "cli-approve", "550")  # 48 USDT short: above the policy's 10
    cases = MarginCallClient(stack.client)
    await cases.open_case(
        account, "c-1", CasePolicy(deadline=timedelta(hours=1), waive_approval_above=Decimal(10))
    )
    await wait_state(cases.handle(account), CaseState.AWAITING_DEPOSIT)
    env = stack_env(stack)
    code, out, err = await margin_call(
        env, "cases", "waive", account, "--operator", "dana", "--reason", "goodwill"
    )
    assert code == 0, err
    assert "state       AWAITING_DEPOSIT" in out and "requested by dana" in out and "second operator" in out

    async def approve(*args: str) -> tuple[int, str, str]:
        return await margin_call(env, "cases", "approve-waive", account, *args)

    code, out, err = await approve("--operator", "DANA", "--reason", "me again")
    assert code == 2 and "error: refused: operator: dana requested this waive" in err, err
    code, out, err = await approve("--operator", "", "--reason", "x")
    assert code == 2 and "operator" in err, err
    code, out, err = await approve("--operator", "eve")
    assert code == 2 and "--reason" in err, err
    code, out, err = await approve("--operator", "eve", "--reason", "checked the ticket", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["state"] == "WAIVED" and shown["waiver_approval"]["operator"] == "eve"
    code, out, err = await margin_call(env, "cases", "show", account)
    assert code == 0, err
    assert "waive       by dana, approved by eve" in out and "approved by eve: checked the ticket" in out, out
