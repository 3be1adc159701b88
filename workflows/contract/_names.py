"""Names callers rely on: the task queue, the workflow, its messages and search attributes. Keep them stable."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "margin-calls"
WORKFLOW_TYPE = "MarginCallWorkflow"
WORKFLOW_ID_PREFIX = "margin-call-"

SIGNAL_DEPOSIT = "deposit"
SIGNAL_RISK_ESCALATED = "risk_escalated"
UPDATE_SUBMIT_DEPOSIT = "submit_deposit"
UPDATE_EXTEND_DEADLINE = "extend_deadline"
UPDATE_WAIVE = "waive"
# A second operator's approval of a waive the policy holds to two people (``waive_approval_above``).
UPDATE_APPROVE_WAIVE = "approve_waive"
UPDATE_FORCE_LIQUIDATION = "force_liquidation"
QUERY_STATUS = "status"

# Failure types a caller matches on (never the words, which are for people).
CASE_NOT_OPENED = "CaseNotOpened"
CASE_CLOSED = "CaseClosed"
ACCOUNT_ABOVE_MAINTENANCE = "AccountAboveMaintenance"
# A stage refused because a mark was too old or an instrument halted: the case holds, nothing was sold.
STALE_MARKS = "StaleMarks"
INSTRUMENT_HALTED = "InstrumentHalted"
# A liquidation stage's venue refused its order, or did not answer within the activity's retries.
ORDER_REJECTED = "OrderRejected"
VENUE_UNAVAILABLE = "VenueUnavailable"
# The venue answered something the ledger will not book (a fill above the order, a price beyond its limit).
VENUE_REPORT_INVALID = "VenueReportInvalid"

# Activities the case calls, by name (the workflow never imports the activities' code).
ACTIVITY_READ_ACCOUNT = "load_margin_snapshot"
ACTIVITY_OPEN_CASE = "open_case"
ACTIVITY_LIQUIDATION_STAGE = "execute_liquidation_stage"
ACTIVITY_SETTLE_BANKRUPTCY = "settle_bankruptcy"
ACTIVITY_CLOSE_CASE = "close_case"
ACTIVITY_RECORD_CASE_EVENT = "record_case_event"
ACTIVITY_DELIVER_NOTICE = "deliver_notice"

MARGIN_CALL_STATE = SearchAttributeKey.for_keyword("MarginCallState")
ACCOUNT_ID = SearchAttributeKey.for_keyword("AccountId")
MARGIN_SHORTFALL = SearchAttributeKey.for_float("MarginShortfall")
DEPOSIT_DEADLINE = SearchAttributeKey.for_datetime("DepositDeadline")
LIQUIDATION_STAGE = SearchAttributeKey.for_int("LiquidationStage")
# Why a case's liquidation waits (HOLD_STALE_MARKS, HOLD_HALTED, HOLD_VENUE); unset when it resumes, so
# ``MarginCallHold IS NOT NULL`` (or ``= 'STALE_MARKS'``) lists every held case in one query.
MARGIN_CALL_HOLD = SearchAttributeKey.for_keyword("MarginCallHold")
HOLD_STALE_MARKS = "STALE_MARKS"
HOLD_HALTED = "HALTED"
# The order gateway refused a stage's orders or did not answer: the stage is tried again, the same
# orders first (they may exist at the venue), so the case never closes with an order unbooked.
HOLD_VENUE = "VENUE"
SEARCH_ATTRIBUTES = (
    MARGIN_CALL_STATE,
    ACCOUNT_ID,
    MARGIN_SHORTFALL,
    DEPOSIT_DEADLINE,
    LIQUIDATION_STAGE,
    MARGIN_CALL_HOLD,
)


def workflow_id(account_id: str) -> str:
    """One open case per account: the workflow id is derived from the account alone."""
    return f"{WORKFLOW_ID_PREFIX}{account_id}"


def case_id(account_id: str, call_id: str) -> str:
    """The ledger's key for a case (stages, fills, records): account and the caller's call id."""
    return f"{account_id}/{call_id}"
