"""Commands on cases: open one, report a deposit, list, show, and the staff actions.

Everything a case would refuse at once is refused here first, with exit 2 and
the field's name, so that a caller never gets a workflow id for a case that
fails moments later.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio.service import RPCError, RPCStatusCode

from activities.exceptions import UnknownAccount
from worker.cli import _output
from worker.cli._resources import case_client, ledger_pool
from worker.config import Settings
from workflows.contract import CaseInput, DeadlineExtension, Deposit, StaffAction, Waiver
from workflows.domain.policies import PolicyOverrides


async def start(
    settings: Settings,
    account_id: str,
    call_id: str | None,
    deadline: timedelta | None,
    policy_name: str,
    as_json: bool,
) -> int:
    """Open the account's case (or join the open one) under the operator's policy ``policy_name``.

    A case for an account the ledger does not know, or under a policy the
    operator's book refuses, fails moments after it starts; refused here, the
    caller gets exit 2 and a reason instead of a workflow id.
    """
    from activities.ledger import account_exists

    call_id = call_id or "cli-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    CaseInput.model_validate({"account_id": account_id, "call_id": call_id})
    overrides = PolicyOverrides(deadline=deadline) if deadline is not None else None
    policy = settings.policies.resolve(policy_name, overrides)
    async with ledger_pool(settings) as pool:
        known = await account_exists(pool, account_id)
    if not known:
        raise UnknownAccount(f"account_id: no account {account_id!r}")
    cases = await case_client(settings)
    handle = await cases.open_case(account_id, call_id, policy, policy_name=policy_name)
    _output.case_opened(handle.id, handle.result_run_id, call_id, account_id, as_json)
    return 0


async def deposit(
    settings: Settings,
    deposit: Deposit,
    *,
    report_by_signal: bool,
    credit_only: bool,
    as_json: bool,
    amount_as_typed: str,
) -> int:
    """Credit the deposit to the ledger, then (unless ``credit_only``) report it to the account's case."""
    from activities.ledger import PostgresDeposits

    async with ledger_pool(settings) as pool:
        ledger = PostgresDeposits(pool)
        if credit_only:
            booking = await ledger.credit(deposit)
            _output.deposit_credited(booking, amount_as_typed, deposit.currency, deposit.account_id, as_json)
            return 0
        cases = await case_client(settings)
        report = await cases.report_deposit(ledger, deposit, wait=not report_by_signal)
    _output.deposit_reported(report, amount_as_typed, deposit.currency, deposit.account_id, as_json)
    return 0


async def list_cases(
    settings: Settings,
    state: str | None,
    account_id: str | None,
    since: datetime | None,
    deadline_before: datetime | None,
    as_json: bool,
) -> int:
    cases = await case_client(settings)
    found = await cases.list_cases(
        state=state, account_id=account_id, opened_since=since, deadline_before=deadline_before
    )
    _output.case_table(found, as_json)
    return 0


async def show(settings: Settings, account_id: str, as_json: bool) -> int:
    """The account's latest case: its status and timeline, or why it ended without an outcome."""
    cases = await case_client(settings)
    try:
        case = await cases.show(account_id)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise ValueError(f"account_id: no case for {account_id!r}") from None
        raise
    _output.case_shown(case, as_json)
    return 0


async def extend(
    settings: Settings, account_id: str, action: StaffAction, by: timedelta, as_json: bool
) -> int:
    """Move the case's deadline ``by`` later than it is now."""
    cases = await case_client(settings)
    current = await cases.status(account_id)
    if current.deadline is None:
        raise ValueError("state: this case has no deadline to extend")
    extension = DeadlineExtension(
        operator=action.operator, reason=action.reason, new_deadline=current.deadline + by
    )
    _output.case_shown(await cases.extend_deadline(account_id, extension), as_json)
    return 0


async def waive(
    settings: Settings, account_id: str, action: StaffAction, hold: timedelta | None, as_json: bool
) -> int:
    """Close the case without liquidation; no new case for the account for ``hold`` (or until it recovers)."""
    cases = await case_client(settings)
    until = datetime.now(UTC) + hold if hold else None
    waiver = Waiver(operator=action.operator, reason=action.reason, until=until)
    _output.case_shown(await cases.waive(account_id, waiver), as_json)
    return 0


async def approve_waive(settings: Settings, account_id: str, approval: StaffAction, as_json: bool) -> int:
    """A second operator puts the case's pending waive into effect; the case closes WAIVED."""
    cases = await case_client(settings)
    _output.case_shown(await cases.approve_waive(account_id, approval), as_json)
    return 0


async def force(settings: Settings, account_id: str, action: StaffAction, as_json: bool) -> int:
    """Start liquidating now, whatever the deadline."""
    cases = await case_client(settings)
    _output.case_shown(await cases.force_liquidation(account_id, action), as_json)
    return 0
