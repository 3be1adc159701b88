"""The warnings a case's statement lists: those of the episode that ended in its call.

A warning belongs to the call it came before, and to no later one. So the
statement lists a warning sent (``notice_id``) at or before the case opened
that still held then (not re-armed before the call: a warning re-armed earlier
was recovered from, an earlier episode), and not sent before an earlier case of
the account had closed. That last rule matters because a case may close with
the account still below a level (a deposit that cures to 1.3 x maintenance
leaves the 1.5 warning holding), and that warning led to the earlier call, not
to the next one. Each line carries its notice's delivery as the outbox records
it. Read on the statement's own connection, inside its repeatable-read
snapshot.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from workflows.contract import NoticeKind, NoticeLine, WarningLine

_WARNINGS_SQL = """
SELECT w.level, w.episode, w.warned_at, w.equity, w.maintenance_margin, w.distance_to_call,
       w.notice_id, o.delivered_at, o.failed_at, o.attempts, o.last_error
  FROM margin_warnings w LEFT JOIN notice_outbox o ON o.notice_id = w.notice_id
 WHERE w.account_id = $1 AND w.notice_id IS NOT NULL
   AND w.warned_at <= $2
   AND (w.rearmed_at IS NULL OR w.rearmed_at > $2)
   AND NOT EXISTS (SELECT 1 FROM margin_call_cases k
                    WHERE k.account_id = $1 AND (k.opened_at, k.case_id) < ($2, $3)
                      AND w.warned_at <= coalesce(k.closed_at, k.opened_at))
 ORDER BY w.warned_at, w.level DESC
"""


async def warnings_before_the_call(
    conn: asyncpg.Connection, account_id: str, case_id: str, opened_at: datetime
) -> list[WarningLine]:
    """Oldest first; an outbox row not yet tried is ``pending``, one given up ``undelivered``."""
    rows = await conn.fetch(_WARNINGS_SQL, account_id, opened_at, case_id)
    return [
        WarningLine(
            level=r["level"],
            episode=r["episode"],
            warned_at=r["warned_at"],
            equity=r["equity"],
            maintenance_margin=r["maintenance_margin"],
            distance_to_call=r["distance_to_call"],
            notice=NoticeLine(
                notice_id=r["notice_id"],
                kind=NoticeKind.WARNING.value,
                sent_at=r["warned_at"],
                status="delivered" if r["delivered_at"] else "undelivered" if r["failed_at"] else "pending",
                delivered_at=r["delivered_at"],
                attempts=r["attempts"],
                detail=r["last_error"],
                via="outbox",
            ),
        )
        for r in rows
    ]
