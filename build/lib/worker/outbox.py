"""The notice outbox dispatcher: delivers what closed cases still owe their traders.

A case completes as soon as it is decided (so a new breach of the account can
open a new case at once) and leaves its undelivered notices in the ledger's
``notice_outbox``, written in the same transaction as the case record. Every
worker runs a dispatcher; each claims due rows with ``FOR UPDATE SKIP LOCKED``
and a lease, so replicas share the work and a dispatcher that dies mid-send
only delays its rows by the lease. Notices carry stable ids (``webhook-id``), so
a notice sent both by a case's last activity attempt and by the outbox is
deduplicated by the receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

import asyncpg

from activities.notifier import NotifierActivities
from workflows.contract import Notice

log = logging.getLogger("margin_call.outbox")

LEASE = timedelta(seconds=30)
MAX_BACKOFF = timedelta(seconds=60)

_CLAIM_SQL = """
UPDATE notice_outbox o SET attempts = o.attempts + 1, next_attempt_at = now() + $2::interval
  FROM (SELECT notice_id FROM notice_outbox
         WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
         ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
 WHERE o.notice_id = due.notice_id
RETURNING o.notice_id, o.body::text AS body, o.attempts, o.deliver_by <= now() AS overdue
"""


class NoticeDispatcher:
    """Delivers outbox rows with the notifier's signing and the same retry rules as the activity."""

    def __init__(self, pool: asyncpg.Pool, notifier: NotifierActivities, batch: int = 100) -> None:
        self.pool = pool
        self.notifier = notifier
        self.batch = batch

    async def deliver_due(self) -> int:
        """One pass over the due rows; returns how many were settled (delivered or given up)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_CLAIM_SQL, self.batch, LEASE)
        settled = await asyncio.gather(*(self._deliver(r) for r in rows))
        return sum(settled)

    async def _deliver(self, row: asyncpg.Record) -> bool:
        try:
            notice = Notice.model_validate_json(row["body"])
        except ValueError as error:
            # Written by another version of the worker: no retry will read it; say so on the row.
            async with self.pool.acquire() as conn:
                await conn.execute(
                    "UPDATE notice_outbox SET failed_at = now(), last_error = $2 WHERE notice_id = $1",
                    row["notice_id"],
                    f"unreadable notice: {str(error)[:200]}",
                )
            return True
        try:
            attempt = await self.notifier.send(notice)
            outcome, detail, retry_after = attempt.outcome, attempt.detail, attempt.retry_after
        except Exception as error:  # the network, or anything else: retried within the window
            outcome, detail, retry_after = "retry", f"{type(error).__name__}: {error}", None
        async with self.pool.acquire() as conn:
            if outcome == "delivered":
                await conn.execute(
                    "UPDATE notice_outbox SET delivered_at = now(), last_error = NULL WHERE notice_id = $1",
                    notice.notice_id,
                )
                return True
            if outcome in ("refused", "unconfigured") or row["overdue"]:
                log.warning("notice %s undelivered: %s", notice.notice_id, detail)
                await conn.execute(
                    "UPDATE notice_outbox SET failed_at = now(), last_error = $2 WHERE notice_id = $1",
                    notice.notice_id,
                    detail,
                )
                return True
            backoff = retry_after or min(timedelta(seconds=2 ** min(row["attempts"], 10)), MAX_BACKOFF)
            # A retry that would come after the window is not made: the notice is given up now.
            given_up: bool = await conn.fetchval(
                "UPDATE notice_outbox SET next_attempt_at = now() + $2::interval, last_error = $3,"
                " failed_at = CASE WHEN now() + $2::interval > deliver_by THEN now() END"
                " WHERE notice_id = $1 RETURNING failed_at IS NOT NULL",
                notice.notice_id,
                backoff,
                detail,
            )
            if given_up:
                log.warning("notice %s undelivered: %s", notice.notice_id, detail)
            return given_up

    async def run(self, stop: asyncio.Event, interval: float = 0.5) -> None:
        """Until ``stop``: deliver what is due, then wait a moment; a failed pass is logged and retried."""
        while not stop.is_set():
            try:
                await self.deliver_due()
            except Exception:  # a dispatcher that stops is notices never sent: log and go on
                log.exception("outbox pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
