"""``MarginCallWorkflow``: one margin call case, from breach to an auditable close.

Deterministic orchestration only: activities are called by name (so this module
never imports asyncpg or httpx), time is ``workflow.now()``, and every decision
about money is taken on figures the ledger returned. Notices run beside the
case, never in its way: a dead notifier cannot delay a deadline or a stage.

The lifecycle (open, wait for money or time, liquidate in stages, close) and
the message handlers that change it (deposits, staff actions, the status
query) are one module on purpose: they share one state machine, and a reader
checking that a deposit can never race a stage needs both on one page. What
is not the lifecycle lives beside it: the wake-up timer (``timer.py``), the
notices (``notices.py``), the words, figures and metrics (``narrative.py``),
and the validation of messages (``domain/validation.py``).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import contract, narrative
    from workflows.contract import (
        CLOSED_STATES,
        BankruptcyRequest,
        BankruptcySettlement,
        CaseClosing,
        CaseEvent,
        CaseInput,
        CaseOpening,
        CaseOutcome,
        CaseState,
        CaseStatus,
        DeadlineExtension,
        Deposit,
        DepositReceipt,
        Notice,
        NoticeKind,
        RiskEscalation,
        StaffAction,
        StageRecord,
        StageRequest,
        StageResult,
        TimelineEntry,
        Waiver,
    )
    from workflows.domain.liquidation import plan_stage
    from workflows.domain.money import AmountError, display_money, money_amount
    from workflows.domain.policies import MAX_DEADLINE, CasePolicy, describe_span
    from workflows.domain.portfolio import MarginSnapshot
    from workflows.domain.validation import Submission, parse
    from workflows.notices import NoticeSender
    from workflows.timer import WakeUpTimer

ZERO = Decimal(0)
T = TypeVar("T")
# Since this patch a case closes without waiting for its notices (the ledger's outbox delivers them).
NOTICES_AFTER_CLOSE = "notices-after-close"
AWAITING = frozenset({CaseState.OPEN, CaseState.NOTIFIED, CaseState.AWAITING_DEPOSIT})

# A stage the venue refused, or that found it down after the activity's own tries:
# the case waits (never less than this) and plans the stage again.
VENUE_RETRY_AT_LEAST = timedelta(seconds=1)
VENUE_RETRY_AT_MOST = timedelta(minutes=5)

# Ledger work must finish: retry until it does, except for errors the ledger
# marks non-retryable (unknown account, idempotency conflict, ...).
LEDGER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


class Trigger(StrEnum):
    """What ended the wait for a deposit."""

    CURED = "cured"
    WAIVED = "waived"
    FORCED = "forced"
    ESCALATED = "escalated"
    DEADLINE = "deadline"


@workflow.defn(name=contract.WORKFLOW_TYPE)
class MarginCallWorkflow:
    @workflow.init
    def __init__(self, case: Any = None, *extra: Any) -> None:
        # Any start is taken, even a malformed one from the ``temporal`` CLI
        # (no input, a string, two arguments): the input arrives as raw JSON and
        # a bad one fails the case at once with words naming the field, instead
        # of failing every workflow task (a wedged case that blocks the account).
        self._input_problem: str | None = None
        if extra:
            self._input_problem = f"input: one argument expected, got {1 + len(extra)}"
        elif not isinstance(case, dict | BaseModel):
            self._input_problem = f"input: must be a JSON object, got {type(case).__name__}"
        else:
            try:
                case = parse(CaseInput, case)
            except ValueError as problem:
                self._input_problem = str(problem)
        if self._input_problem is not None:
            raw = case if isinstance(case, dict) else {}
            case = CaseInput.model_construct(
                account_id=str(raw.get("account_id", "?"))[:128], call_id="invalid", policy=CasePolicy()
            )
        self._input: CaseInput = case
        self._case_id = contract.case_id(case.account_id, case.call_id)
        self._state = CaseState.OPEN
        self._opened_at = workflow.now()
        self._closed_at: datetime | None = None
        self._deadline: datetime | None = None
        self._deadline_set_at = self._opened_at
        self._reminders_sent: set[datetime] = set()
        self._snapshot: MarginSnapshot | None = None
        self._snapshot_version = 0
        self._recheck = False
        self._escalated = False
        self._forced: StaffAction | None = None
        self._waived: Waiver | None = None
        self._deposits: list[str] = []
        self._stages: list[StageRecord] = []
        self._fees = ZERO
        self._fund_used = ZERO
        self._uncovered = ZERO
        self._notices = NoticeSender(lambda: self._input.policy.notice_delivery_window, self._log)
        self._notices_owed: list[str] = []
        self._notices_after_close = True
        self._staff_actions = 0
        self._timeline: list[TimelineEntry] = []
        self._timer = WakeUpTimer()

    # --- the case ---------------------------------------------------------------

    @workflow.run
    async def run(self, case: Any = None, *extra: Any) -> CaseOutcome:
        # Asked first, before any local activity: a patch marker recorded after
        # local activity markers in the same task does not replay.
        self._notices_after_close = workflow.patched(NOTICES_AFTER_CLOSE)
        if self._input_problem is not None:
            raise ApplicationError(
                f"invalid case input: {self._input_problem}",
                type=contract.CASE_NOT_OPENED,
                non_retryable=True,
            )
        case = self._input
        if workflow.info().typed_search_attributes.get(contract.MARGIN_CALL_STATE) is None:
            self._publish()  # started without our search attributes (e.g. the temporal CLI)
        opening = CaseOpening(
            case_id=self._case_id,
            account_id=case.account_id,
            call_id=case.call_id,
            opened_at=self._opened_at,
            policy_name=case.policy_name,
            policy=case.policy,
        )
        try:
            snapshot = await self._ledger(
                contract.ACTIVITY_OPEN_CASE, opening, MarginSnapshot, "Open the case and read the account"
            )
        except ActivityError as error:
            raise ApplicationError(
                f"cannot open a case for {case.account_id}: {error.cause or error}",
                type=contract.CASE_NOT_OPENED,
                non_retryable=True,
            ) from error
        self._observe(snapshot)
        narrative.case_opened()
        self._log(
            f"opened: equity {self._fmt(snapshot.figures.equity)}, "
            f"maintenance {self._fmt(snapshot.figures.maintenance_margin)}"
        )
        if not snapshot.in_breach:
            return await self._close(CaseState.CURED, "account above maintenance before notice", notify=False)

        self._deadline = self._opened_at + case.policy.deadline
        self._deadline_set_at = self._opened_at
        # NOTIFIED and AWAITING_DEPOSIT fall in the same workflow task: one upsert for both.
        self._set_state(CaseState.NOTIFIED, search=False)
        self._notify(NoticeKind.OPENED, "opened", self._call_message())
        self._set_state(CaseState.AWAITING_DEPOSIT)

        trigger = await self._await_deposit_or_deadline()
        if trigger == Trigger.CURED:
            return await self._close(CaseState.CURED, "account back above maintenance")
        if trigger == Trigger.WAIVED:
            assert self._waived is not None
            return await self._close(
                CaseState.WAIVED, f"waived by {self._waived.operator}: {self._waived.reason}"
            )
        return await self._liquidate(trigger)

    async def _await_deposit_or_deadline(self) -> Trigger:
        """Wait for money, time, risk or staff; returns what ended the wait."""
        policy = self._input.policy
        while True:
            if self._recheck:
                self._recheck = False
                await self._reread("Re-read the account after a deposit or a market move")
            if self._snapshot is not None and not self._snapshot.in_breach:
                return Trigger.CURED
            if self._waived is not None:
                return Trigger.WAIVED
            if self._forced is not None:
                return Trigger.FORCED
            if self._escalated or self._past_hard_threshold():
                return Trigger.ESCALATED
            assert self._deadline is not None
            now = workflow.now()
            if now >= self._deadline:
                # The ledger decides: a deposit that arrived without a message still counts.
                await self._reread("Re-read the account at the deadline")
                if self._snapshot is not None and not self._snapshot.in_breach:
                    return Trigger.CURED
                return Trigger.DEADLINE
            due = sorted(
                self._deadline - before
                for before in policy.reminders_before_deadline
                if self._deadline - before > self._deadline_set_at
                and self._deadline - before not in self._reminders_sent
            )
            if due and due[0] <= now:
                self._reminders_sent.add(due[0])
                await self._reread("Re-read the account for the reminder")
                if self._snapshot is not None and self._snapshot.in_breach:
                    self._notify(
                        NoticeKind.REMINDER, f"reminder:{len(self._reminders_sent)}", self._call_message()
                    )
                continue
            wake_at = min([self._deadline, *due])
            self._timer.set(wake_at, "deposit deadline" if wake_at == self._deadline else "next reminder")
            await workflow.wait_condition(lambda: self._needs_attention() or self._timer.rang)

    def _needs_attention(self) -> bool:
        return self._recheck or self._escalated or self._forced is not None or self._waived is not None

    async def _liquidate(self, trigger: Trigger) -> CaseOutcome:
        policy = self._input.policy
        self._timer.set(None, "")
        self._set_state(CaseState.LIQUIDATING)
        self._log(f"liquidation starts ({trigger})")
        if trigger != Trigger.DEADLINE:
            await self._reread("Re-read the account before liquidating")
        rejections = 0  # in a row, for the venue's back-off
        while True:
            if self._recheck:
                self._recheck = False
                await self._reread("Re-read the account after a deposit")
            snapshot = self._snapshot
            assert snapshot is not None
            if not snapshot.portfolio.positions:
                return await self._close_out(snapshot)
            if not snapshot.in_breach:
                # Never liquidate an account the ledger shows above maintenance.
                state = CaseState.RESTORED if self._stages else CaseState.CURED
                return await self._close(state, "account back above maintenance")
            stage = len(self._stages) + 1
            liquidation = policy.liquidation
            if stage >= policy.max_stages:
                liquidation = liquidation.model_copy(update={"fraction_per_stage": Decimal(1)})
            # Planning is pure arithmetic on the snapshot the ledger returned:
            # done here, not as an activity, it costs no history event, and the
            # plan is still written to history as the stage activity's input.
            plan = plan_stage(snapshot, liquidation)
            try:
                result = await self._stage(StageRequest(case_id=self._case_id, stage=stage, plan=plan))
            except ActivityError as error:
                cause = error.cause.type if isinstance(error.cause, ApplicationError) else None
                if cause == contract.ORDER_REJECTED:
                    # Final at the venue: nothing was sold; wait, then plan the stage again (a new order).
                    await self._venue_wait(stage, error, rejections)
                    rejections += 1
                    await self._reread("Re-read the account before trying the venue again")
                    continue
                if cause != contract.ACCOUNT_ABOVE_MAINTENANCE:
                    raise
                # The ledger moved (a deposit, the market) since the plan: it decides; nothing was sold.
                await self._reread("Re-read the account: the ledger refused to sell from a healthy account")
                continue
            self._record_stage(result)
            rejections = 0
            after = result.snapshot_after
            if after.in_breach and after.portfolio.positions and policy.pause_between_stages > timedelta(0):
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._recheck,
                        timeout=policy.pause_between_stages,
                        timeout_summary="pause between stages",
                    )

    async def _stage(self, request: StageRequest) -> StageResult:
        """Run one stage; while its venue does not answer, the same request again after a wait.

        An order that found the venue down may exist there: the stage is not
        planned again, nor the case closed, until the ledger has its answer
        (the activity resends the same client order id and books what it
        reports). Only the ``http`` venue fails this way, so recorded histories
        replay unchanged.
        """
        tries = 0
        while True:
            try:
                return await self._ledger(
                    contract.ACTIVITY_LIQUIDATION_STAGE,
                    request,
                    StageResult,
                    f"Liquidation stage {request.stage}: "
                    + ", ".join(f"{o.side} {o.quantity} {o.instrument}" for o in request.plan.orders),
                    local=False,
                )
            except ActivityError as error:
                if not (
                    isinstance(error.cause, ApplicationError)
                    and error.cause.type == contract.VENUE_UNAVAILABLE
                ):
                    raise
                await self._venue_wait(request.stage, error, tries)
                tries += 1

    async def _venue_wait(self, stage: int, error: ActivityError, tries: int) -> None:
        """Say in the timeline what the venue did, and wait: the pause between stages (at least a
        second), doubling with each try up to five minutes, so a long outage stays a short history."""
        assert isinstance(error.cause, ApplicationError)
        what = "rejected" if error.cause.type == contract.ORDER_REJECTED else "venue unavailable"
        base = max(self._input.policy.pause_between_stages, VENUE_RETRY_AT_LEAST)
        wait = min(base * 2 ** min(tries, 16), VENUE_RETRY_AT_MOST)
        self._log(f"stage {stage} {what}: {error.cause.message}; trying again in {describe_span(wait)}")
        await workflow.sleep(wait, summary=f"venue: {what}, retry")

    async def _close_out(self, snapshot: MarginSnapshot) -> CaseOutcome:
        # Debt in the settlement currency backed by other collateral is settled
        # too (that collateral sold), or nothing would ever watch it again.
        in_debt = any(c.asset == snapshot.currency and c.amount < 0 for c in snapshot.portfolio.collateral)
        if snapshot.figures.equity >= 0 and not in_debt:
            return await self._close(CaseState.CLOSED_OUT, "every position closed")
        settlement = await self._ledger(
            contract.ACTIVITY_SETTLE_BANKRUPTCY,
            BankruptcyRequest(case_id=self._case_id, fee_rate=self._input.policy.liquidation.fee_rate),
            BankruptcySettlement,
            "Sell other collateral, then cover what is still negative from the insurance fund",
        )
        self._fund_used = settlement.covered_by_insurance_fund
        self._uncovered = settlement.uncovered_loss
        for sale in settlement.collateral_sold:
            self._fees += sale.fee
            self._log(
                f"sold {sale.amount.normalize()} {sale.asset} collateral at {self._fmt(sale.price)}: "
                f"proceeds {self._fmt(sale.proceeds)}, fee {self._fmt(sale.fee)} to the insurance fund"
            )
        if settlement.deficit == 0:
            # Haircut equity was negative, but the trader's other collateral covered the loss.
            await self._reread("Re-read the account after selling collateral")
            return await self._close(
                CaseState.CLOSED_OUT, "every position closed; collateral sold to cover the loss"
            )
        self._log(
            f"bankrupt: deficit {self._fmt(settlement.deficit)}, insurance fund covered "
            f"{self._fmt(settlement.covered_by_insurance_fund)}, uncovered loss "
            f"{self._fmt(settlement.uncovered_loss)} recorded for auto-deleveraging"
        )
        await self._reread("Re-read the account after settlement")
        return await self._close(CaseState.BANKRUPT, "equity below zero after close-out")

    async def _close(self, state: CaseState, why: str, *, notify: bool = True) -> CaseOutcome:
        # The deadline timer is left to lapse with the case rather than cancelled:
        # a closed workflow's timers go without a history event, a cancel costs one.
        self._closed_at = workflow.now()
        self._set_state(state)
        narrative.case_closed(state)
        self._log(f"closed {state.value}: {why}")
        message = f"Margin call closed: {state.value} ({why})."
        if self._notices_after_close:
            # The case completes now, so a new breach of the account opens a new
            # case at once; what it still owes the trader (the close notice and
            # any notice still retrying) goes to the ledger's outbox with the
            # case record, and the dispatcher delivers it.
            owed = self._notices.owed()
            if notify:
                owed.append(self._notice(NoticeKind.CLOSED, "closed", message))
            await workflow.wait_condition(workflow.all_handlers_finished)
            self._notices_owed = [notice.notice_id for notice in owed]
            closing = CaseClosing(
                status=self.status(),
                notices=owed,
                notice_delivery_window=self._input.policy.notice_delivery_window,
                waiver=self._waived if state == CaseState.WAIVED else None,
            )
        else:
            # Histories recorded before the outbox waited here for every notice.
            if notify:
                self._notify(NoticeKind.CLOSED, "closed", message)
            await self._notices.all_settled()
            await workflow.wait_condition(workflow.all_handlers_finished)
            closing = CaseClosing(status=self.status())
        status = closing.status
        await self._ledger(
            contract.ACTIVITY_CLOSE_CASE, closing, type(None), f"Record the outcome: {state.value}"
        )
        return CaseOutcome(
            case_id=self._case_id, account_id=self._input.account_id, state=state, status=status
        )

    # --- messages ---------------------------------------------------------------
    # Handlers take a ``Submission`` and parse it themselves, so that a bad
    # message is refused with words that name the field (see validation.py).

    @workflow.signal(name=contract.SIGNAL_DEPOSIT)
    def deposit(self, submission: Submission) -> None:
        """A deposit handler credited the ledger; count the id once and re-read the account."""
        try:
            self._validate_deposit(submission)
        except ValueError as problem:
            # A signal has no answer: the refusal goes to the worker's log; nothing else changes.
            workflow.logger.warning("deposit signal ignored: %s", problem)
            return
        self._count_deposit(self._parse_deposit(submission))

    @workflow.update(name=contract.UPDATE_SUBMIT_DEPOSIT)
    async def submit_deposit(self, submission: Submission) -> DepositReceipt:
        deposit = self._parse_deposit(submission)
        counted = self._count_deposit(deposit)
        if counted:
            seen = self._snapshot_version
            await workflow.wait_condition(
                lambda: self._snapshot_version > seen or self._state in CLOSED_STATES
            )
        snapshot = self._snapshot
        assert snapshot is not None
        return DepositReceipt(
            deposit_id=deposit.deposit_id,
            counted=counted,
            state=self._state,
            equity=snapshot.figures.equity,
            maintenance_margin=snapshot.figures.maintenance_margin,
            shortfall=snapshot.figures.shortfall,
        )

    @submit_deposit.validator
    def _validate_deposit(self, submission: Submission) -> None:
        deposit = self._parse_deposit(submission)
        if self._state in CLOSED_STATES:
            raise ApplicationError(
                f"case is closed ({self._state.value}); the deposit stays credited to the account",
                type=contract.CASE_CLOSED,
            )
        problem = self._deposit_problem(deposit)
        if problem is not None:
            raise ValueError(problem)

    @workflow.signal(name=contract.SIGNAL_RISK_ESCALATED)
    def risk_escalated(self, submission: Submission) -> None:
        """The risk monitor saw the account past the hard threshold; a ledger re-read confirms it.

        The monitor's figures go to the timeline (what it saw, and when); the
        case acts only on the ledger's own figures, read again now.
        """
        if self._state in CLOSED_STATES:
            return
        try:
            seen = parse(RiskEscalation, submission)
        except ValueError as problem:
            workflow.logger.warning("risk escalation figures ignored: %s", problem)
        else:
            self._log(
                f"risk monitor saw equity {self._fmt(seen.equity)} against maintenance "
                f"{self._fmt(seen.maintenance_margin)}; re-reading the ledger"
            )
        self._recheck = True

    @workflow.update(name=contract.UPDATE_EXTEND_DEADLINE)
    async def extend_deadline(self, submission: Submission) -> CaseStatus:
        extension = parse(DeadlineExtension, submission)
        old = self._deadline
        self._deadline = extension.new_deadline
        self._deadline_set_at = workflow.now()
        self._publish()
        await self._staff_event(
            "extend_deadline", extension, f"deadline moved from {old} to {self._deadline}"
        )
        return self.status()

    @extend_deadline.validator
    def _validate_extension(self, submission: Submission) -> None:
        extension = parse(DeadlineExtension, submission)
        if self._state not in AWAITING or self._deadline is None:
            raise ValueError(f"state: cannot extend the deadline of a case that is {self._state.value}")
        if extension.new_deadline <= self._deadline:
            raise ValueError(
                f"new_deadline: must be later than the current deadline {self._deadline.isoformat()}"
            )
        latest = self._opened_at + self._input.policy.deadline + self._input.policy.max_deadline_extension
        if extension.new_deadline > latest:
            raise ValueError(f"new_deadline: policy allows at most {latest.isoformat()}")

    @workflow.update(name=contract.UPDATE_WAIVE)
    async def waive(self, submission: Submission) -> CaseStatus:
        action = parse(Waiver, submission)
        self._waived = action
        scope = f"until {action.until.isoformat()}" if action.until else "until the account recovers"
        await self._staff_event("waive", action, f"case waived without liquidation; holds {scope}")
        await workflow.wait_condition(lambda: self._state in CLOSED_STATES)
        return self.status()

    @waive.validator
    def _validate_waive(self, submission: Submission) -> None:
        waiver = parse(Waiver, submission)
        if self._waived is not None:
            raise ValueError(f"state: already waived by {self._waived.operator}")
        if self._state not in AWAITING or self._stages:
            raise ValueError(f"state: cannot waive a case that is {self._state.value}")
        if waiver.until is not None:  # a time without a zone is refused by the model
            now = workflow.now()
            if not now < waiver.until <= now + MAX_DEADLINE:
                raise ValueError(f"until: must be after now and at most {describe_span(MAX_DEADLINE)} ahead")

    @workflow.update(name=contract.UPDATE_FORCE_LIQUIDATION)
    async def force_liquidation(self, submission: Submission) -> CaseStatus:
        action = parse(StaffAction, submission)
        self._forced = action
        await self._staff_event("force_liquidation", action, "liquidation forced")
        return self.status()

    @force_liquidation.validator
    def _validate_force(self, submission: Submission) -> None:
        parse(StaffAction, submission)
        if self._state not in AWAITING or self._waived is not None:
            raise ValueError(f"state: cannot force liquidation of a case that is {self._state.value}")

    @workflow.query(name=contract.QUERY_STATUS)
    def status(self) -> CaseStatus:
        figures = self._snapshot.figures if self._snapshot else None
        return CaseStatus(
            case_id=self._case_id,
            account_id=self._input.account_id,
            call_id=self._input.call_id,
            state=self._state,
            currency=self._snapshot.currency if self._snapshot else None,
            opened_at=self._opened_at,
            deadline=self._deadline,
            equity=figures.equity if figures else None,
            maintenance_margin=figures.maintenance_margin if figures else None,
            shortfall=figures.shortfall if figures else None,
            deposit_needed=self._deposit_needed(),
            deposits_counted=list(self._deposits),
            stages=list(self._stages),
            fees_to_insurance_fund=self._fees,
            insurance_fund_used=self._fund_used,
            uncovered_loss=self._uncovered,
            notices_sent=self._notices.sent,
            notices_failed=list(self._notices.failed),
            notices_owed=list(self._notices_owed),
            timeline=list(self._timeline),
            closed_at=self._closed_at,
        )

    # --- helpers ----------------------------------------------------------------

    def _parse_deposit(self, submission: Submission) -> Deposit:
        """The deposit, naming this case's account when the message does not (as recorded before it did)."""
        return parse(Deposit, {"account_id": self._input.account_id, **submission.model_dump()})

    def _deposit_problem(self, deposit: Deposit) -> str | None:
        if deposit.account_id != self._input.account_id:
            return "account_id: this case is for another account; report the deposit to that account's case"
        currency = self._snapshot.currency if self._snapshot else None
        if currency is not None and deposit.currency != currency:
            return f"currency: this case settles in {currency}, not {deposit.currency}"
        try:
            places = self._snapshot.places if self._snapshot else None
            money_amount(deposit.amount, deposit.currency, places=places)
        except AmountError as error:
            return str(error)
        return None

    def _count_deposit(self, deposit: Deposit) -> bool:
        if deposit.deposit_id in self._deposits:
            return False
        self._deposits.append(deposit.deposit_id)
        narrative.deposit_counted()
        self._log(f"deposit {deposit.deposit_id} of {deposit.amount} {deposit.currency} reported")
        self._recheck = True
        return True

    async def _reread(self, summary: str) -> None:
        self._observe(
            await self._ledger(
                contract.ACTIVITY_READ_ACCOUNT, self._input.account_id, MarginSnapshot, summary
            )
        )

    def _observe(self, snapshot: MarginSnapshot) -> None:
        self._snapshot = snapshot
        self._snapshot_version += 1
        if snapshot.in_breach and self._past_hard_threshold():
            self._escalated = True
        self._publish(search=False)

    def _past_hard_threshold(self) -> bool:
        if self._snapshot is None:
            return False
        figures = self._snapshot.figures
        return figures.equity < figures.maintenance_margin * self._input.policy.hard_threshold

    def _deposit_needed(self) -> Decimal | None:
        return narrative.deposit_needed(self._snapshot)

    def _record_stage(self, result: StageResult) -> None:
        after = result.snapshot_after
        self._stages.append(
            StageRecord(
                stage=result.stage,
                fills=result.fills,
                sold_notional=result.sold_notional,
                fee=result.fee,
                equity_after=after.figures.equity,
                maintenance_after=after.figures.maintenance_margin,
                executed_at=workflow.now(),
            )
        )
        self._fees += result.fee
        narrative.stage_booked(result)
        sold = narrative.describe_fills(result.fills)
        self._log(
            f"stage {result.stage} {sold or 'sold nothing'}, fee {self._fmt(result.fee)} to the insurance fund"
        )
        self._observe(after)
        # The stage count is a search attribute; when this stage ends the
        # liquidation, the close that follows upserts it with the outcome.
        self._publish(search=after.in_breach and bool(after.portfolio.positions))
        self._notify(
            NoticeKind.LIQUIDATION_STAGE,
            f"stage:{result.stage}",
            f"Liquidation stage {result.stage}: {sold}; fee {self._fmt(result.fee)}.",
            stage=result,
        )

    async def _ledger(
        self, activity: str, arg: object, result_type: type[T], summary: str, *, local: bool = True
    ) -> T:
        """A ledger call, by default as a local activity: one marker in history, no task-queue trip.

        A local activity cut short by a worker crash runs again from the last
        completed workflow task, so only calls whose re-run is harmless are local:
        reads, and writes idempotent whatever they are given (case record,
        audit events, bankruptcy settlement). A liquidation stage is a regular
        activity: its plan is written to history before it runs, so a retry
        sells exactly what the first attempt planned, or finds it done.
        """
        timeout = self._input.policy.ledger_attempt_timeout
        if local:
            return await workflow.execute_local_activity(  # type: ignore[no-any-return]
                activity,
                arg,
                result_type=result_type,
                start_to_close_timeout=timeout,
                retry_policy=LEDGER_RETRY,
                summary=summary,
            )
        return await workflow.execute_activity(  # type: ignore[no-any-return]
            activity,
            arg,
            result_type=result_type,
            start_to_close_timeout=timeout,
            retry_policy=LEDGER_RETRY,
            summary=summary,
        )

    async def _staff_event(self, kind: str, action: StaffAction, what: str) -> None:
        self._staff_actions += 1
        self._log(f"{what} by {action.operator}: {action.reason}")
        self._notify(
            NoticeKind.STAFF_ACTION,
            f"staff:{self._staff_actions}",
            f"{what} by support staff: {action.reason}",
            operator=action.operator,
            reason=action.reason,
        )
        await self._ledger(
            contract.ACTIVITY_RECORD_CASE_EVENT,
            CaseEvent(
                case_id=self._case_id,
                event_id=f"{kind}:{self._staff_actions}",
                kind=kind,
                operator=action.operator,
                reason=action.reason,
                detail=what,
                at=workflow.now(),
            ),
            type(None),
            f"Record {kind} by {action.operator}",
        )

    def _set_state(self, state: CaseState, *, search: bool = True) -> None:
        self._state = state
        self._publish(search=search)

    def _publish(self, *, search: bool = True) -> None:
        """Keep the Web UI's details current, and the search attributes at each transition.

        Search attributes are upserted only when state, stage or deadline move
        (each upsert is a history event); the shortfall rides along then.
        """
        updates = narrative.search_updates(
            self._state, self._input.account_id, self._snapshot, len(self._stages), self._deadline
        )
        current = workflow.info().typed_search_attributes
        if search and any(current.get(u.key) != u.value for u in updates):
            workflow.upsert_search_attributes(updates)
        workflow.set_current_details(
            narrative.details(
                self._state,
                self._input.account_id,
                self._case_id,
                self._snapshot,
                self._deadline if self._state in AWAITING else None,
                len(self._stages),
                self._fees,
            )
        )

    def _call_message(self) -> str:
        return narrative.call_message(self._input.account_id, self._snapshot, self._deadline)

    def _notify(self, kind: NoticeKind, suffix: str, message: str, **details: Any) -> None:
        """Send a notice beside the case: retried within its window, never awaited by the case."""
        self._notices.send(self._notice(kind, suffix, message, **details))

    def _notice(
        self,
        kind: NoticeKind,
        suffix: str,
        message: str,
        *,
        stage: StageResult | None = None,
        operator: str | None = None,
        reason: str | None = None,
    ) -> Notice:
        return narrative.notice(
            kind,
            f"{self._case_id}:{suffix}",
            message,
            case_id=self._case_id,
            account_id=self._input.account_id,
            state=self._state,
            snapshot=self._snapshot,
            deadline=self._deadline,
            stage=stage,
            operator=operator,
            reason=reason,
        )

    def _log(self, what: str) -> None:
        self._timeline.append(TimelineEntry(at=workflow.now(), what=what))

    def _fmt(self, value: Decimal) -> str:
        return display_money(value)
