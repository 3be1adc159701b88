"""The record of each margin call, and the day's calls as the regulator's daily record reads them (FINRA 4220).

A call is written by the transaction that opens a case on an account in
breach (``record_call``, from ``LedgerActivities.open_case``), which also
spends the account's warning levels (``_warnings``): the shortfall
that transaction read, the deposit asked (the shortfall rounded up to the
currency's unit, as the trader's notice says) and when it is due (opened at
plus the policy's deadline: the workflow sets the same deadline from the same
two figures). A retried opening rewrites the call with what it read, and the
case goes on with the figures of the attempt that succeeded, which is the last
one to commit.

``calls_on`` reads the day's calls (UTC) with how each was met: a deposit,
the account recovering by itself, liquidation, a waiver, or still open.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import asyncpg

from activities.ledger._accounts import COLLATERAL, COLLATERAL_IN, DEPOSIT
from activities.ledger._warnings import spend_levels_on_call
from workflows.contract import CaseOpening, CaseState
from workflows.domain.message import Message
from workflows.domain.money import Figure
from workflows.domain.policies import CasePolicy
from workflows.domain.portfolio import MarginSnapshot
from workflows.record import deposit_needed

# How a call was met, from the case's outcome (and, for a cure, whether money came in during the case).
DEPOSIT_MET = "deposit"
RECOVERED = "recovered"
LIQUIDATION = "liquidation"
WAIVER = "waiver"
STILL_OPEN = "still open"
_MET_BY = {
    CaseState.RESTORED.value: LIQUIDATION,
    CaseState.CLOSED_OUT.value: LIQUIDATION,
    CaseState.BANKRUPT.value: LIQUIDATION,
    CaseState.WAIVED.value: WAIVER,
}


async def record_call(conn: asyncpg.Connection, opening: CaseOpening, snapshot: MarginSnapshot) -> None:
    """The call the opening case makes, in its transaction; nothing for an account not in breach."""
    if not snapshot.in_breach:
        return
    await spend_levels_on_call(conn, opening, snapshot)  # no warning on the way back from this call
    deadline = (opening.policy or CasePolicy()).deadline
    await conn.execute(
        "INSERT INTO margin_calls (case_id, account_id, currency, called_at, shortfall, deposit_asked, due_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (case_id) DO UPDATE SET shortfall = EXCLUDED.shortfall,"
        " deposit_asked = EXCLUDED.deposit_asked, due_at = EXCLUDED.due_at, recorded_at = now()",
        opening.case_id,
        opening.account_id,
        snapshot.currency,
        opening.opened_at,
        snapshot.figures.shortfall,
        deposit_needed(snapshot),
        opening.opened_at + deadline,
    )


class CallRecord(Message):
    """One margin call: when and how much, when due, and how and when it was met."""

    case_id: str
    account_id: str
    call_id: str
    called_at: datetime
    currency: str
    call_amount: Figure
    deposit_asked: Figure
    due_at: datetime
    extensions: int
    extended_to: datetime | None
    met_by: str
    met_at: datetime | None
    # The case's state in the ledger: its outcome once closed, OPEN until then.
    outcome: str
    deposited: Figure
    liquidation_stages: int
    sold_notional: Figure
    waived_by: str | None


# The last extension's new deadline, as the case wrote it ("deadline moved from <old> to <new>"); the
# pattern guards the cast, so a line worded otherwise reads as unknown, never as an error.
_EXTENDED_TO = r"""
  (SELECT CASE WHEN e.detail->>'what' ~ ' to \d{4}-\d\d-\d\d[ T][0-9:.]+(Z|[+-]\d\d:\d\d)$'
               THEN substring(e.detail->>'what' from ' to ([^ ]+ ?[^ ]*)$')::timestamptz END
     FROM case_events e WHERE e.case_id = k.case_id AND e.kind = 'extend_deadline'
    ORDER BY e.at DESC LIMIT 1)
"""

_DAY_SQL = f"""
SELECT c.case_id, c.account_id, k.call_id, c.called_at, c.currency, c.shortfall AS call_amount,
       c.deposit_asked, c.due_at, k.state, k.closed_at,
       (SELECT count(*) FROM case_events e WHERE e.case_id = k.case_id AND e.kind = 'extend_deadline')
         AS extensions,
       coalesce((k.outcome->>'deadline')::timestamptz, {_EXTENDED_TO}) AS last_deadline,
       (SELECT coalesce(sum(t.amount), 0) FROM ledger_accounts la JOIN transfers t
            ON t.credit_account = la.ledger_account AND t.kind IN ('{DEPOSIT}', '{COLLATERAL_IN}')
         WHERE la.kind = '{COLLATERAL}' AND la.account_id = c.account_id AND la.asset = c.currency
           AND t.created_at >= c.called_at AND t.created_at <= coalesce(k.closed_at, now())) AS deposited,
       (SELECT count(*) FROM liquidation_stages s WHERE s.case_id = k.case_id) AS liquidation_stages,
       (SELECT coalesce(sum((s.result->>'sold_notional')::numeric), 0) FROM liquidation_stages s
         WHERE s.case_id = k.case_id) AS sold_notional,
       (SELECT w.operator FROM waivers w WHERE w.case_id = k.case_id) AS waived_by
  FROM margin_calls c JOIN margin_call_cases k ON k.case_id = c.case_id
 WHERE c.called_at >= ($1::date)::timestamp AT TIME ZONE 'UTC'
   AND c.called_at < ($1::date + 1)::timestamp AT TIME ZONE 'UTC'
 ORDER BY c.called_at, c.case_id
"""


def _met_by(state: str, closed: bool, deposited: Decimal) -> str:
    if not closed:
        return STILL_OPEN
    if state == CaseState.CURED.value:
        return DEPOSIT_MET if deposited > 0 else RECOVERED
    return _MET_BY.get(state, state.lower())


async def calls_on(pool: asyncpg.Pool, day: date) -> list[CallRecord]:
    """Every call made on ``day`` (00:00 to 24:00 UTC), oldest first, with how it was met so far."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(_DAY_SQL, day)
    records = []
    for r in rows:
        closed = r["closed_at"] is not None
        extended_to = r["last_deadline"] if r["extensions"] else None
        records.append(
            CallRecord(
                case_id=r["case_id"],
                account_id=r["account_id"],
                call_id=r["call_id"],
                called_at=r["called_at"],
                currency=r["currency"],
                call_amount=r["call_amount"],
                deposit_asked=r["deposit_asked"],
                due_at=r["due_at"],
                extensions=r["extensions"],
                extended_to=extended_to,
                met_by=_met_by(r["state"], closed, r["deposited"]),
                met_at=r["closed_at"],
                outcome=r["state"],
                deposited=r["deposited"],
                liquidation_stages=r["liquidation_stages"],
                sold_notional=r["sold_notional"],
                waived_by=r["waived_by"],
            )
        )
    return records
