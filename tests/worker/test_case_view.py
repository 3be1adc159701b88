"""``margin-call cases show`` as people read it: every figure printed, however large, none missing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

from worker.case_view import render_ended, render_status
from workflows.contract import CaseState, CaseStatus, TimelineEntry
from workflows.domain.money import display_money
from workflows.listing import EndedCase

NOW = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def status(**changes: object) -> CaseStatus:
    fields: dict[str, object] = {
        "case_id": "acct/c1",
        "account_id": "acct",
        "call_id": "c1",
        "state": CaseState.AWAITING_DEPOSIT,
        "currency": "USDT",
        "opened_at": NOW,
        "deadline": NOW,
        "equity": D("150"),
        "maintenance_margin": D("198"),
        "shortfall": D("48"),
        "deposit_needed": D("48"),
        "deposits_counted": [],
        "stages": [],
        "fees_to_insurance_fund": D(0),
        "insurance_fund_used": D(0),
        "uncovered_loss": D(0),
        "notices_sent": 1,
        "notices_failed": [],
        "timeline": [TimelineEntry(at=NOW, what="case opened")],
        "closed_at": None,
    }
    return CaseStatus.model_validate({**fields, **changes})


def test_money_is_shown_with_two_places_and_separators_and_a_dash_for_none() -> None:
    assert display_money(D("1234567.891")) == "1,234,567.89"
    assert display_money(D("0")) == "0.00"
    assert display_money(None) == "-"


def test_a_figure_past_the_default_precision_still_prints() -> None:
    """A computed figure of 1e26 or more once failed to print in ``cases show`` (the workflow's did not)."""
    assert display_money(D("1e30")) == "1,000,000,000,000,000,000,000,000,000,000.00"
    shown = render_status(status(equity=D("1e30"), shortfall=None))
    assert "equity      1,000,000,000,000,000,000,000,000,000,000.00 USDT" in shown
    assert "shortfall -" in shown


def test_status_lines_then_the_timeline() -> None:
    lines = render_status(status()).splitlines()
    assert lines[0] == "case acct/c1  account acct  call c1"
    assert lines[1] == "state       AWAITING_DEPOSIT"
    assert lines[3] == "deadline    2030-01-02T03:04:05+00:00"
    assert lines[-2:] == ["timeline", "  03:04:05.678  case opened"]


def test_a_case_that_ended_without_an_outcome_shows_why() -> None:
    ended = EndedCase(
        workflow_id="margin-call-acct",
        run_id=None,
        account_id="acct",
        state="TERMINATED",
        reason="ops: duplicate",
        started_at=NOW,
        closed_at=None,
    )
    assert render_ended(ended).splitlines()[1:] == [
        "state       TERMINATED",
        "opened      2030-01-02T03:04:05+00:00",
        "closed      -",
        "reason      ops: duplicate",
    ]
