"""The case's records in the ledger: its row, its audit trail, its outcome, the waivers and notices it leaves.

Storage only (SQL), called by ``LedgerActivities`` inside its transactions.
Each write is keyed by the case id (and event or notice id), so a retried
activity rewrites nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from activities.exceptions import IdempotencyConflict, LedgerError, UnknownAccount, UnknownCase
from workflows.contract import CaseClosing, CaseEvent, CaseOpening, CaseState


async def record_opening(conn: asyncpg.Connection, opening: CaseOpening) -> None:
    """The case's row, once; a call id whose case already closed cannot open another.

    Its stages and fills are keyed by the case id, so reusing a closed case's
    id would replay old results.
    """
    await conn.execute(
        "INSERT INTO margin_call_cases (case_id, account_id, call_id, state, opened_at)"
        " VALUES ($1, $2, $3, 'OPEN', $4) ON CONFLICT (case_id) DO NOTHING",
        opening.case_id,
        opening.account_id,
        opening.call_id,
        opening.opened_at,
    )
    existing = await conn.fetchrow(
        "SELECT account_id, closed_at FROM margin_call_cases WHERE case_id = $1", opening.case_id
    )
    if existing["account_id"] != opening.account_id or existing["closed_at"] is not None:
        raise IdempotencyConflict(
            f"call_id: case {opening.case_id} already closed; open a new case with a new call id"
        )


async def case_account(conn: asyncpg.Connection, case_id: str) -> str:
    """The account a case was opened for."""
    account_id: str | None = await conn.fetchval(
        "SELECT account_id FROM margin_call_cases WHERE case_id = $1", case_id
    )
    if account_id is None:
        raise UnknownCase(f"case_id: no case {case_id!r}")
    return account_id


async def lock_case_account(conn: asyncpg.Connection, case_id: str, account_id: str) -> str:
    """Lock the case's account for the transaction (``FOR NO KEY UPDATE``); returns its settlement currency.

    Deposits, stages and settlements on one account take this lock, so they
    run one after another.
    """
    owner = await case_account(conn, case_id)
    if owner != account_id:
        raise LedgerError(f"case {case_id} belongs to {owner}, not {account_id}")
    currency: str | None = await conn.fetchval(
        "SELECT settlement_currency FROM accounts WHERE account_id = $1 FOR NO KEY UPDATE", account_id
    )
    if currency is None:
        raise UnknownAccount(f"account_id: no account {account_id!r}")
    return currency


async def record_closing(conn: asyncpg.Connection, closing: CaseClosing) -> None:
    """The outcome on the case's row, the waive's scope, and the notices still owed, in the caller's transaction."""
    status = closing.status
    await conn.execute(
        "UPDATE margin_call_cases SET state = $2, closed_at = $3, outcome = $4::jsonb,"
        " updated_at = now() WHERE case_id = $1",
        status.case_id,
        status.state.value,
        status.closed_at,
        status.model_dump_json(),
    )
    if closing.waiver is not None and status.state == CaseState.WAIVED:
        # The waive's scope, for the risk monitor: recorded only when the case did close WAIVED,
        # with the second operator beside the first when the policy held the waive to two people.
        approval = closing.waiver_approval
        await conn.execute(
            "INSERT INTO waivers (case_id, account_id, until, operator, reason,"
            " requested_at, approved_by, approval_reason, approved_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (case_id) DO NOTHING",
            status.case_id,
            status.account_id,
            closing.waiver.until,
            closing.waiver.operator,
            closing.waiver.reason,
            approval.requested_at if approval else None,
            approval.operator if approval else None,
            approval.reason if approval else None,
            approval.approved_at if approval else None,
        )
    # The notices the case still owes go to the outbox in the same
    # transaction: the case completes now, the dispatcher delivers them.
    # From now at the earliest: a close recorded late (a worker was down) still gets the whole window.
    deliver_by = (
        max(status.closed_at or datetime.now(UTC), datetime.now(UTC)) + closing.notice_delivery_window
    )
    await conn.executemany(
        "INSERT INTO notice_outbox (notice_id, case_id, body, deliver_by)"
        " VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT (notice_id) DO NOTHING",
        [(n.notice_id, status.case_id, n.model_dump_json(), deliver_by) for n in closing.notices],
    )


async def record_event(conn: asyncpg.Connection, event: CaseEvent) -> None:
    """A line in the case's audit trail, once per event id."""
    await conn.execute(
        "INSERT INTO case_events (case_id, event_id, at, kind, operator, reason, detail)"
        " VALUES ($1, $2, $3, $4, $5, $6, jsonb_build_object('what', $7::text))"
        " ON CONFLICT (case_id, event_id) DO NOTHING",
        event.case_id,
        event.event_id,
        event.at,
        event.kind,
        event.operator,
        event.reason,
        event.detail,
    )


async def end_waivers(conn: asyncpg.Connection, breached: set[str], scanned_at: datetime) -> list[str]:
    """End waivers past their time, and open-ended ones whose account the scan found healthy.

    A timed waiver holds until its time whatever the account does; only a
    waiver that existed before the scan began can be ended by what it saw.
    """
    rows = await conn.fetch(
        "UPDATE waivers SET ended_at = now(),"
        " ended_why = CASE WHEN until <= now() THEN 'expired' ELSE 'account recovered' END"
        " WHERE ended_at IS NULL AND (until <= now()"
        "   OR (until IS NULL AND created_at < $2 AND NOT (account_id = ANY($1::text[]))))"
        " RETURNING account_id",
        sorted(breached),
        scanned_at,
    )
    return [r["account_id"] for r in rows]
