"""What the ledger records for a case's statement: once per case, in the step's own transaction, never invented."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError

from activities.exceptions import UnknownAccount, UnknownCase
from activities.ledger import LedgerActivities, NoticeJournal, case_statement
from activities.notifier import NotifierActivities
from tests.helpers import open_case
from worker.market import Trader, move_market, onboard
from workflows.contract import (
    BankruptcyRequest,
    CaseOpening,
    CaseState,
    Notice,
    NoticeKind,
    StageRequest,
)
from workflows.domain.liquidation import LiquidationOrder, LiquidationPlan
from workflows.domain.policies import CasePolicy

D = Decimal


async def rows(pool: asyncpg.Pool, table: str, case_id: str) -> int:
    async with pool.acquire() as conn:
        found: int = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE case_id = $1", case_id)
    return found


async def test_a_retried_opening_answers_with_the_account_it_recorded_first(venue: asyncpg.Pool) -> None:
    await onboard(venue, Trader("alice", D("550"), {"BTCUSDT": (D(1), D("49900"))}))
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49500")})
    ledger = LedgerActivities(venue)
    opening = CaseOpening(
        case_id="alice/c1", account_id="alice", call_id="c1", opened_at=datetime.now(UTC), policy=CasePolicy()
    )
    first = await ledger.open_case(opening)
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49000")})  # the market moves before the retry
    again = await ledger.open_case(opening)
    assert again == first and again.portfolio.positions[0].mark_price == D("49500")
    assert await rows(venue, "case_openings", "alice/c1") == 1
    statement = await case_statement(venue, "alice")
    assert statement.opening.account is not None and statement.opening.account.figures == first.figures
    assert statement.opening.policy is not None and statement.opening.policy.version == 1


async def test_an_opening_that_fails_leaves_neither_the_case_nor_its_inputs(venue: asyncpg.Pool) -> None:
    await onboard(venue, Trader("bob", D("550"), {"BTCUSDT": (D(1), D("49900"))}))
    ledger = LedgerActivities(venue)
    # A policy name the inputs' table refuses (over 64 characters): the insert fails after the case's row.
    opening = CaseOpening(
        case_id="bob/c1", account_id="bob", call_id="c1", opened_at=datetime.now(UTC), policy_name="p" * 65
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await ledger.open_case(opening)
    assert await rows(venue, "margin_call_cases", "bob/c1") == 0
    assert await rows(venue, "case_openings", "bob/c1") == 0


async def test_a_case_older_than_statements_says_what_was_not_recorded(venue: asyncpg.Pool) -> None:
    await onboard(venue, Trader("carol", D("550"), {"BTCUSDT": (D(1), D("49900"))}))
    async with venue.acquire() as conn:
        # As open_case wrote it before migration 0008: the case's row and nothing else.
        await conn.execute(
            "INSERT INTO margin_call_cases (case_id, account_id, call_id, state, opened_at)"
            " VALUES ('carol/old', 'carol', 'old', 'OPEN', now())"
        )
    statement = await case_statement(venue, "carol")
    assert not statement.opening.recorded and statement.opening.account is None
    assert statement.opening.policy is None and statement.opening.deposit_asked is None
    assert any("opened before statements were recorded" in gap for gap in statement.not_recorded)
    assert statement.closing is None and statement.stages == []


async def test_a_statement_names_an_unknown_account_or_case(venue: asyncpg.Pool) -> None:
    await onboard(venue, Trader("dave", D("550"), {}))
    await onboard(venue, Trader("erin", D("550"), {}))
    await open_case(LedgerActivities(venue), "erin", "erin/c1")
    with pytest.raises(UnknownAccount, match="account_id"):
        await case_statement(venue, "nobody")
    with pytest.raises(UnknownCase, match="account_id: the account has no case"):
        await case_statement(venue, "dave")
    with pytest.raises(UnknownCase, match="case_id"):  # another account's case is not this account's
        await case_statement(venue, "dave", "erin/c1")


async def test_a_retried_settlement_ranks_the_opposite_side_once(venue: asyncpg.Pool) -> None:
    # Short 3 BTC from 52,000 marked at 50,000: PnL 6,000 on 1,000 of collateral.
    await onboard(venue, Trader("short", D("1000"), {"BTCUSDT": (D(-3), D("52000"))}))
    await onboard(venue, Trader("frank", D("100"), {"BTCUSDT": (D(1), D("52000"))}))  # 1,900 short of zero
    ledger = LedgerActivities(venue)
    await open_case(ledger, "frank", "frank/c1")
    plan = LiquidationPlan(
        account_id="frank",
        orders=[LiquidationOrder(instrument="BTCUSDT", quantity=D(1), side="sell")],
        fee_rate=D("0.002"),
        slippage=D(0),
        target_equity=D(0),
        reason="test",
    )
    await ledger.execute_liquidation_stage(StageRequest(case_id="frank/c1", stage=1, plan=plan))
    request = BankruptcyRequest(case_id="frank/c1", fee_rate=D("0.002"))
    first = await ledger.settle_bankruptcy(request)
    assert (first.deficit, first.covered_by_insurance_fund, first.uncovered_loss) == (
        D(1900),
        D(1000),
        D(900),
    )
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49000")})  # a retry later, on other marks
    assert await ledger.settle_bankruptcy(request) == first
    assert await rows(venue, "adl_rankings", "frank/c1") == 1
    assert await rows(venue, "adl_ranking_entries", "frank/c1") == 1
    statement = await case_statement(venue, "frank")
    assert statement.adl is not None
    (entry,) = statement.adl.entries
    assert (entry.account_id, entry.side, entry.mark_price) == ("short", "short", D("50000"))
    assert entry.unrealised_pnl == D("6000") and entry.equity == D("7000")
    assert statement.settlement is not None and statement.settlement.insurance_fund_before == D(1000)


def notice(notice_id: str = "x/c1:opened") -> Notice:
    return Notice(
        notice_id=notice_id,
        kind=NoticeKind.OPENED,
        case_id="x/c1",
        account_id="x",
        state=CaseState.AWAITING_DEPOSIT,
        occurred_at=datetime.now(UTC),
        message="m",
    )


async def test_the_journal_keeps_a_delivered_notice_delivered(pool: asyncpg.Pool) -> None:
    journal = NoticeJournal(pool)
    sent = notice()
    await journal(sent, "retry", 503, "notifier answered 503")
    await journal(sent, "delivered", 200, "ok")
    await journal(sent, "retry", 503, "a late attempt's answer")
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM notice_deliveries WHERE notice_id = $1", sent.notice_id)
    assert row["attempts"] == 3 and row["outcome"] == "delivered" and row["delivered_at"] is not None
    assert row["sent_at"] == sent.occurred_at


async def test_a_journal_that_fails_never_fails_the_delivery() -> None:
    async def broken(*_: object) -> None:
        raise RuntimeError("database gone")

    notifier = NotifierActivities(None, None, "whsec_" + "A" * 32, journal=broken)  # type: ignore[arg-type]
    delivery = await notifier.deliver_notice(notice())
    assert delivery.detail == "no notifier configured"


async def test_a_failed_stage_refusal_is_not_an_input_of_any_statement(venue: asyncpg.Pool) -> None:
    """A stage the ledger refused (the account healthy) records no account-before row to explain."""
    await onboard(venue, Trader("gina", D("700"), {"BTCUSDT": (D(1), D("49900"))}))
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49500")})
    ledger = LedgerActivities(venue)
    await open_case(ledger, "gina", "gina/c1")
    plan = LiquidationPlan(
        account_id="gina",
        orders=[LiquidationOrder(instrument="BTCUSDT", quantity=D(1), side="sell")],
        fee_rate=D("0.002"),
        slippage=D(0),
        target_equity=D(0),
        reason="test",
    )
    with pytest.raises(ApplicationError, match="above maintenance"):
        await ledger.execute_liquidation_stage(StageRequest(case_id="gina/c1", stage=1, plan=plan))
    assert await rows(venue, "liquidation_stages", "gina/c1") == 0
    assert (await case_statement(venue, "gina")).stages == []
