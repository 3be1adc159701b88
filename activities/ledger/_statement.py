"""A case's statement, assembled from what the ledger recorded at each step of the case.

Reads only (one repeatable-read snapshot of the books, so the parts agree):
the case's row and outcome, the warnings sent before the call
(``_statement_warnings``), the account and policy it opened on
(``case_openings``), the deposits, the notices (the notifier's journal and the
outbox), the staff actions (``case_events``), each stage with the account
before and after it, the fees, the settlement with its inputs, the
auto-deleveraging ranking, and the account when the outcome was written. What
was not recorded is named in ``not_recorded`` rather than inferred: a case
that opened before statements existed has no opening inputs, and its statement
says so.
"""

from __future__ import annotations

import decimal
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from activities.exceptions import UnknownAccount, UnknownCase
from activities.ledger._accounts import LIQUIDATION_FEE
from activities.ledger._adl import ranking_of
from activities.ledger._statement_warnings import warnings_before_the_call
from workflows.contract import (
    AccountReading,
    CaseState,
    CaseStatement,
    CaseStatus,
    Closing,
    DepositLine,
    FillLine,
    NoticeLine,
    Opening,
    PolicyApplied,
    Settlement,
    SettlementInputs,
    StaffActionLine,
    StageLine,
    StageResult,
)
from workflows.domain.liquidation import LiquidationPlan
from workflows.domain.money import DISPLAY_PRECISION
from workflows.domain.policies import CasePolicy
from workflows.domain.portfolio import MarginSnapshot

BEFORE_STATEMENTS = "before statements were recorded"


async def case_statement(pool: asyncpg.Pool, account_id: str, case_id: str | None = None) -> CaseStatement:
    """The statement of the account's latest case, or of ``case_id`` (which must be the account's)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        currency: str | None = await conn.fetchval(
            "SELECT settlement_currency FROM accounts WHERE account_id = $1", account_id
        )
        if currency is None:
            raise UnknownAccount(f"account_id: no account {account_id!r}")
        case = await conn.fetchrow(
            "SELECT case_id, call_id, state, opened_at, closed_at, outcome::text AS outcome"
            " FROM margin_call_cases WHERE account_id = $1 AND ($2::text IS NULL OR case_id = $2)"
            " ORDER BY opened_at DESC, case_id DESC LIMIT 1",
            account_id,
            case_id,
        )
        if case is None:
            what = (
                "case_id: the account has no such case" if case_id else "account_id: the account has no case"
            )
            raise UnknownCase(what)
        return await _assemble(conn, account_id, currency, case)


async def _assemble(
    conn: asyncpg.Connection, account_id: str, currency: str, case: asyncpg.Record
) -> CaseStatement:
    case_id: str = case["case_id"]
    status = CaseStatus.model_validate_json(case["outcome"]) if case["outcome"] else None
    gaps: list[str] = []
    if status is None:
        gaps.append("the case is still open: this statement shows what the ledger has recorded so far")
    opening = await _opening(conn, case_id, case["opened_at"], gaps)
    stages = await _stages(conn, case_id, gaps)
    settlement = await _settlement(conn, case_id, gaps)
    closing = await _closing(conn, case_id, status, gaps)
    fees: Decimal = await conn.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM transfers WHERE case_id = $1 AND kind = $2",
        case_id,
        LIQUIDATION_FEE,
    )
    return CaseStatement(
        case_id=case_id,
        account_id=account_id,
        call_id=case["call_id"],
        state=CaseState(case["state"]),
        currency=currency,
        opened_at=case["opened_at"],
        closed_at=case["closed_at"],
        opening=opening,
        warnings=await warnings_before_the_call(conn, account_id, case_id, case["opened_at"]),
        deposits=await _deposits(conn, account_id, case, status),
        notices=await _notices(conn, case_id, status, gaps),
        staff_actions=[
            StaffActionLine(
                at=r["at"], kind=r["kind"], operator=r["operator"], reason=r["reason"], what=r["what"]
            )
            for r in await conn.fetch(
                "SELECT at, kind, operator, reason, detail->>'what' AS what FROM case_events"
                " WHERE case_id = $1 ORDER BY at, event_id",
                case_id,
            )
        ],
        stages=stages,
        fees_to_insurance_fund=fees,
        settlement=settlement,
        adl=await ranking_of(conn, case_id),
        closing=closing,
        timeline=status.timeline if status else [],
        not_recorded=gaps,
        generated_at=datetime.now(UTC),
    )


def deposit_asked(snapshot: MarginSnapshot) -> Decimal:
    """The shortfall rounded up to the currency's unit: the deposit that cures (as the case asks it)."""
    with decimal.localcontext() as ctx:
        ctx.prec = DISPLAY_PRECISION
        unit = Decimal(1).scaleb(-snapshot.places)
        return snapshot.figures.shortfall.quantize(unit, rounding=decimal.ROUND_UP)


async def _opening(conn: asyncpg.Connection, case_id: str, opened_at: datetime, gaps: list[str]) -> Opening:
    row = await conn.fetchrow(
        "SELECT snapshot::text AS snapshot, policy_name, policy_version, policy::text AS policy"
        " FROM case_openings WHERE case_id = $1",
        case_id,
    )
    if row is None:
        gaps.append(f"opening: the case opened {BEFORE_STATEMENTS}; the account it opened on is not known")
        return Opening(at=opened_at, recorded=False)
    snapshot = MarginSnapshot.model_validate_json(row["snapshot"])
    policy = CasePolicy.model_validate_json(row["policy"]) if row["policy"] else None
    in_breach = snapshot.in_breach
    return Opening(
        at=opened_at,
        recorded=True,
        account=AccountReading.of(snapshot),
        policy=PolicyApplied(name=row["policy_name"], version=row["policy_version"], policy=policy),
        deposit_asked=deposit_asked(snapshot) if in_breach else None,
        deadline=opened_at + policy.deadline if in_breach and policy is not None else None,
    )


async def _deposits(
    conn: asyncpg.Connection, account_id: str, case: asyncpg.Record, status: CaseStatus | None
) -> list[DepositLine]:
    """Deposits the case counted, and any credited to the account while it was open."""
    counted = status.deposits_counted if status else []
    rows = await conn.fetch(
        "SELECT deposit_id, amount, asset, credited_at FROM deposits WHERE account_id = $1"
        " AND (deposit_id = ANY($2::text[])"
        "      OR (credited_at >= $3 AND ($4::timestamptz IS NULL OR credited_at <= $4)))"
        " ORDER BY credited_at, deposit_id",
        account_id,
        counted,
        case["opened_at"],
        case["closed_at"],
    )
    return [
        DepositLine(
            deposit_id=r["deposit_id"],
            amount=r["amount"],
            currency=r["asset"],
            credited_at=r["credited_at"],
            counted_by_case=r["deposit_id"] in counted,
        )
        for r in rows
    ]


async def _notices(
    conn: asyncpg.Connection, case_id: str, status: CaseStatus | None, gaps: list[str]
) -> list[NoticeLine]:
    """The case's own sends (the notifier's journal), then what the outbox delivered after the close."""
    failed = set(status.notices_failed) if status else set()
    lines: dict[str, NoticeLine] = {}
    for r in await conn.fetch(
        "SELECT * FROM notice_deliveries WHERE case_id = $1 ORDER BY sent_at, notice_id", case_id
    ):
        if r["delivered_at"] is not None:
            state = "delivered"
        elif r["outcome"] == "unconfigured":
            state = "not sent"
        elif r["notice_id"] in failed or r["outcome"] == "refused":
            state = "undelivered"
        else:
            state = "pending"
        lines[r["notice_id"]] = NoticeLine(
            notice_id=r["notice_id"],
            kind=r["kind"],
            sent_at=r["sent_at"],
            status=state,
            delivered_at=r["delivered_at"],
            attempts=r["attempts"],
            detail=r["detail"],
            via="case",
        )
    for r in await conn.fetch(
        "SELECT notice_id, body->>'kind' AS kind, (body->>'occurred_at')::timestamptz AS sent_at,"
        " delivered_at, failed_at, attempts, last_error FROM notice_outbox WHERE case_id = $1"
        " ORDER BY created_at, notice_id",
        case_id,
    ):
        earlier = lines.get(r["notice_id"])
        if earlier is not None and earlier.status == "delivered":
            continue  # the case's own attempt got through; the outbox's copy was deduplicated by id
        outbox_state = "delivered" if r["delivered_at"] else "undelivered" if r["failed_at"] else "pending"
        lines[r["notice_id"]] = NoticeLine(
            notice_id=r["notice_id"],
            kind=r["kind"],
            sent_at=r["sent_at"],
            status=outbox_state,
            delivered_at=r["delivered_at"],
            attempts=r["attempts"] + ((earlier.attempts or 0) if earlier else 0),
            detail=r["last_error"],
            via="outbox",
        )
    journaled = sum(1 for line in lines.values() if line.via == "case" and line.status == "delivered")
    if status is not None and status.notices_sent > journaled:
        gaps.append(
            f"notices: {status.notices_sent - journaled} delivered by the case {BEFORE_STATEMENTS};"
            " when each was sent is not known"
        )
    return sorted(lines.values(), key=lambda n: (n.sent_at or datetime.max.replace(tzinfo=UTC), n.notice_id))


async def _stages(conn: asyncpg.Connection, case_id: str, gaps: list[str]) -> list[StageLine]:
    rows = await conn.fetch(
        "SELECT s.stage, s.executed_at, s.plan::text AS plan, s.result::text AS result, s.equity_before,"
        " s.maintenance_before, s.snapshot_before::text AS before,"
        " EXISTS (SELECT 1 FROM venue_orders v WHERE v.case_id = s.case_id AND v.stage = s.stage) AS venue"
        " FROM liquidation_stages s WHERE s.case_id = $1 ORDER BY s.stage",
        case_id,
    )
    fees = {
        (r["stage"], r["instrument"]): r["fee"]
        for r in await conn.fetch(
            "SELECT stage, instrument, fee FROM liquidation_fills WHERE case_id = $1", case_id
        )
    }
    stages = []
    for r in rows:
        result = StageResult.model_validate_json(r["result"])
        if r["before"] is None:
            gaps.append(f"stage {r['stage']}: the account before it was booked {BEFORE_STATEMENTS}")
        stages.append(
            StageLine(
                stage=r["stage"],
                executed_at=r["executed_at"],
                through_venue=r["venue"],
                plan=LiquidationPlan.model_validate_json(r["plan"]),
                fills=[
                    FillLine(**f.model_dump(), fee=fees.get((r["stage"], f.instrument), Decimal(0)))
                    for f in result.fills
                ],
                sold_notional=result.sold_notional,
                fee=result.fee,
                equity_before=r["equity_before"],
                maintenance_before=r["maintenance_before"],
                before=AccountReading.of(MarginSnapshot.model_validate_json(r["before"]))
                if r["before"]
                else None,
                after=AccountReading.of(result.snapshot_after),
            )
        )
    return stages


async def _settlement(conn: asyncpg.Connection, case_id: str, gaps: list[str]) -> Settlement | None:
    row = await conn.fetchrow(
        "SELECT settled_at, deficit, covered_by_fund, uncovered_loss, collateral_sold::text AS sold,"
        " inputs::text AS inputs FROM bankruptcy_settlements WHERE case_id = $1",
        case_id,
    )
    if row is None:
        return None
    recorded: dict[str, Any] = {"recorded": False}
    if row["inputs"] is None:
        gaps.append(f"settlement: booked {BEFORE_STATEMENTS}; what it worked from is not known")
    else:
        inputs = SettlementInputs.model_validate_json(row["inputs"])
        recorded = {
            "recorded": True,
            "account": AccountReading.of(inputs.account),
            "settlement_balance": inputs.settlement_balance,
            "settlement_price": inputs.settlement_price,
            "insurance_fund_before": inputs.insurance_fund_before,
            "fee_rate": inputs.fee_rate,
        }
    return Settlement(
        settled_at=row["settled_at"],
        deficit=row["deficit"],
        covered_by_insurance_fund=row["covered_by_fund"],
        uncovered_loss=row["uncovered_loss"],
        collateral_sold=json.loads(row["sold"] or "[]"),
        **recorded,
    )


def _why(status: CaseStatus) -> str | None:
    """The close's own words from the timeline ("closed RESTORED: account back above maintenance")."""
    closed = [e.what for e in status.timeline if e.what.startswith(f"closed {status.state.value}")]
    return closed[-1].split(": ", 1)[-1] if closed else None


async def _closing(
    conn: asyncpg.Connection, case_id: str, status: CaseStatus | None, gaps: list[str]
) -> Closing | None:
    if status is None:
        return None
    at = status.closed_at or status.opened_at
    row = await conn.fetchval("SELECT snapshot::text FROM case_closings WHERE case_id = $1", case_id)
    if row is None:
        gaps.append(f"closing: the case closed {BEFORE_STATEMENTS}; the account at the close is not known")
    return Closing(
        at=at,
        state=status.state,
        why=_why(status),
        equity=status.equity,
        maintenance_margin=status.maintenance_margin,
        shortfall=status.shortfall,
        insurance_fund_used=status.insurance_fund_used,
        uncovered_loss=status.uncovered_loss,
        account=AccountReading.of(MarginSnapshot.model_validate_json(row)) if row else None,
    )
