"""Property: any case a caller can start reaches a state, whatever its ids, policy and portfolio.

Hypothesis generates account and call ids (any length the contract allows,
any allowed character), policies anywhere within the outer limits (raw, as the
``temporal`` CLI would send them, so some are refused), and portfolios from
dust to whales; each case is started for real on the shared stack. It must
either fail at once with a field-naming refusal or reach a state (awaiting a
deposit, or closed), and never leave a failed workflow task (conftest's
``no_wedged_case`` check runs after the test).
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal as D
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from activities.ledger import credit_deposit
from tests.helpers import CaseStack, start_raw
from worker.market import Trader, onboard
from workflows import contract
from workflows.contract import CaseState, CaseStatus, Deposit

ID_CHARS = st.sampled_from("abcXYZ019._:@-")
STATES = [
    CaseState.AWAITING_DEPOSIT,
    CaseState.CURED,
    CaseState.RESTORED,
    CaseState.CLOSED_OUT,
    CaseState.BANKRUPT,
]


def iso(seconds: int) -> str:
    return f"PT{seconds}S"


# From nothing to past the year 9999 (where datetime arithmetic overflows), with the edges likely.
DURATIONS = st.one_of(
    st.sampled_from([0, 1, 30 * 86400, 30 * 86400 + 1, 3_000_000 * 86400]),
    st.integers(min_value=-5, max_value=40 * 86400),
    st.integers(min_value=40 * 86400, max_value=10**12),
).map(iso)
policies = st.fixed_dictionaries(
    {},
    optional={
        "deadline": st.integers(min_value=-5, max_value=40 * 86400).map(iso),
        "reminders_before_deadline": st.lists(
            st.integers(min_value=1, max_value=40 * 86400).map(iso), max_size=3
        ),
        "hard_threshold": st.sampled_from(["0", "0.1", "0.5", "0.99", "1", "-1"]),
        "pause_between_stages": DURATIONS,
        "max_deadline_extension": DURATIONS,
    },
)
portfolios = st.tuples(
    st.decimals(min_value=D(0), max_value=D("1e12"), places=6),  # collateral
    st.decimals(min_value=D("-1e4"), max_value=D("1e4"), places=8).filter(lambda q: q != 0),  # BTC quantity
    st.decimals(min_value=D("1"), max_value=D("1e6"), places=2),  # entry price
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.text(ID_CHARS, min_size=0, max_size=110),
    call_id=st.text(ID_CHARS, min_size=1, max_size=128),
    policy=policies,
    portfolio=portfolios,
)
async def test_any_started_case_reaches_a_state(
    stack: CaseStack, suffix: str, call_id: str, policy: dict[str, Any], portfolio: tuple[D, D, D]
) -> None:
    collateral, quantity, entry = portfolio
    account = f"p{uuid.uuid4().hex[:16]}{suffix}"
    await onboard(stack.pool, Trader(account, D(0), {"BTCUSDT": (quantity, entry)}))
    if collateral > 0:
        deposit = Deposit(account_id=account, deposit_id=uuid.uuid4().hex, amount=collateral, currency="USDT")
        await credit_deposit(stack.pool, deposit)
    handle = await start_raw(stack, account, {"account_id": account, "call_id": call_id, "policy": policy})
    try:
        assert await reached_a_state(handle) in {*STATES, "refused"}
    finally:
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("property test done")


async def reached_a_state(handle: Any) -> str:
    """The case's state once it has one, or "refused" for a start failed at once with a field named."""
    for _ in range(200):
        description = await handle.describe()
        if description.status == WorkflowExecutionStatus.FAILED:
            try:
                await handle.result()
            except WorkflowFailureError as failed:
                cause = str(failed.cause)
                assert "invalid case input" in cause or "policy" in cause, cause
                return "refused"
        status = await handle.query(contract.QUERY_STATUS, result_type=CaseStatus)
        if status.state in STATES:
            return str(status.state)
        await asyncio.sleep(0.1)
    raise AssertionError("the case reached no state in 20 s")
