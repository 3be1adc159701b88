"""Notices to traders: signed webhooks (Standard Webhooks) to the notification service.

``NotifierActivities`` owns one ``httpx.AsyncClient`` for the worker's lifetime.
Each attempt signs the body with ``webhook-id`` (the notice's stable id, so the
receiver can dedupe retries), ``webhook-timestamp`` and ``webhook-signature``.
What a failure means for retrying is decided here; how long to keep trying is
the workflow's call (the notice's schedule-to-close window), so a dead notifier
never holds back a deadline or a stage.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import httpx
from httpx_aiohttp import HttpxAiohttpClient
from standardwebhooks.webhooks import Webhook
from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows import contract
from workflows.contract import Notice, NoticeDelivery

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = timedelta(minutes=5)
NOTIFIER_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
# A crash sends hundreds of notices at once: keep the connections open between
# them (httpx keeps 20 by default, so the rest were opened and closed per notice).
NOTIFIER_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)


def notifier_http_client() -> httpx.AsyncClient:
    """The HTTP client a worker's notifier owns for its lifetime.

    httpx's API over aiohttp's connection handling: httpx's own transport cost
    about 6.5 ms of CPU per notice against 1.1 ms here (encode/httpx#3215), and
    a crash sends thousands of notices from the same process that runs the cases.
    """
    return HttpxAiohttpClient(timeout=NOTIFIER_TIMEOUT, limits=NOTIFIER_LIMITS)


def _retry_after(response: httpx.Response) -> timedelta | None:
    value = response.headers.get("retry-after", "")
    if value.isdigit():
        return min(timedelta(seconds=int(value)), MAX_RETRY_AFTER)
    return None


@dataclass(frozen=True)
class Attempt:
    """What one POST to the notifier came to."""

    outcome: Literal["delivered", "retry", "refused", "unconfigured"]
    status_code: int | None
    retry_after: timedelta | None
    detail: str


Journal = Callable[[Notice, str, int | None, str], Awaitable[None]]
"""Where each delivery attempt of a case's notice is recorded: (notice, outcome, status code, detail)."""


class NotifierActivities:
    """Posts notices; owns the HTTP client. ``url`` None means notices are logged only.

    ``journal`` records each attempt of ``deliver_notice`` (the ledger's, for
    the case's statement: when a notice was sent and whether it arrived). A
    journal that fails is logged and never fails the delivery.
    """

    def __init__(
        self, client: httpx.AsyncClient, url: str | None, secret: str, journal: Journal | None = None
    ) -> None:
        self.client = client
        self.url = url
        self.webhook = Webhook(secret)
        self.journal = journal

    async def _record(self, notice: Notice, outcome: str, status_code: int | None, detail: str) -> None:
        if self.journal is None:
            return
        try:
            await self.journal(notice, outcome, status_code, detail)
        except Exception:  # the record of a delivery must not undo the delivery
            log.exception("notice %s: delivery attempt not recorded", notice.notice_id)

    def signed_headers(self, notice_id: str, body: str, at: datetime) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "webhook-id": notice_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": self.webhook.sign(notice_id, at, body),
        }

    async def send(self, notice: Notice) -> Attempt:
        """One signed POST, told as what it means for retrying; network errors propagate.

        Shared by the ``deliver_notice`` activity and the outbox dispatcher, so
        a notice is signed and judged the same way whoever sends it.
        """
        if self.url is None:
            log.info("notice %s (%s) not sent: no notifier configured", notice.notice_id, notice.kind)
            return Attempt("unconfigured", None, None, "no notifier configured")
        body = notice.model_dump_json()
        headers = self.signed_headers(notice.notice_id, body, datetime.now(UTC))
        response = await self.client.post(self.url, content=body, headers=headers)
        status = response.status_code
        if 200 <= status < 300:
            return Attempt("delivered", status, None, "ok")
        if status == 429 or status >= 500 or status == 408:
            return Attempt("retry", status, _retry_after(response), f"notifier answered {status}")
        # 410 Gone and other client errors: the receiver will not take this notice, ever.
        return Attempt("refused", status, None, f"notifier refused the notice with {status}")

    @activity.defn(name=contract.ACTIVITY_DELIVER_NOTICE)
    async def deliver_notice(self, notice: Notice) -> NoticeDelivery:
        """One delivery attempt, recorded in the journal; raising lets Temporal retry with backoff."""
        try:
            attempt = await self.send(notice)
        except Exception as error:
            await self._record(notice, "error", None, f"{type(error).__name__}: {error}")
            raise
        await self._record(notice, attempt.outcome, attempt.status_code, attempt.detail)
        if attempt.outcome == "retry":
            raise ApplicationError(
                attempt.detail, type="NotifierUnavailable", next_retry_delay=attempt.retry_after
            )
        if attempt.outcome == "refused":
            raise ApplicationError(attempt.detail, type="NoticeRefused", non_retryable=True)
        return NoticeDelivery(
            notice_id=notice.notice_id,
            delivered=attempt.outcome == "delivered",
            status_code=attempt.status_code,
            detail=attempt.detail,
        )
