"""A case's statement lists the warnings that led to its call, and only those.

The warnings come from the risk monitor's warner over a fresh ledger, their
notices go out through the outbox dispatcher to a real webhook receiver on
loopback, and the case is the ledger's own opening (no workflow needed to read a
statement). One BTCUSDT long from 49,900 marked at 49,500 has maintenance 198:
the levels 1.5 and 1.2 are 297 and 237.60, re-armed above 311.85 and 249.48.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import httpx
import pytest_asyncio

from activities.ledger import LedgerActivities, case_statement
from activities.notifier import NotifierActivities
from tests.activities.test_warnings import POLICY, move_equity, opening_of, trader, warner
from tests.workflows.test_statement import check_warnings
from worker.config import DEV_WEBHOOK_SECRET
from worker.outbox import NoticeDispatcher
from worker.receiver import Behaviour, WebhookReceiver
from worker.statement import render_html, render_text
from workflows.contract import CaseClosing, CaseOpening, CaseState, CaseStatement, CaseStatus

D = Decimal


@pytest_asyncio.fixture(loop_scope="session")
async def outbox(
    venue: asyncpg.Pool, receiver: tuple[WebhookReceiver, str]
) -> AsyncIterator[tuple[NoticeDispatcher, WebhookReceiver]]:
    """The outbox dispatcher of this ledger, delivering to the loopback receiver (reset afterwards)."""
    hook, url = receiver
    hook.behaviour = Behaviour()
    async with httpx.AsyncClient(timeout=5.0) as http:
        yield NoticeDispatcher(venue, NotifierActivities(http, url, DEV_WEBHOOK_SECRET)), hook
    hook.behaviour = Behaviour()


def section(page: str, title: str, after: str) -> str:
    """The part of the page under ``title``, up to the next section's heading ``after``."""
    start = page.index(f"<h2>{title}</h2>")
    return page[start : page.index(f"<h2>{after}</h2>", start)]


def cured(opening: CaseOpening) -> CaseStatus:
    """The outcome a case records when a deposit cured it (no stage, no notice owed)."""
    zero = D(0)
    return CaseStatus(
        case_id=opening.case_id,
        account_id=opening.account_id,
        call_id=opening.call_id,
        state=CaseState.CURED,
        currency="USDT",
        opened_at=opening.opened_at,
        deadline=None,
        equity=None,
        maintenance_margin=None,
        shortfall=None,
        deposit_needed=None,
        deposits_counted=[],
        stages=[],
        fees_to_insurance_fund=zero,
        insurance_fund_used=zero,
        uncovered_loss=zero,
        notices_sent=0,
        notices_failed=[],
        timeline=[],
        closed_at=datetime.now(UTC),
    )


def listed(statement: CaseStatement) -> list[tuple[object, ...]]:
    return [(w.level, w.episode, w.equity, w.notice.status) for w in statement.warnings]


async def test_the_statement_lists_the_warnings_of_the_episode_that_ended_in_the_call(
    venue: asyncpg.Pool, outbox: tuple[NoticeDispatcher, WebhookReceiver]
) -> None:
    dispatcher, hook = outbox
    watch = warner(venue)
    account = await trader(venue, "warned-then-called", "300")
    await move_equity(venue, account, "-10")  # 290: below 1.5 x: warned (episode 1)
    assert (await watch.tick()).warned == 1
    assert await dispatcher.deliver_due() == 1
    await move_equity(venue, account, "+30")  # 320: clearly back above: that warning is over
    assert (await watch.tick()).rearmed == 1
    await move_equity(venue, account, "-30")  # 290 again: warned (episode 2), and it arrives
    assert (await watch.tick()).warned == 1
    assert await dispatcher.deliver_due() == 1
    await move_equity(venue, account, "-55")  # 235: below 1.2 x as well; not yet sent when the call comes
    assert (await watch.tick()).warned == 1
    await move_equity(venue, account, "-90")  # 145: in breach, and the call comes
    await LedgerActivities(venue).open_case(opening_of(account))

    statement = await case_statement(venue, account)
    check_warnings(statement)
    assert listed(statement) == [
        (D("1.5"), 2, D(290), "delivered"),
        (D("1.2"), 1, D(235), "pending"),  # episodes count per level: its first
    ]
    arrived, waiting = statement.warnings
    assert arrived.notice.notice_id == f"warning:{account}:1.5:2" and arrived.notice.notice_id in hook.notices
    assert arrived.notice.delivered_at is not None and arrived.notice.attempts == 1
    assert f"warning:{account}:1.5:1" in hook.notices  # sent and delivered, but an earlier episode's
    assert waiting.notice.delivered_at is None and waiting.notice.attempts == 0

    # The page and the text show them, before the opening.
    page = section(render_html(statement), "Warnings before the call", "At opening")
    assert page.count("<tr><td>") == 2 and "delivered" in page and "pending" in page
    text = render_text(statement)
    assert text.index("WARNINGS BEFORE THE CALL") < text.index("AT OPENING")
    assert "equity 290.00 below 1.50 x maintenance 198.00 USDT, 92.00 from the call  notice delivered" in text
    assert "equity 235.00 below 1.20 x maintenance 198.00 USDT, 37.00 from the call  notice pending" in text


async def test_a_warning_that_came_before_an_earlier_call_is_not_the_next_calls(
    venue: asyncpg.Pool, outbox: tuple[NoticeDispatcher, WebhookReceiver]
) -> None:
    """A case may close with a warning still holding (cured to below 1.5 x): it led to that call only."""
    dispatcher, hook = outbox
    watch = warner(venue)
    account = await trader(venue, "called-twice", "290")  # 290: below 1.5 x: warned, and it arrives
    assert (await watch.tick()).warned == 1
    assert await dispatcher.deliver_due() == 1
    await move_equity(venue, account, "-145")  # 145: the first call
    first = opening_of(account)
    assert (await LedgerActivities(venue).open_case(first)).in_breach
    await move_equity(venue, account, "+115")  # cured at 260: the 1.5 warning still holds, 1.2 re-arms
    await LedgerActivities(venue).close_case(CaseClosing(status=cured(first)))
    assert (await watch.tick()).rearmed == 1
    hook.behaviour = Behaviour(status=410)  # the trader's endpoint refuses it for good
    await move_equity(venue, account, "-30")  # 230: below 1.2 x again: warned, episode 2
    assert (await watch.tick()).warned == 1
    assert await dispatcher.deliver_due() == 1
    await move_equity(venue, account, "-85")  # 145: the second call
    second = CaseOpening(
        case_id=f"{account}/c2", account_id=account, call_id="c2", opened_at=datetime.now(UTC), policy=POLICY
    )
    await LedgerActivities(venue).open_case(second)

    statement = await case_statement(venue, account)
    assert statement.case_id == f"{account}/c2"
    check_warnings(statement)
    assert listed(statement) == [(D("1.2"), 2, D(230), "undelivered")]
    assert statement.warnings[0].notice.detail == "notifier refused the notice with 410"
    # The first call's statement still lists its own warning.
    earlier = await case_statement(venue, account, f"{account}/c1")
    check_warnings(earlier)
    assert listed(earlier) == [(D("1.5"), 1, D(290), "delivered")]


async def test_a_call_with_no_warning_says_none_was_sent(venue: asyncpg.Pool) -> None:
    account = await trader(venue, "called-at-once", "150")  # straight into breach: no warning first
    await LedgerActivities(venue).open_case(opening_of(account))
    statement = await case_statement(venue, account)
    assert statement.warnings == []
    assert "None sent." in section(render_html(statement), "Warnings before the call", "At opening")
    text = render_text(statement)
    assert text[text.index("WARNINGS BEFORE THE CALL") : text.index("AT OPENING")].split() == (
        ["WARNINGS", "BEFORE", "THE", "CALL", "none", "sent"]
    )
