"""``NoticeSender``: notices go out beside the case, never in its way.

Each notice is a regular activity retried within the policy's delivery window
in its own task: a dead notifier cannot delay a deadline or a stage. The
sender keeps what the case reports (sent, failed) and what it still owes at
its close (``owed``), which the close hands to the ledger's outbox. A notice
carries the case's figures as they are when it is sent (``narrative.notice``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows import contract, narrative
from workflows.contract import Notice, NoticeDelivery, NoticeKind, StageResult
from workflows.record import CaseRecord

NOTICE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    non_retryable_error_types=["NoticeRefused"],
)


class NoticeSender:
    def __init__(self, record: CaseRecord) -> None:
        self._record = record
        self.sent = 0
        self.failed: list[str] = []
        # Sent and not yet settled (delivered or given up): a close hands these to the outbox.
        self._undelivered: dict[str, Notice] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def send(
        self,
        kind: NoticeKind,
        suffix: str,
        message: str,
        *,
        stage: StageResult | None = None,
        operator: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Start delivering a notice (its id: the case's and ``suffix``); the case does not wait for it."""
        notice = narrative.notice(
            self._record, kind, suffix, message, stage=stage, operator=operator, reason=reason
        )
        self._undelivered[notice.notice_id] = notice
        self._tasks.append(asyncio.create_task(self._deliver(notice)))

    def owed(self) -> list[Notice]:
        return list(self._undelivered.values())

    async def all_settled(self) -> None:
        """Every notice delivered or given up (cases recorded before the outbox waited for this)."""
        await asyncio.gather(*self._tasks)

    async def _deliver(self, notice: Notice) -> None:
        try:
            await self._attempt(notice)
        finally:
            self._undelivered.pop(notice.notice_id, None)

    async def _attempt(self, notice: Notice) -> None:
        try:
            delivery = await workflow.execute_activity(
                contract.ACTIVITY_DELIVER_NOTICE,
                notice,
                result_type=NoticeDelivery,
                schedule_to_close_timeout=self._record.policy.notice_delivery_window,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=NOTICE_RETRY,
                summary=f"Notify the trader: {notice.kind.value}",
            )
        except ActivityError as error:
            self._failed(notice)
            self._record.log(f"notice {notice.kind.value} undelivered: {error.cause or error}")
            return
        if delivery.delivered:
            self.sent += 1
        else:
            self._failed(notice)
            self._record.log(f"notice {notice.kind.value} undelivered: {delivery.detail}")

    def _failed(self, notice: Notice) -> None:
        self.failed.append(notice.notice_id)
        narrative.notice_failed(notice.kind)
