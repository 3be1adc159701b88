"""``CaseMessages``: what callers may tell a case and ask of it, the handlers ``MarginCallWorkflow`` inherits.

Deposits (an update that answers with a receipt, or a signal), the risk
monitor's escalation, the staff actions (extend the deadline, waive, approve
a waive the policy holds to two people, force liquidation) and the status
query. A handler decides nothing about money: it
puts what it was told on the case's record (``record.py``) and, for a deposit
or an escalation, asks the lifecycle (``case.py``) to read the ledger again
(``_recheck``); the lifecycle acts on the ledger's figures. So a deposit can
never race a stage: only the lifecycle sells, and only after a re-read.

Handlers take a ``Submission`` and parse it themselves, so that a bad message
is refused with words that name the field (see ``domain/validation.py``).
Validators run before an update is accepted and leave no trace in history.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import contract, narrative, waivers
    from workflows.contract import (
        CaseEvent,
        CaseStatus,
        DeadlineExtension,
        Deposit,
        DepositReceipt,
        NoticeKind,
        RiskEscalation,
        StaffAction,
        Waiver,
    )
    from workflows.domain.validation import Submission, parse
    from workflows.ledger_calls import call_ledger
    from workflows.notices import NoticeSender
    from workflows.record import CaseRecord


class CaseMessages:
    # Set by the workflow's ``__init__``.
    _record: CaseRecord
    _notices: NoticeSender
    _recheck: bool  # a deposit or the risk monitor asks the lifecycle to read the ledger again

    @workflow.signal(name=contract.SIGNAL_DEPOSIT)
    def deposit(self, submission: Submission) -> None:
        """A deposit handler credited the ledger; count the id once and re-read the account."""
        try:
            self._validate_deposit(submission)
        except (ValueError, ApplicationError) as problem:
            # A signal has no answer: the refusal goes to the worker's log; nothing else changes.
            workflow.logger.warning("deposit signal ignored: %s", problem)
            return
        self._count_deposit(self._record.parse_deposit(submission))

    @workflow.update(name=contract.UPDATE_SUBMIT_DEPOSIT)
    async def submit_deposit(self, submission: Submission) -> DepositReceipt:
        record = self._record
        deposit = record.parse_deposit(submission)
        counted = self._count_deposit(deposit)
        if counted:
            seen = record.snapshot_version
            await workflow.wait_condition(lambda: record.snapshot_version > seen or record.closed)
        snapshot = record.snapshot
        assert snapshot is not None
        return DepositReceipt(
            deposit_id=deposit.deposit_id,
            counted=counted,
            state=record.state,
            equity=snapshot.figures.equity,
            maintenance_margin=snapshot.figures.maintenance_margin,
            shortfall=snapshot.figures.shortfall,
        )

    @submit_deposit.validator
    def _validate_deposit(self, submission: Submission) -> None:
        record = self._record
        deposit = record.parse_deposit(submission)
        if record.closed:
            # Typed, so that the client tells "no open case" from a bad deposit without reading words.
            raise ApplicationError(
                f"case is closed ({record.state.value}); the deposit stays credited to the account",
                type=contract.CASE_CLOSED,
            )
        record.check_deposit(deposit)

    @workflow.signal(name=contract.SIGNAL_RISK_ESCALATED)
    def risk_escalated(self, submission: Submission) -> None:
        """The risk monitor saw the account past the hard threshold; a ledger re-read confirms it.

        The monitor's figures go to the timeline (what it saw, and when); the
        case acts only on the ledger's own figures, read again now.
        """
        if self._record.closed:
            return
        try:
            seen = parse(RiskEscalation, submission)
        except ValueError as problem:
            workflow.logger.warning("risk escalation figures ignored: %s", problem)
        else:
            self._record.log(narrative.escalation_line(seen))
        self._recheck = True

    @workflow.update(name=contract.UPDATE_EXTEND_DEADLINE)
    async def extend_deadline(self, submission: Submission) -> CaseStatus:
        record = self._record
        extension = parse(DeadlineExtension, submission)
        old = record.deadline
        record.deadline = extension.new_deadline
        record.deadline_set_at = workflow.now()
        narrative.publish(record)
        await self._staff_event(
            "extend_deadline", extension, f"deadline moved from {old} to {record.deadline}"
        )
        return self.status()

    @extend_deadline.validator
    def _validate_extension(self, submission: Submission) -> None:
        self._record.check_extension(parse(DeadlineExtension, submission))

    @workflow.update(name=contract.UPDATE_WAIVE)
    async def waive(self, submission: Submission) -> CaseStatus:
        action = parse(Waiver, submission)
        record = self._record
        waivers.expire_if_due(record)  # a request past its time (not yet seen by the lifecycle) lapses first
        if waivers.approval_needed(record):
            # Above the policy's amount: on record, in effect only once a second operator approves.
            # The trader is not told of a request: it must not read as a reason to stop paying.
            pending = waivers.request(record, action)
            narrative.publish(record, search=False)
            above = record.policy.waive_approval_above
            assert above is not None
            what = narrative.waive_requested_line(pending, above)
            await self._staff_event("waive", action, what, notify=False)
            return self.status()
        record.waiver = action
        await self._staff_event("waive", action, narrative.waiver_line(action))
        await workflow.wait_condition(lambda: self._record.closed)
        return self.status()

    @waive.validator
    def _validate_waive(self, submission: Submission) -> None:
        self._record.check_waiver(parse(Waiver, submission))
        waivers.check_request(self._record)

    @workflow.update(name=contract.UPDATE_APPROVE_WAIVE)
    async def approve_waive(self, submission: Submission) -> CaseStatus:
        """A second operator puts a pending waive into effect: the case closes WAIVED, both names on record."""
        approval = parse(StaffAction, submission)
        waiver = waivers.approve(self._record, approval)
        await self._staff_event("approve_waive", approval, narrative.waive_approved_line(waiver))
        await workflow.wait_condition(lambda: self._record.closed)
        return self.status()

    @approve_waive.validator
    def _validate_approve_waive(self, submission: Submission) -> None:
        waivers.check_approval(self._record, parse(StaffAction, submission))

    @workflow.update(name=contract.UPDATE_FORCE_LIQUIDATION)
    async def force_liquidation(self, submission: Submission) -> CaseStatus:
        action = parse(StaffAction, submission)
        self._record.forced = action
        await self._staff_event("force_liquidation", action, "liquidation forced")
        return self.status()

    @force_liquidation.validator
    def _validate_force(self, submission: Submission) -> None:
        parse(StaffAction, submission)
        self._record.check_force()

    @workflow.query(name=contract.QUERY_STATUS)
    def status(self) -> CaseStatus:
        return self._record.status(self._notices.sent, self._notices.failed)

    def _count_deposit(self, deposit: Deposit) -> bool:
        if not self._record.count_deposit(deposit):
            return False
        narrative.deposit_counted()
        self._record.log(narrative.deposit_line(deposit))
        self._recheck = True
        return True

    async def _staff_event(self, kind: str, action: StaffAction, what: str, *, notify: bool = True) -> None:
        """A staff action on the record: the timeline, a notice to the trader (if ``notify``), the ledger's audit event."""
        record = self._record
        record.staff_actions += 1
        record.log(narrative.staff_line(what, action))
        if notify:
            self._notices.send(
                NoticeKind.STAFF_ACTION,
                f"staff:{record.staff_actions}",
                narrative.staff_message(what, action),
                operator=action.operator,
                reason=action.reason,
            )
        event = CaseEvent(
            case_id=record.case_id,
            event_id=f"{kind}:{record.staff_actions}",
            kind=kind,
            operator=action.operator,
            reason=action.reason,
            detail=what,
            at=workflow.now(),
        )
        await call_ledger(
            contract.ACTIVITY_RECORD_CASE_EVENT,
            event,
            type(None),
            f"Record {kind} by {action.operator}",
            timeout=record.policy.ledger_attempt_timeout,
        )
