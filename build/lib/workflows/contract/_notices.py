"""What the trader is told: notices, as the notifier signs and sends them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from workflows.contract._case import CaseState
from workflows.domain.liquidation import Fill
from workflows.domain.message import Message
from workflows.domain.money import Figure


class NoticeKind(StrEnum):
    OPENED = "margin_call.opened"
    REMINDER = "margin_call.reminder"
    LIQUIDATION_STAGE = "margin_call.liquidation_stage"
    STAFF_ACTION = "margin_call.staff_action"
    CLOSED = "margin_call.closed"


class Notice(Message):
    """One webhook to the exchange's notification service; ``notice_id`` is stable across retries."""

    notice_id: str
    kind: NoticeKind
    case_id: str
    account_id: str
    state: CaseState
    occurred_at: datetime
    message: str
    deadline: datetime | None = None
    currency: str | None = None
    equity: Figure | None = None
    maintenance_margin: Figure | None = None
    shortfall: Figure | None = None
    deposit_needed: Figure | None = None
    stage: int | None = None
    fills: list[Fill] = []
    fee: Figure | None = None
    operator: str | None = None
    reason: str | None = None


class NoticeDelivery(Message):
    notice_id: str
    delivered: bool
    status_code: int | None
    detail: str
