"""What each step of a case saw, recorded as it happens, so that its statement can show every input.

Storage (SQL), called inside the transactions of the steps themselves: the
account and the policy a case opened on (``open_case``), the account when its
outcome was written (``close_case``), and each notice the case sent (the
notifier's journal). The account before each stage and a settlement's inputs
are written by ``_stages`` and ``_bankruptcy`` with their own rows. Every
record is keyed by what it is (the case id, the notice id), so a retried step
finds its own row and writes nothing twice.
"""

from __future__ import annotations

import logging

import asyncpg

from activities.ledger._snapshot import load_margin_snapshot
from workflows.contract import CaseOpening, Notice
from workflows.domain.portfolio import MarginSnapshot

log = logging.getLogger("margin_call.ledger")


async def record_opening(
    conn: asyncpg.Connection, opening: CaseOpening, snapshot: MarginSnapshot, policy_version: int | None
) -> MarginSnapshot:
    """The account and policy the case opens on, once; returns the snapshot recorded first.

    A retried ``open_case`` (its first attempt committed, its answer lost)
    answers with what the first attempt recorded, so the case decides on the
    figures its statement shows.
    """
    await conn.execute(
        "INSERT INTO case_openings (case_id, snapshot, policy_name, policy_version, policy)"
        " VALUES ($1, $2::jsonb, $3, $4, $5::jsonb) ON CONFLICT (case_id) DO NOTHING",
        opening.case_id,
        snapshot.model_dump_json(),
        opening.policy_name,
        policy_version,
        opening.policy.model_dump_json() if opening.policy is not None else None,
    )
    recorded: str = await conn.fetchval(
        "SELECT snapshot::text FROM case_openings WHERE case_id = $1", opening.case_id
    )
    return MarginSnapshot.model_validate_json(recorded)


async def record_closing(conn: asyncpg.Connection, case_id: str, account_id: str) -> None:
    """The account as the ledger shows it when the case's outcome is written, once."""
    if await conn.fetchval("SELECT 1 FROM case_closings WHERE case_id = $1", case_id):
        return
    snapshot = await load_margin_snapshot(conn, account_id)
    await conn.execute(
        "INSERT INTO case_closings (case_id, snapshot) VALUES ($1, $2::jsonb) ON CONFLICT (case_id) DO NOTHING",
        case_id,
        snapshot.model_dump_json(),
    )


class NoticeJournal:
    """The notifier's journal in the ledger: each attempt to deliver a case's notice, by notice id.

    One row per notice: when the case sent it (the notice's own time), how
    many attempts, and whether the notification service took it. A notice
    once delivered stays delivered whatever a later attempt says.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def __call__(self, notice: Notice, outcome: str, status_code: int | None, detail: str) -> None:
        await self.pool.execute(
            "INSERT INTO notice_deliveries (notice_id, case_id, kind, sent_at, delivered_at, outcome,"
            " status_code, detail) VALUES ($1, $2, $3, $4, CASE WHEN $5 = 'delivered' THEN now() END,"
            " $5, $6, $7)"
            " ON CONFLICT (notice_id) DO UPDATE SET attempts = notice_deliveries.attempts + 1,"
            " last_attempt_at = now(),"
            " delivered_at = coalesce(notice_deliveries.delivered_at, EXCLUDED.delivered_at),"
            " outcome = CASE WHEN notice_deliveries.delivered_at IS NULL THEN EXCLUDED.outcome"
            "   ELSE notice_deliveries.outcome END,"
            " status_code = EXCLUDED.status_code, detail = EXCLUDED.detail",
            notice.notice_id,
            notice.case_id,
            notice.kind.value,
            notice.occurred_at,
            outcome,
            status_code,
            detail[:500],
        )
