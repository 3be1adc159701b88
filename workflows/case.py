"""``MarginCallWorkflow``: one margin call case, from breach to an auditable close.

Deterministic orchestration only: activities are called by name (so this module
never imports asyncpg or httpx), time is ``workflow.now()``, and every decision
about money is taken on figures the ledger returned.

This module is the lifecycle: open, wait for money, time, risk or staff,
liquidate in stages, close. What is not the lifecycle lives beside it: the
message handlers the workflow inherits (``messages.py``: deposits, the risk
monitor, staff actions, the status query), which only put what they are told
on the case's record and ask for a re-read of the ledger; what the case has on
record and the checks a message must pass (``record.py``); the wake-up timer
(``timer.py``); the notices (``notices.py``); the ledger calls
(``ledger_calls.py``); a stage seen through whatever its venue does (``stages.py``); a large
waive awaiting a second operator (``waivers.py``); and the words, search attributes and metrics
(``narrative.py``). Every history event the case writes is issued from here or
from a handler, in the order the recorded histories replay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import contract, narrative, waivers
    from workflows.contract import (
        BankruptcyRequest,
        BankruptcySettlement,
        CaseClosing,
        CaseOpening,
        CaseOutcome,
        CaseState,
        NoticeKind,
        StageRequest,
        StageResult,
    )
    from workflows.domain.liquidation import plan_stage
    from workflows.domain.portfolio import MarginSnapshot
    from workflows.ledger_calls import call_ledger
    from workflows.messages import CaseMessages
    from workflows.notices import NoticeSender
    from workflows.record import CaseRecord, case_input
    from workflows.stages import backstop_due, run_stage, stage_request
    from workflows.timer import DeadlineTimer

T = TypeVar("T")
# Since this patch a case closes without waiting for its notices (the ledger's outbox delivers them).
NOTICES_AFTER_CLOSE = "notices-after-close"


class Trigger(StrEnum):
    """What ended the wait for a deposit."""

    CURED = "cured"
    WAIVED = "waived"
    FORCED = "forced"
    ESCALATED = "escalated"
    DEADLINE = "deadline"


@workflow.defn(name=contract.WORKFLOW_TYPE)
class MarginCallWorkflow(CaseMessages):
    @workflow.init
    def __init__(self, case: Any = None, *extra: Any) -> None:
        # Any start is taken (see ``case_input``): a bad one fails the case in ``run``, naming the field.
        parsed, self._input_problem = case_input(case, extra)
        self._record = CaseRecord(input=parsed, opened_at=workflow.now())
        self._recheck = False  # a deposit or the risk monitor asks for a re-read of the ledger
        self._escalated = False
        self._reminders_sent: set[datetime] = set()
        self._notices = NoticeSender(self._record)
        self._notices_after_close = True
        self._timer = DeadlineTimer()

    # --- the case ---------------------------------------------------------------

    @workflow.run
    async def run(self, case: Any = None, *extra: Any) -> CaseOutcome:
        record = self._record
        # Asked first, before any local activity: a patch marker recorded after
        # local activity markers in the same task does not replay.
        self._notices_after_close = workflow.patched(NOTICES_AFTER_CLOSE)
        if self._input_problem is not None:
            raise ApplicationError(
                f"invalid case input: {self._input_problem}",
                type=contract.CASE_NOT_OPENED,
                non_retryable=True,
            )
        if workflow.info().typed_search_attributes.get(contract.MARGIN_CALL_STATE) is None:
            narrative.publish(record)  # started without our search attributes (e.g. the temporal CLI)
        opening = CaseOpening(
            case_id=record.case_id,
            account_id=record.account_id,
            call_id=record.input.call_id,
            opened_at=record.opened_at,
            policy_name=record.input.policy_name,
            policy=record.policy,
        )
        try:
            snapshot = await self._ledger(
                contract.ACTIVITY_OPEN_CASE, opening, MarginSnapshot, "Open the case and read the account"
            )
        except ActivityError as error:
            raise ApplicationError(
                f"cannot open a case for {record.account_id}: {error.cause or error}",
                type=contract.CASE_NOT_OPENED,
                non_retryable=True,
            ) from error
        self._observe(snapshot)
        narrative.case_opened()
        record.log(narrative.opened_line(snapshot))
        if not snapshot.in_breach:
            return await self._close(CaseState.CURED, "account above maintenance before notice", notify=False)

        record.deadline = record.opened_at + record.policy.deadline
        record.deadline_set_at = record.opened_at
        # NOTIFIED and AWAITING_DEPOSIT fall in the same workflow task: one upsert for both.
        self._set_state(CaseState.NOTIFIED, search=False)
        self._notices.send(NoticeKind.OPENED, "opened", narrative.call_message(record))
        self._set_state(CaseState.AWAITING_DEPOSIT)

        trigger = await self._await_deposit_or_deadline()
        if trigger == Trigger.CURED:
            return await self._close(CaseState.CURED, "account back above maintenance")
        if trigger == Trigger.WAIVED:
            return await self._close(CaseState.WAIVED, waivers.closing_words(record))
        return await self._liquidate(trigger)

    async def _await_deposit_or_deadline(self) -> Trigger:
        """Wait for money, time, risk or staff; returns what ended the wait."""
        record = self._record
        while True:
            if self._recheck:
                self._recheck = False
                await self._reread("Re-read the account after a deposit or a market move")
            if record.healthy:
                return Trigger.CURED
            waivers.expire_if_due(record)  # a waive awaiting approval past its time lapses, in the timeline
            if record.waiver is not None:
                return Trigger.WAIVED
            if record.forced is not None:
                return Trigger.FORCED
            if self._escalated or record.past_hard_threshold():
                return Trigger.ESCALATED
            deadline = record.deadline
            assert deadline is not None
            now = workflow.now()
            if now >= deadline:
                # The ledger decides: a deposit that arrived without a message still counts.
                await self._reread("Re-read the account at the deadline")
                return Trigger.CURED if record.healthy else Trigger.DEADLINE
            due = sorted(
                deadline - before
                for before in record.policy.reminders_before_deadline
                if deadline - before > record.deadline_set_at
                and deadline - before not in self._reminders_sent
            )
            if due and due[0] <= now:
                self._reminders_sent.add(due[0])
                await self._reread("Re-read the account for the reminder")
                if record.in_breach:
                    reminder = f"reminder:{len(self._reminders_sent)}"
                    self._notices.send(NoticeKind.REMINDER, reminder, narrative.call_message(record))
                continue
            # A waive awaiting approval wakes the case when it expires (never in cases recorded before the rule).
            expires = waivers.expiry(record)
            wake_at = min([deadline, *due, *expires])
            label = "waive approval expires" if wake_at in expires else "next reminder"
            self._timer.wake_at(wake_at, "deposit deadline" if wake_at == deadline else label)
            await workflow.wait_condition(self._wake_check(record.pending_waiver))

    def _needs_attention(self) -> bool:
        record = self._record
        return self._recheck or self._escalated or record.forced is not None or record.waiver is not None

    def _wake_check(self, pending: object) -> Callable[[], bool]:
        """What ends the wait: attention, the timer, or a waive request made or ended since ``pending``."""
        record = self._record
        return lambda: self._needs_attention() or self._timer.rang or record.pending_waiver is not pending

    async def _liquidate(self, trigger: Trigger) -> CaseOutcome:
        record = self._record
        self._timer.stop()
        waivers.lapse(record, f"liquidation starts ({trigger})")  # a pending approval never holds it up
        self._set_state(CaseState.LIQUIDATING)
        record.log(f"liquidation starts ({trigger})")
        if trigger != Trigger.DEADLINE:
            await self._reread("Re-read the account before liquidating")
        while True:
            if self._recheck:
                self._recheck = False
                await self._reread("Re-read the account after a deposit")
            snapshot = record.snapshot
            assert snapshot is not None
            if not snapshot.portfolio.positions:
                return await self._close_out(snapshot)
            if not snapshot.in_breach:
                # Never liquidate an account the ledger shows above maintenance.
                state = CaseState.RESTORED if record.stages else CaseState.CURED
                return await self._close(state, "account back above maintenance")
            stage = len(record.stages) + 1
            liquidation = record.policy.liquidation
            if stage >= record.policy.max_stages or backstop_due(record):
                liquidation = liquidation.model_copy(update={"fraction_per_stage": Decimal(1)})
            # Planning is pure arithmetic on the snapshot the ledger returned:
            # done here, not as an activity, it costs no history event, and the
            # plan is still written to history as the stage activity's input.
            plan = plan_stage(snapshot, liquidation)
            hold = record.hold_needed(snapshot, plan)
            if hold is not None:
                await self._wait_on_hold(*hold)
                continue
            self._release_hold()
            try:
                result = await run_stage(record, stage_request(record, stage, plan), self._stage)
            except ActivityError as error:
                refusal = error.cause.type if isinstance(error.cause, ApplicationError) else None
                if refusal in (contract.STALE_MARKS, contract.INSTRUMENT_HALTED):
                    # The ledger saw a stale mark or a halt the snapshot did not: nothing was sold.
                    assert isinstance(error.cause, ApplicationError)
                    held = (
                        contract.HOLD_STALE_MARKS if refusal == contract.STALE_MARKS else contract.HOLD_HALTED
                    )
                    await self._wait_on_hold(held, error.cause.message)
                    continue
                if refusal != contract.ACCOUNT_ABOVE_MAINTENANCE:
                    raise
                # The ledger moved (a deposit, the market) since the plan: it decides; nothing was sold.
                await self._reread("Re-read the account: the ledger refused to sell from a healthy account")
                continue
            self._record_stage(result)
            after = result.snapshot_after
            pause = record.policy.pause_between_stages
            if after.in_breach and after.portfolio.positions and pause > timedelta(0):
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._recheck, timeout=pause, timeout_summary="pause between stages"
                    )

    async def _wait_on_hold(self, kind: str, reason: str) -> None:
        """No stage until fresh marks or a resumed instrument; the ledger is re-read on a backing-off timer."""
        if self._record.hold_starts(kind, reason):
            narrative.publish(self._record)
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._recheck,
                timeout=self._record.next_hold_wait(),
                timeout_summary="liquidation held: waiting for fresh marks",
            )
        self._recheck = False
        await self._reread("Re-read the account while liquidation is held")

    def _release_hold(self) -> None:
        if self._record.hold_ends():
            narrative.publish(self._record)

    async def _close_out(self, snapshot: MarginSnapshot) -> CaseOutcome:
        record = self._record
        # Debt in the settlement currency backed by other collateral is settled
        # too (that collateral sold), or nothing would ever watch it again.
        in_debt = any(c.asset == snapshot.currency and c.amount < 0 for c in snapshot.portfolio.collateral)
        if snapshot.figures.equity >= 0 and not in_debt:
            return await self._close(CaseState.CLOSED_OUT, "every position closed")
        settlement = await self._ledger(
            contract.ACTIVITY_SETTLE_BANKRUPTCY,
            BankruptcyRequest(case_id=record.case_id, fee_rate=record.policy.liquidation.fee_rate),
            BankruptcySettlement,
            "Sell other collateral, then cover what is still negative from the insurance fund",
        )
        record.add_settlement(settlement)
        for sale in settlement.collateral_sold:
            record.log(narrative.sale_line(sale))
        if settlement.deficit == 0:
            # Haircut equity was negative, but the trader's other collateral covered the loss.
            await self._reread("Re-read the account after selling collateral")
            return await self._close(
                CaseState.CLOSED_OUT, "every position closed; collateral sold to cover the loss"
            )
        record.log(narrative.bankrupt_line(settlement))
        await self._reread("Re-read the account after settlement")
        return await self._close(CaseState.BANKRUPT, "equity below zero after close-out")

    async def _close(self, state: CaseState, why: str, *, notify: bool = True) -> CaseOutcome:
        record = self._record
        # The deadline timer is left to lapse with the case rather than cancelled:
        # a closed workflow's timers go without a history event, a cancel costs one.
        record.closed_at = workflow.now()
        record.hold = record.hold_reason = None
        waivers.lapse(record, f"the case closed {state.value}")
        self._set_state(state)
        narrative.case_closed(state)
        record.log(f"closed {state.value}: {why}")
        message = narrative.closed_message(state, why)
        if self._notices_after_close:
            # The case completes now, so a new breach of the account opens a new
            # case at once; what it still owes the trader (the close notice and
            # any notice still retrying) goes to the ledger's outbox with the
            # case record, and the dispatcher delivers it.
            owed = self._notices.owed()
            if notify:
                owed.append(narrative.notice(record, NoticeKind.CLOSED, "closed", message))
            await workflow.wait_condition(workflow.all_handlers_finished)
            record.notices_owed = [notice.notice_id for notice in owed]
            closing = CaseClosing(
                status=self.status(),
                notices=owed,
                notice_delivery_window=record.policy.notice_delivery_window,
                waiver=record.waiver if state == CaseState.WAIVED else None,
                waiver_approval=record.waiver_approval if state == CaseState.WAIVED else None,
            )
        else:
            # Histories recorded before the outbox waited here for every notice.
            if notify:
                self._notices.send(NoticeKind.CLOSED, "closed", message)
            await self._notices.all_settled()
            await workflow.wait_condition(workflow.all_handlers_finished)
            closing = CaseClosing(status=self.status())
        await self._ledger(
            contract.ACTIVITY_CLOSE_CASE, closing, type(None), f"Record the outcome: {state.value}"
        )
        return CaseOutcome(
            case_id=record.case_id, account_id=record.account_id, state=state, status=closing.status
        )

    # --- steps ------------------------------------------------------------------

    async def _reread(self, summary: str) -> None:
        self._observe(
            await self._ledger(
                contract.ACTIVITY_READ_ACCOUNT, self._record.account_id, MarginSnapshot, summary
            )
        )

    def _observe(self, snapshot: MarginSnapshot) -> None:
        self._record.observe(snapshot)
        if snapshot.in_breach and self._record.past_hard_threshold():
            self._escalated = True
        narrative.publish(self._record, search=False)

    def _record_stage(self, result: StageResult) -> None:
        after = result.snapshot_after
        self._record.add_stage(result)
        narrative.stage_booked(result)
        self._record.log(narrative.stage_line(result))
        self._observe(after)
        # The stage count is a search attribute; when this stage ends the
        # liquidation, the close that follows upserts it with the outcome.
        narrative.publish(self._record, search=after.in_breach and bool(after.portfolio.positions))
        self._notices.send(
            NoticeKind.LIQUIDATION_STAGE,
            f"stage:{result.stage}",
            narrative.stage_message(result),
            stage=result,
        )

    async def _stage(self, request: StageRequest) -> StageResult:
        summary = narrative.stage_summary(request.stage, request.plan)
        return await self._ledger(
            contract.ACTIVITY_LIQUIDATION_STAGE, request, StageResult, summary, local=False
        )

    def _set_state(self, state: CaseState, *, search: bool = True) -> None:
        self._record.state = state
        narrative.publish(self._record, search=search)

    async def _ledger(
        self, activity: str, arg: object, result_type: type[T], summary: str, *, local: bool = True
    ) -> T:
        timeout = self._record.policy.ledger_attempt_timeout
        return await call_ledger(activity, arg, result_type, summary, timeout=timeout, local=local)
