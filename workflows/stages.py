"""One liquidation stage, seen through to the ledger's answer whatever the venue does.

With the ``ledger`` venue a stage is one transaction and either happens or is
refused. With an order gateway (the ``http`` venue) it can also meet a venue
that refuses its orders or does not answer, and a market that takes nothing
within the trader's limit. Those are the exchange's troubles, not the case's,
so they are handled here, apart from the lifecycle (``case.py``):

- **No answer** (``VenueUnavailable``): an order may exist at the venue, so
  the same request goes again, after a backing-off wait, until the ledger has
  booked its answer. The case is held (``MarginCallHold = VENUE``, said in the
  timeline) and neither plans another stage nor closes meanwhile: a case that
  closed with an order out could leave a fill unbooked.
- **A report the ledger will not book** (``VenueReportInvalid``: a fill above
  the order, a price beyond its limit, a sale of what the ledger does not
  hold): held likewise, the same request again, nothing booked, until people
  settle the disagreement between venue and ledger.
- **Rejected** (``OrderRejected``): final at the venue, nothing of it filled;
  the same request goes again (the ledger books first any order of the stage
  the venue did answer, and sends the rejected one as a new attempt).
- **Nothing filled** within the limit (a thin or one-sided book, or a limit at
  the bankruptcy price above every bid): the stage is booked empty and the
  next is planned. After ``BACKSTOP_AFTER`` such stages, or as many rejections
  of one stage, the stage goes to the backstop (``StageRequest.backstop``),
  planned whole: the ledger takes every position over at the mark less the
  policy's slippage, as the ``ledger`` venue does, and the insurance fund
  answers for any loss (a venue outage never goes to the backstop: an order
  may be out there). A
  case never loops on a market that will not take its orders.

Workflow code: deterministic, no I/O; the waits are workflow timers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import contract, narrative
from workflows.contract import StageRequest, StageResult
from workflows.domain.liquidation import LiquidationPlan
from workflows.record import CaseRecord

BACKSTOP_AFTER = 3
"""Empty stages in a row (or rejections of one stage) before the backstop takes the positions over."""

VENUE_LAST_RECHECK = timedelta(minutes=5)
"""The longest wait between tries of a held stage: an outage of days stays a history of thousands
of events, far from Temporal's limit (an order out is booked by the account's next stage anyway)."""

VENUE_TROUBLE = {
    contract.VENUE_UNAVAILABLE: "venue unavailable",
    contract.ORDER_REJECTED: "rejected",
    contract.VENUE_REPORT_INVALID: "venue report refused",
}


def backstop_due(record: CaseRecord) -> bool:
    """The market took nothing too many times: the next stage goes to the backstop, whole."""
    return record.unfilled_stages >= BACKSTOP_AFTER


def stage_request(record: CaseRecord, stage: int, plan: LiquidationPlan) -> StageRequest:
    """The request for ``stage``: to the backstop once the market has taken nothing too many times."""
    backstop = backstop_due(record)
    if backstop:
        record.log(
            f"stage {stage}: the venue filled nothing within the limit in {record.unfilled_stages}"
            " stages in a row; the backstop takes every position over"
        )
    return StageRequest(
        case_id=record.case_id,
        stage=stage,
        plan=plan,
        max_mark_age=record.policy.max_mark_age,
        backstop=backstop,
    )


def _trouble(error: ActivityError) -> str | None:
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type in VENUE_TROUBLE:
        return cause.type
    return None


async def run_stage(
    record: CaseRecord, request: StageRequest, call: Callable[[StageRequest], Awaitable[StageResult]]
) -> StageResult:
    """The stage's result once the ledger has booked it; the ledger's other refusals are raised."""
    rejections = 0
    said: str | None = None  # the trouble the timeline last told; each new one is told once
    while True:
        try:
            result = await call(request)
        except ActivityError as error:
            trouble = _trouble(error)
            if trouble is None:
                raise
            assert isinstance(error.cause, ApplicationError)
            if trouble == contract.ORDER_REJECTED:
                rejections += 1
            what = VENUE_TROUBLE[trouble]
            if rejections >= BACKSTOP_AFTER and not request.backstop:
                record.log(f"stage {request.stage}: rejected {rejections} times; the backstop takes it over")
                request = request.model_copy(update={"backstop": True})
            reason = f"stage {request.stage} {what}: {error.cause.message}"
            if record.hold_starts(contract.HOLD_VENUE, reason):
                narrative.publish(record)
            elif trouble != said:
                record.hold_reason = reason
                record.log(f"still held: {reason}; trying the venue again")
                narrative.publish(record, search=False)
            said = trouble
            wait = record.next_hold_wait(VENUE_LAST_RECHECK)
            await workflow.sleep(wait, summary=f"{what}: stage {request.stage} again")
            continue
        if record.hold == contract.HOLD_VENUE and record.hold_ends():
            narrative.publish(record)
        sold_nothing = bool(request.plan.orders) and not result.fills
        record.unfilled_stages = record.unfilled_stages + 1 if sold_nothing else 0
        return result
