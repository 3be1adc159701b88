"""The contract: every name and message that crosses a process or history boundary.

Callers (exchange services, deposit handlers, staff tools), the case workflow
and the ledger activities all speak it, so it imports nothing heavier than
pydantic and the domain. Names here are what callers rely on: keep them stable,
and change a message only by adding optional fields (recorded histories must
still decode).

Small private modules behind this one, each with one vocabulary:
``_names`` (task queue, workflow, update, query and activity names, search
attributes), ``_case`` (what callers and the case say to each other),
``_ledger`` (the ledger activities' inputs and outputs), ``_notices`` (what
the trader is told).
"""

from __future__ import annotations

from workflows.contract._case import (
    CLOSED_STATES,
    CaseInput,
    CaseOutcome,
    CaseState,
    CaseStatus,
    CaseSummary,
    DeadlineExtension,
    Deposit,
    DepositReceipt,
    RiskEscalation,
    StaffAction,
    StageRecord,
    TimelineEntry,
    Waiver,
)
from workflows.contract._ledger import (
    BankruptcyRequest,
    BankruptcySettlement,
    Breach,
    BreachScan,
    CaseClosing,
    CaseEvent,
    CaseOpening,
    CollateralSale,
    DepositBooking,
    StageRequest,
    StageResult,
)
from workflows.contract._names import (
    ACCOUNT_ID,
    ACTIVITY_CLOSE_CASE,
    ACTIVITY_DELIVER_NOTICE,
    ACTIVITY_LIQUIDATION_STAGE,
    ACTIVITY_OPEN_CASE,
    ACTIVITY_READ_ACCOUNT,
    ACTIVITY_RECORD_CASE_EVENT,
    ACTIVITY_SETTLE_BANKRUPTCY,
    DEPOSIT_DEADLINE,
    LIQUIDATION_STAGE,
    MARGIN_CALL_STATE,
    MARGIN_SHORTFALL,
    QUERY_STATUS,
    SEARCH_ATTRIBUTES,
    SIGNAL_DEPOSIT,
    SIGNAL_RISK_ESCALATED,
    TASK_QUEUE,
    UPDATE_EXTEND_DEADLINE,
    UPDATE_FORCE_LIQUIDATION,
    UPDATE_SUBMIT_DEPOSIT,
    UPDATE_WAIVE,
    WORKFLOW_ID_PREFIX,
    WORKFLOW_TYPE,
    case_id,
    workflow_id,
)
from workflows.contract._notices import (
    Notice,
    NoticeDelivery,
    NoticeKind,
)

__all__ = [
    "ACCOUNT_ID",
    "ACTIVITY_CLOSE_CASE",
    "ACTIVITY_DELIVER_NOTICE",
    "ACTIVITY_LIQUIDATION_STAGE",
    "ACTIVITY_OPEN_CASE",
    "ACTIVITY_READ_ACCOUNT",
    "ACTIVITY_RECORD_CASE_EVENT",
    "ACTIVITY_SETTLE_BANKRUPTCY",
    "CLOSED_STATES",
    "DEPOSIT_DEADLINE",
    "LIQUIDATION_STAGE",
    "MARGIN_CALL_STATE",
    "MARGIN_SHORTFALL",
    "QUERY_STATUS",
    "SEARCH_ATTRIBUTES",
    "SIGNAL_DEPOSIT",
    "SIGNAL_RISK_ESCALATED",
    "TASK_QUEUE",
    "UPDATE_EXTEND_DEADLINE",
    "UPDATE_FORCE_LIQUIDATION",
    "UPDATE_SUBMIT_DEPOSIT",
    "UPDATE_WAIVE",
    "WORKFLOW_ID_PREFIX",
    "WORKFLOW_TYPE",
    "BankruptcyRequest",
    "BankruptcySettlement",
    "Breach",
    "BreachScan",
    "CaseClosing",
    "CaseEvent",
    "CaseInput",
    "CaseOpening",
    "CaseOutcome",
    "CaseState",
    "CaseStatus",
    "CaseSummary",
    "CollateralSale",
    "DeadlineExtension",
    "Deposit",
    "DepositBooking",
    "DepositReceipt",
    "Notice",
    "NoticeDelivery",
    "NoticeKind",
    "RiskEscalation",
    "StaffAction",
    "StageRecord",
    "StageRequest",
    "StageResult",
    "TimelineEntry",
    "Waiver",
    "case_id",
    "workflow_id",
]
