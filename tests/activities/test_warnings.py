"""Warnings before the call, in the ledger: once per level per episode, re-armed only clearly above.

A fresh ledger per test and the monitor's warner over it; nothing here opens a
case. One BTCUSDT long from 49,900 marked at 49,500 has maintenance 198, so
equity is collateral less 400; the levels are 1.5 (297) and 1.2 (237.60), and
they re-arm above 311.85 and 249.48.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from activities.ledger import (
    LedgerActivities,
    LedgerWarnings,
    collateral_account,
    external_account,
    load_margin_snapshot,
    post_transfer,
)
from activities.ledger import reference as exchange
from worker.market import Trader, move_market, onboard
from worker.warnings import AccountWarner
from workflows.contract import CaseOpening, MarginWarning, Notice, NoticeKind, WarningCrossing, WarningScan
from workflows.domain.policies import CasePolicy

D = Decimal
POLICY = CasePolicy()
_moves = iter(range(1_000_000))


def warner(pool: asyncpg.Pool, policy: CasePolicy = POLICY) -> AccountWarner:
    return AccountWarner(LedgerWarnings(pool), lambda _name: policy, [policy], policy.max_mark_age)


async def trader(pool: asyncpg.Pool, account: str, equity: str) -> str:
    """An account with one BTC long and ``equity`` (maintenance 198 at the 49,500 mark)."""
    await onboard(pool, Trader(account, D(equity) + 400, {"BTCUSDT": (D(1), D("49900"))}))
    async with pool.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49500")})
    return account


async def move_equity(pool: asyncpg.Pool, account: str, by: str) -> None:
    """Money in (positive) or out (negative) of the account's USDT collateral."""
    amount = D(by)
    outside, mine = external_account("USDT"), collateral_account(account, "USDT")
    debit, credit = (outside, mine) if amount > 0 else (mine, outside)
    async with pool.acquire() as conn:
        await post_transfer(conn, f"move-{next(_moves)}", debit, credit, "USDT", abs(amount), "test_move")


async def rows(pool: asyncpg.Pool, account: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT w.level::text AS level, w.episode, w.rearmed_at IS NULL AS holding, w.notice_id,"
            " o.notice_id AS outboxed, o.case_id, o.body::text AS body"
            " FROM margin_warnings w LEFT JOIN notice_outbox o USING (notice_id)"
            " WHERE w.account_id = $1 ORDER BY w.warned_at, w.level DESC",
            account,
        )


async def test_each_level_warns_once_per_episode_and_re_arms_only_clearly_above(venue: asyncpg.Pool) -> None:
    watch = warner(venue)
    account = await trader(venue, "hover", "300")  # 1.515 x maintenance: above every level
    assert (await watch.tick()).warned == 0

    await move_equity(venue, account, "-10")  # 290: below 1.5 x 198 = 297
    first = await watch.tick()
    assert first.warned == 1
    again = await watch.tick()  # the scan repeats: the warning is not written again
    assert again.warned == 0
    [warned] = await rows(venue, account)
    assert (warned["level"], warned["episode"], warned["holding"]) == ("1.5", 1, True)
    assert (
        warned["notice_id"] == f"warning:{account}:1.5:1" == warned["outboxed"] and warned["case_id"] is None
    )

    notice = Notice.model_validate_json(warned["body"])
    assert notice.kind == NoticeKind.WARNING and notice.case_id is None and notice.state is None
    assert (notice.equity, notice.maintenance_margin, notice.level) == (D(290), D(198), D("1.5"))
    assert notice.distance_to_call == D(92)  # equity may fall 92 before the call opens
    assert "below 150 % of maintenance" in notice.message and "falls 92.00 USDT more" in notice.message

    # Hovering around the line: back above it, but not clearly (re-arms only above 1.575 x 198 = 311.85).
    await move_equity(venue, account, "21.85")  # 311.85: at the re-arm line, not above it
    assert (await watch.tick()).rearmed == 0
    await move_equity(venue, account, "-21.85")
    assert (await watch.tick()).warned == 0

    await move_equity(venue, account, "-60")  # 230: a deeper level warns too
    deeper = await watch.tick()
    assert deeper.warned == 1
    assert [(r["level"], r["episode"]) for r in await rows(venue, account)] == [("1.5", 1), ("1.2", 1)]

    await move_equity(venue, account, "81.86")  # 311.86: clearly above both levels
    back = await watch.tick()
    assert back.rearmed == 2 and back.warned == 0
    await move_equity(venue, account, "-21.86")  # 290 again: a new episode of 1.5, not of 1.2
    assert (await watch.tick()).warned == 1
    listed = await rows(venue, account)
    assert [(r["level"], r["episode"], r["holding"]) for r in listed] == [
        ("1.5", 1, False),
        ("1.2", 1, False),
        ("1.5", 2, True),
    ]
    assert listed[-1]["notice_id"] == f"warning:{account}:1.5:2" == listed[-1]["outboxed"]

    # What a statement lists: every warning, oldest first.
    statement = await LedgerWarnings(venue).of_account(account)
    assert [(w.level, w.episode) for w in statement] == [(D("1.5"), 1), (D("1.2"), 1), (D("1.5"), 2)]
    async with venue.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM margin_call_cases") == 0  # a warning opens no case


async def test_a_jump_past_both_levels_warns_at_both_and_re_arms_each_at_its_own_line(
    venue: asyncpg.Pool,
) -> None:
    watch = warner(venue)
    account = await trader(venue, "jump", "240")  # 1.212: only 1.5 crossed
    assert (await watch.tick()).warned == 1
    await move_equity(venue, account, "-10")  # 230: 1.2 crossed too
    assert (await watch.tick()).warned == 1
    await move_equity(venue, account, "30")  # 260: above 1.26 x 198 = 249.48, below 1.5
    back = await watch.tick()
    assert back.rearmed == 1 and back.warned == 0  # 1.2 re-armed; 1.5 still holds and is not repeated
    holding = [(r["level"], r["holding"]) for r in await rows(venue, account)]
    assert holding == [("1.5", True), ("1.2", False)]
    await move_equity(venue, account, "-30")
    assert (await watch.tick()).warned == 1  # 1.2, its second episode


async def test_no_warning_on_a_stale_mark_nor_in_breach_nor_with_a_case_open(venue: asyncpg.Pool) -> None:
    watch = warner(venue)
    near = await trader(venue, "stale", "290")
    breached = await trader(venue, "breached", "150")  # below maintenance: the call says it all
    async with venue.acquire() as conn:
        await exchange.set_mark_price(conn, "BTCUSDT", D("49500"), datetime.now(UTC) - timedelta(minutes=5))
    report = await watch.tick()
    assert report.warned == 0 and report.unpriced == 1
    assert await rows(venue, near) == [] and await rows(venue, breached) == []

    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49500")})  # fresh again: the warning goes out now
    assert (await watch.tick()).warned == 1
    # A stale mark re-arms nothing either: the price that would clear the warning is not one to trust.
    await move_equity(venue, near, "100")
    async with venue.acquire() as conn:
        await exchange.set_mark_price(conn, "BTCUSDT", D("49500"), datetime.now(UTC) - timedelta(minutes=5))
    assert (await watch.tick()).rearmed == 0

    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49500")})
    opened = await trader(venue, "case-open", "290")
    await open_case_in_breach(venue, opened)
    assert (await watch.tick()).warned == 0 and await rows(venue, opened) == []


async def open_case_in_breach(pool: asyncpg.Pool, account: str) -> None:
    """A case the ledger shows open for the account (its row, as a workflow's opening writes it)."""
    await LedgerActivities(pool).open_case(opening_of(account))


async def test_the_scan_reads_the_figures_the_case_would(venue: asyncpg.Pool) -> None:
    """The warning scan computes equity and maintenance in SQL; they are the domain's, to the last digit."""
    await onboard(
        venue,
        Trader("mixed", D("3333.33"), {"BTCUSDT": (D("0.7"), D("50100")), "ETHUSDT": (D("-9.3"), D("2950"))}),
    )
    async with venue.acquire() as conn:
        await move_market(conn, {"BTCUSDT": D("49987.5"), "ETHUSDT": D("3011.1")})
        snapshot = await load_margin_snapshot(conn, "mixed")
    [near] = await LedgerWarnings(venue).scan(WarningScan(top_level=D(10)))
    assert (near.equity, near.maintenance_margin) == (
        snapshot.figures.equity,
        snapshot.figures.maintenance_margin,
    )


def crossing(account: str, equity: str = "290") -> WarningCrossing:
    return WarningCrossing(
        account_id=account,
        currency="USDT",
        level=D("1.5"),
        equity=D(equity),
        maintenance_margin=D(198),
        rearm_above=D("1.575"),
    )


async def test_two_monitors_at_once_write_one_warning(venue: asyncpg.Pool) -> None:
    account = await trader(venue, "twice", "290")
    ledger = LedgerWarnings(venue)
    results = await asyncio.gather(*(ledger.record(crossing(account)) for _ in range(4)))
    assert sum(r is not None for r in results) == 1
    # A monitor whose scan was read before that warning committed asks again: the warning holds, nothing new.
    assert await ledger.record(crossing(account)) is None
    assert len(await rows(venue, account)) == 1


async def test_a_failed_warning_leaves_nothing_behind(
    venue: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warning's row and its notice commit together or not at all."""
    account = await trader(venue, "failing", "290")

    def broken(self: MarginWarning) -> Notice:
        raise RuntimeError("the notice could not be composed")

    monkeypatch.setattr(MarginWarning, "notice", broken)
    with pytest.raises(RuntimeError):
        await LedgerWarnings(venue).record(crossing(account))
    monkeypatch.undo()
    async with venue.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM margin_warnings") == 0
        assert await conn.fetchval("SELECT count(*) FROM notice_outbox") == 0
    warning = await LedgerWarnings(venue).record(crossing(account))
    assert warning is not None and warning.episode == 1  # the failed try used up nothing


async def test_the_ledger_refuses_a_warning_outside_the_band(venue: asyncpg.Pool) -> None:
    """In breach, or above its level, no warning row can be written, whoever asks."""
    account = await trader(venue, "outside", "290")
    for equity in ("197", "297"):
        with pytest.raises(asyncpg.CheckViolationError):
            await LedgerWarnings(venue).record(crossing(account, equity))
    assert await rows(venue, account) == []


async def test_only_a_warning_may_have_no_case_in_the_outbox(venue: asyncpg.Pool) -> None:
    async with venue.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO notice_outbox (notice_id, case_id, body, deliver_by)"
                " VALUES ('x:opened', NULL, '{\"kind\": \"margin_call.opened\"}', now())"
            )


def test_levels_and_re_arm_margin_are_checked_naming_the_field() -> None:
    for bad, named in (
        ({"warning_levels": ["1"]}, "warning_levels"),
        ({"warning_levels": ["1.5", "1.50"]}, "warning_levels"),
        ({"warning_levels": ["1.1"] * 6}, "warning_levels"),
        ({"warning_levels": [1.5]}, "warning_levels"),
        ({"warning_rearm_margin": "-0.01"}, "warning_rearm_margin"),
    ):
        with pytest.raises(ValueError, match=named):
            CasePolicy.model_validate(bad)
    assert CasePolicy(warning_levels=[]).warning_levels_crossed(D(200), D(198)) == []
    assert POLICY.warning_levels_crossed(D(230), D(198)) == [D("1.5"), D("1.2")]
    assert POLICY.warning_levels_crossed(D(197), D(198)) == []  # in breach: the case, not a warning


async def test_a_call_spends_every_level_so_the_way_back_is_not_warned(venue: asyncpg.Pool) -> None:
    """The call says more than any warning: its levels hold until the account is clearly above them."""
    watch = warner(venue)
    account = await trader(venue, "called", "240")  # 1.212 x maintenance: the 1.5 warning goes out
    assert (await watch.tick()).warned == 1
    await move_equity(venue, account, "-90")  # 150: in breach, and a case opens on it
    await open_case_in_breach(venue, account)
    spent = await rows(venue, account)
    assert [(r["level"], r["episode"], r["notice_id"]) for r in spent] == [
        ("1.5", 1, f"warning:{account}:1.5:1"),  # warned before the call: it stays that warning
        ("1.2", 1, None),  # spent by the call, no notice
    ]
    # A retried opening spends nothing twice.
    await LedgerActivities(venue).open_case(opening_of(account))
    assert len(await rows(venue, account)) == 2

    # The case closes with the account back at 230 (a deposit): no warning on the way back.
    await move_equity(venue, account, "80")
    await close_case(venue, account)
    assert (await watch.tick()).warned == 0
    await move_equity(venue, account, "82")  # 312: clearly above both: re-armed
    assert (await watch.tick()).rearmed == 2
    await move_equity(venue, account, "-82")  # 230: both warn, a new episode each
    assert (await watch.tick()).warned == 2
    assert [(w.level, w.episode) for w in await LedgerWarnings(venue).of_account(account)] == [
        (D("1.5"), 1),
        (D("1.5"), 2),
        (D("1.2"), 2),
    ]


async def test_warning_bookkeeping_never_keeps_a_case_from_opening(venue: asyncpg.Pool) -> None:
    account = await trader(venue, "opens", "150")
    async with venue.acquire() as conn:
        await conn.execute("ALTER TABLE margin_warnings RENAME TO margin_warnings_gone")
    try:
        snapshot = await LedgerActivities(venue).open_case(opening_of(account))
    finally:
        async with venue.acquire() as conn:
            await conn.execute("ALTER TABLE margin_warnings_gone RENAME TO margin_warnings")
    assert snapshot.in_breach
    async with venue.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM margin_calls WHERE account_id = $1", account) == 1
        assert (
            await conn.fetchval("SELECT count(*) FROM margin_call_cases WHERE account_id = $1", account) == 1
        )


def opening_of(account: str) -> CaseOpening:
    return CaseOpening(
        case_id=f"{account}/c1", account_id=account, call_id="c1", opened_at=datetime.now(UTC), policy=POLICY
    )


async def close_case(pool: asyncpg.Pool, account: str) -> None:
    """The case's close as the ledger records it (outcome and time), without running a workflow."""
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE margin_call_cases SET state = 'CURED', closed_at = now(), outcome = '{}'::jsonb"
            " WHERE account_id = $1 AND closed_at IS NULL",
            account,
        )
