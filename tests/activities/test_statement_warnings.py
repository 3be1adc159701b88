"""A case's statement lists the warnings that led to its call, and only those.

The warnings come from the risk monitor's warner over a fresh ledger, the case
from the ledger's own opening (no workflow needed to read a statement). One
BTCUSDT long from 49,900 marked at 49,500 has maintenance 198: the levels 1.5
and 1.2 are 297 and 237.60, re-armed above 311.85 and 249.48.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from activities.ledger import LedgerActivities, case_statement
from tests.activities.test_warnings import move_equity, opening_of, trader, warner
from worker.statement import render_html, render_text
from workflows.contract import CaseStatement

D = Decimal


def check_warnings(statement: CaseStatement) -> None:
    """Each warning's figures agree, it was sent in the band it names, and before the call."""
    for line in statement.warnings:
        assert line.distance_to_call == line.equity - line.maintenance_margin
        assert line.maintenance_margin <= line.equity < line.level * line.maintenance_margin
        assert line.warned_at <= statement.opened_at
        assert line.notice.kind == "margin_call.warning" and line.notice.notice_id.startswith("warning:")


async def test_the_statement_lists_the_warnings_of_the_episode_that_ended_in_the_call(
    venue: asyncpg.Pool,
) -> None:
    watch = warner(venue)
    account = await trader(venue, "warned-then-called", "300")
    await move_equity(venue, account, "-10")  # 290: below 1.5 x: warned (episode 1)
    assert (await watch.tick()).warned == 1
    await move_equity(venue, account, "+30")  # 320: clearly back above: that warning is over
    assert (await watch.tick()).rearmed == 1
    await move_equity(venue, account, "-30")  # 290 again: warned (episode 2)
    assert (await watch.tick()).warned == 1
    await move_equity(venue, account, "-55")  # 235: below 1.2 x as well
    assert (await watch.tick()).warned == 1
    await move_equity(venue, account, "-90")  # 145: in breach, and the call comes
    await LedgerActivities(venue).open_case(opening_of(account))

    statement = await case_statement(venue, account)
    check_warnings(statement)
    assert [(w.level, w.episode, w.equity) for w in statement.warnings] == [
        (D("1.5"), 2, D(290)),
        (D("1.2"), 1, D(235)),  # episodes count per level: its first
    ]
    assert all(w.notice.status == "pending" and w.notice.via == "outbox" for w in statement.warnings)
    # The page and the text show them.
    page = render_html(statement)
    assert 'id="warnings"' in page and page.count("<tr><td>") >= 2
    assert "WARNINGS BEFORE THE CALL" in render_text(statement)
    assert "235.00 below 1.20 x maintenance 198.00" in render_text(statement)


async def test_a_call_with_no_warning_says_none_was_sent(venue: asyncpg.Pool) -> None:
    account = await trader(venue, "called-at-once", "150")  # straight into breach: no warning first
    await LedgerActivities(venue).open_case(opening_of(account))
    statement = await case_statement(venue, account)
    assert statement.warnings == []
    assert "None sent." in render_html(statement)
