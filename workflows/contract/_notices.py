"""What the trader is told: notices, as the notifier signs and sends them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import model_validator

from workflows.contract._case import CaseState
from workflows.domain.liquidation import Fill
from workflows.domain.message import Message
from workflows.domain.money import DecimalStr, Figure


class NoticeKind(StrEnum):
    OPENED = "margin_call.opened"
    REMINDER = "margin_call.reminder"
    LIQUIDATION_STAGE = "margin_call.liquidation_stage"
    STAFF_ACTION = "margin_call.staff_action"
    CLOSED = "margin_call.closed"
    # Before any case: equity fell below one of the operator's warning levels (the risk monitor).
    WARNING = "margin_call.warning"


class Notice(Message):
    """One webhook to the exchange's notification service; ``notice_id`` is stable across retries.

    A warning comes before any case, so it alone has no ``case_id`` nor
    ``state``; it says instead which ``level`` was crossed and how far equity
    may still fall before a case opens (``distance_to_call``).
    """

    notice_id: str
    kind: NoticeKind
    case_id: str | None = None
    account_id: str
    state: CaseState | None = None
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
    level: DecimalStr | None = None
    distance_to_call: Figure | None = None

    @model_validator(mode="after")
    def _of_a_case(self) -> Notice:
        if self.kind != NoticeKind.WARNING and (self.case_id is None or self.state is None):
            raise ValueError("case_id: a notice about a case names the case and its state")
        return self


class NoticeDelivery(Message):
    notice_id: str
    delivered: bool
    status_code: int | None
    detail: str
