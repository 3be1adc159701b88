"""``CaseRecord``: what a case has on record, and the checks a message must pass against it.

The figures the ledger last returned, the deadline, the deposits counted, the
stages and their fees, what the insurance fund covered, staff decisions and the
timeline. The status query answers from it, and the close hands that status to
the ledger as the case record. The update validators' checks read only the
record, so they live here beside it, apart from the lifecycle (``case.py``)
that acts on what they let through.

Workflow code: time is ``workflow.now()``, and nothing here issues a command
(no activity, timer or search attribute), so what the record keeps and how it
is laid out can change without touching recorded histories.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from temporalio import workflow

from workflows import contract
from workflows.contract import (
    CLOSED_STATES,
    BankruptcySettlement,
    CaseInput,
    CaseState,
    CaseStatus,
    DeadlineExtension,
    Deposit,
    PendingWaiver,
    StaffAction,
    StageRecord,
    StageResult,
    TimelineEntry,
    Waiver,
    WaiverApproval,
)
from workflows.domain.liquidation import LiquidationPlan
from workflows.domain.money import DISPLAY_PRECISION, AmountError, money_amount
from workflows.domain.policies import MAX_DEADLINE, CasePolicy, describe_span
from workflows.domain.portfolio import MarginSnapshot
from workflows.domain.validation import Submission, parse

ZERO = Decimal(0)
# Waiting for money or time: the states in which staff may still extend, waive or force.
AWAITING = frozenset({CaseState.OPEN, CaseState.NOTIFIED, CaseState.AWAITING_DEPOSIT})


def deposit_needed(snapshot: MarginSnapshot | None) -> Decimal | None:
    """The shortfall in the settlement currency's units, rounded up: a deposit of this much cures."""
    if snapshot is None:
        return None
    # Enough significant digits that quantizing any figure the ledger can hold never overflows the context.
    with decimal.localcontext() as ctx:
        ctx.prec = DISPLAY_PRECISION
        return snapshot.figures.shortfall.quantize(
            Decimal(1).scaleb(-snapshot.places), rounding=decimal.ROUND_UP
        )


def case_input(case: Any, extra: tuple[Any, ...]) -> tuple[CaseInput, str | None]:
    """The case's input, and what is wrong with it (None when nothing is).

    Any start is taken, even a malformed one from the ``temporal`` CLI (no
    input, a string, two arguments): the input arrives as raw JSON, and a bad
    one fails the case at once with words naming the field, instead of failing
    every workflow task (a wedged case that blocks the account). A bad input
    still gives an input to record the case under: its account id if it had one.
    """
    problem: str | None = None
    if extra:
        problem = f"input: one argument expected, got {1 + len(extra)}"
    elif not isinstance(case, dict | BaseModel):
        problem = f"input: must be a JSON object, got {type(case).__name__}"
    else:
        try:
            return parse(CaseInput, case), None
        except ValueError as error:
            problem = str(error)
    raw = case if isinstance(case, dict) else {}
    placeholder = CaseInput.model_construct(
        account_id=str(raw.get("account_id", "?"))[:128], call_id="invalid", policy=CasePolicy()
    )
    return placeholder, problem


# A held liquidation re-reads the ledger after 1 s, 2 s, 4 s ... (a deposit or the monitor's signal wakes it at once).
HOLD_FIRST_RECHECK = timedelta(seconds=1)
HOLD_LAST_RECHECK = timedelta(seconds=60)
# What a held case waits for, by hold, in its timeline.
HOLD_WAITS_FOR = {
    contract.HOLD_STALE_MARKS: ("waiting for fresh marks", "marks fresh and instruments trading"),
    contract.HOLD_HALTED: ("waiting for fresh marks", "marks fresh and instruments trading"),
    contract.HOLD_VENUE: ("trying the venue again", "the venue answered"),
}


@dataclass
class CaseRecord:
    """The case's figures and history: what its status reports and its close hands to the ledger."""

    input: CaseInput
    opened_at: datetime
    state: CaseState = CaseState.OPEN
    closed_at: datetime | None = None
    deadline: datetime | None = None
    snapshot: MarginSnapshot | None = None
    # Bumped at every read of the ledger: a deposit's update waits for a newer one.
    snapshot_version: int = 0
    waiver: Waiver | None = None
    # A waive above the policy's amount awaiting a second operator (``waivers.py``), the approval
    # that put it into effect, and the last one that lapsed (an approval after it is refused naming it).
    pending_waiver: PendingWaiver | None = None
    waiver_approval: WaiverApproval | None = None
    lapsed_waiver: PendingWaiver | None = None
    lapsed_why: str | None = None
    forced: StaffAction | None = None
    staff_actions: int = 0
    deposits: list[str] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)
    fees: Decimal = ZERO
    fund_used: Decimal = ZERO
    uncovered: Decimal = ZERO
    notices_owed: list[str] = field(default_factory=list)
    # Why liquidation waits (stale marks, halted instruments), and whether it ever did.
    hold: str | None = None
    hold_reason: str | None = None
    held_once: bool = False
    hold_rechecks: int = 0
    # Stages in a row whose venue filled nothing within the trader's limit (the ``http`` venue).
    unfilled_stages: int = 0
    timeline: list[TimelineEntry] = field(default_factory=list)
    case_id: str = field(init=False)
    # When the deadline was last set: reminders due before then are not sent.
    deadline_set_at: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.case_id = contract.case_id(self.input.account_id, self.input.call_id)
        self.deadline_set_at = self.opened_at

    @property
    def account_id(self) -> str:
        return self.input.account_id

    @property
    def policy(self) -> CasePolicy:
        return self.input.policy

    @property
    def closed(self) -> bool:
        return self.state in CLOSED_STATES

    @property
    def in_breach(self) -> bool:
        """The ledger's last figures show the account below maintenance."""
        return self.snapshot is not None and self.snapshot.in_breach

    @property
    def healthy(self) -> bool:
        """The ledger's last figures show the account at or above maintenance."""
        return self.snapshot is not None and not self.snapshot.in_breach

    def log(self, what: str) -> None:
        self.timeline.append(TimelineEntry(at=workflow.now(), what=what))

    def observe(self, snapshot: MarginSnapshot) -> None:
        self.snapshot = snapshot
        self.snapshot_version += 1

    def past_hard_threshold(self) -> bool:
        if self.snapshot is None:
            return False
        figures = self.snapshot.figures
        return figures.equity < figures.maintenance_margin * self.policy.hard_threshold

    def count_deposit(self, deposit: Deposit) -> bool:
        """Count the deposit id once; False when it was counted before."""
        if deposit.deposit_id in self.deposits:
            return False
        self.deposits.append(deposit.deposit_id)
        return True

    def add_stage(self, result: StageResult) -> None:
        after = result.snapshot_after
        self.stages.append(
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
        self.fees += result.fee

    def add_settlement(self, settlement: BankruptcySettlement) -> None:
        self.fund_used = settlement.covered_by_insurance_fund
        self.uncovered = settlement.uncovered_loss
        for sale in settlement.collateral_sold:
            self.fees += sale.fee

    def status(self, notices_sent: int, notices_failed: list[str]) -> CaseStatus:
        figures = self.snapshot.figures if self.snapshot else None
        return CaseStatus(
            case_id=self.case_id,
            account_id=self.input.account_id,
            call_id=self.input.call_id,
            state=self.state,
            currency=self.snapshot.currency if self.snapshot else None,
            opened_at=self.opened_at,
            deadline=self.deadline,
            equity=figures.equity if figures else None,
            maintenance_margin=figures.maintenance_margin if figures else None,
            shortfall=figures.shortfall if figures else None,
            deposit_needed=deposit_needed(self.snapshot),
            deposits_counted=list(self.deposits),
            stages=list(self.stages),
            fees_to_insurance_fund=self.fees,
            insurance_fund_used=self.fund_used,
            uncovered_loss=self.uncovered,
            notices_sent=notices_sent,
            notices_failed=list(notices_failed),
            notices_owed=list(self.notices_owed),
            timeline=list(self.timeline),
            closed_at=self.closed_at,
            hold=self.hold,
            hold_reason=self.hold_reason,
            pending_waiver=self.pending_waiver,
            waiver=self.waiver,
            waiver_approval=self.waiver_approval,
        )

    def hold_needed(self, snapshot: MarginSnapshot, plan: LiquidationPlan) -> tuple[str, str] | None:
        """Why this stage must not run on this snapshot: a stale mark, or nothing sellable but halted.

        Only snapshots that report marks' ages and halts can say so; those
        recorded before never do, so their histories replay as they ran.
        """
        stale = snapshot.stale_marks(self.policy.max_mark_age)
        if stale:
            age = describe_span(self.policy.max_mark_age)
            names = ", ".join(p.instrument for p in stale)
            return contract.HOLD_STALE_MARKS, f"marks older than {age}: {names}"
        if not plan.orders and snapshot.halted_positions:
            names = ", ".join(p.instrument for p in snapshot.halted_positions)
            return contract.HOLD_HALTED, f"every position left is in a halted instrument: {names}"
        return None

    def hold_starts(self, kind: str, reason: str) -> bool:
        """Put a hold on record (said once in the timeline, and in ``MarginCallHold``); True if it is new."""
        if self.hold == kind:
            return False
        self.hold, self.hold_reason, self.held_once = kind, reason, True
        waits_for = HOLD_WAITS_FOR.get(kind, HOLD_WAITS_FOR[contract.HOLD_STALE_MARKS])[0]
        nothing_sold = "" if kind == contract.HOLD_VENUE else ", nothing sold"
        self.log(f"liquidation held{nothing_sold}: {reason}; {waits_for}")
        return True

    def next_hold_wait(self, longest: timedelta = HOLD_LAST_RECHECK) -> timedelta:
        """1 s, 2 s, 4 s ... at most a minute: fresh marks resume a held case soon, a long outage costs little history."""
        wait: timedelta = min(HOLD_FIRST_RECHECK * 2 ** min(self.hold_rechecks, 16), longest)
        self.hold_rechecks += 1
        return wait

    def hold_ends(self) -> bool:
        """Lift a hold (said in the timeline); True if there was one."""
        if self.hold is None:
            return False
        resumed = HOLD_WAITS_FOR.get(self.hold, HOLD_WAITS_FOR[contract.HOLD_STALE_MARKS])[1]
        self.log(f"liquidation resumes: {resumed} (held for {self.hold.lower()})")
        self.hold, self.hold_reason, self.hold_rechecks = None, None, 0
        return True

    # --- what a message must pass (the update validators; a refusal leaves no trace in history) ---

    def parse_deposit(self, submission: Submission) -> Deposit:
        """The deposit, naming this case's account when the message does not (as recorded before it did)."""
        return parse(Deposit, {"account_id": self.input.account_id, **submission.model_dump()})

    def check_deposit(self, deposit: Deposit) -> None:
        if deposit.account_id != self.input.account_id:
            raise ValueError(
                "account_id: this case is for another account; report the deposit to that account's case"
            )
        currency = self.snapshot.currency if self.snapshot else None
        if currency is not None and deposit.currency != currency:
            raise ValueError(f"currency: this case settles in {currency}, not {deposit.currency}")
        try:
            places = self.snapshot.places if self.snapshot else None
            money_amount(deposit.amount, deposit.currency, places=places)
        except AmountError as error:
            raise ValueError(str(error)) from None

    def check_extension(self, extension: DeadlineExtension) -> None:
        if self.state not in AWAITING or self.deadline is None:
            raise ValueError(f"state: cannot extend the deadline of a case that is {self.state.value}")
        if extension.new_deadline <= self.deadline:
            raise ValueError(
                f"new_deadline: must be later than the current deadline {self.deadline.isoformat()}"
            )
        latest = self.opened_at + self.policy.deadline + self.policy.max_deadline_extension
        if extension.new_deadline > latest:
            raise ValueError(f"new_deadline: policy allows at most {latest.isoformat()}")

    def check_waiver(self, waiver: Waiver) -> None:
        if self.waiver is not None:
            raise ValueError(f"state: already waived by {self.waiver.operator}")
        if self.state not in AWAITING or self.stages:
            raise ValueError(f"state: cannot waive a case that is {self.state.value}")
        if waiver.until is not None:  # a time without a zone is refused by the model
            now = workflow.now()
            if not now < waiver.until <= now + MAX_DEADLINE:
                raise ValueError(f"until: must be after now and at most {describe_span(MAX_DEADLINE)} ahead")

    def check_force(self) -> None:
        if self.state not in AWAITING or self.waiver is not None:
            raise ValueError(f"state: cannot force liquidation of a case that is {self.state.value}")
