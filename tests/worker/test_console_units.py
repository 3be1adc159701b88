"""The console's pure parts: the list's query and order, forms as staff actions, sessions, its setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.config import ConfigError, load_settings
from worker.console._forms import FormError, deadline_extension, read_form, staff_action, waiver
from worker.console._listing import ListQuery, QueryError, list_query, row, sorted_cases
from worker.console._sessions import LIFETIME_SECONDS, Sessions
from workflows.contract import CaseSummary

FORM = "application/x-www-form-urlencoded"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def summary(
    account: str, shortfall: float | None, state: str = "AWAITING_DEPOSIT", running: bool = True
) -> CaseSummary:
    return CaseSummary(
        workflow_id=f"margin-call-{account}",
        run_id="r",
        account_id=account,
        state=state,
        shortfall=shortfall,
        deadline=None,
        stage=0,
        started_at=NOW,
        closed_at=None if running else NOW,
        running=running,
        hold="STALE_MARKS",
    )


def test_sorting_puts_cases_without_the_figure_last_either_way() -> None:
    cases = [summary("a", 48.0), summary("b", None), summary("c", 98.1)]
    ascending = sorted_cases(cases, ListQuery(sort="shortfall", descending=False))
    descending = sorted_cases(cases, ListQuery(sort="shortfall", descending=True))
    assert [c.account_id for c in ascending] == ["a", "c", "b"]
    assert [c.account_id for c in descending] == ["c", "a", "b"]


def test_a_closed_case_shows_its_outcome_and_no_hold_and_the_shortfall_as_published() -> None:
    closed = row(summary("a", 0.1, state="WAIVED", running=False))
    assert (closed.state, closed.outcome, closed.hold) == (None, "WAIVED", None)
    assert str(closed.shortfall) == "0.1"  # the double's shortest repr, not 0.1000000000000000055...
    assert row(summary("b", 1.0)).hold == "STALE_MARKS"


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"state": "COMPLETED"}, "state: unknown state"),
        ({"account": "a b"}, "account: 1 to 128"),
        ({"sort": "colour"}, "sort: one of"),
        ({"order": "up"}, "order: asc or desc"),
    ],
)
def test_a_bad_filter_or_sort_names_its_parameter(params: dict[str, str], problem: str) -> None:
    with pytest.raises(QueryError, match=rf"^{problem}"):
        list_query(params)


def test_sorting_by_a_column_again_flips_its_order() -> None:
    query = list_query({"sort": "shortfall", "state": "LIQUIDATING"})
    assert query.with_sort("shortfall") == {"sort": "shortfall", "order": "desc", "state": "LIQUIDATING"}
    assert query.with_sort("account")["order"] == "asc"


def test_forms_are_read_strictly() -> None:
    assert read_form(FORM + "; charset=utf-8", b"operator=al%20ice&reason=") == {
        "operator": "al ice",
        "reason": "",
    }
    with pytest.raises(FormError, match=r"^body: expected a form"):
        read_form("application/json", b"{}")
    with pytest.raises(FormError, match=r"^operator: sent twice"):
        read_form(FORM, b"operator=a&operator=b")
    with pytest.raises(FormError, match=r"^body: not a form"):
        read_form(FORM, b"operator=%ff")


def test_forms_become_the_contracts_staff_actions_or_name_the_field() -> None:
    with pytest.raises(FormError, match=r"^operator: missing required field"):
        staff_action({"operator": "  ", "reason": "r"})
    extension = deadline_extension({"operator": "a", "reason": "r", "by": "60"}, NOW)
    assert extension.new_deadline == NOW + timedelta(seconds=60)
    with pytest.raises(FormError, match=r"^state: this case has no deadline"):
        deadline_extension({"operator": "a", "reason": "r", "by": "60"}, None)
    with pytest.raises(FormError, match=r"^by: a whole number of seconds"):
        deadline_extension({"operator": "a", "reason": "r", "by": "2592001"}, NOW)
    with pytest.raises(FormError, match=r"^by: a whole number of seconds"):
        deadline_extension({"operator": "a", "reason": "r", "by": "١٢"}, NOW)  # Arabic-Indic digits
    assert waiver({"operator": "a", "reason": "r", "for": "3600"}, NOW).until == NOW + timedelta(hours=1)
    assert waiver({"operator": "a", "reason": "r"}).until is None
    with pytest.raises(FormError, match=r"^until: give a time or a number of seconds"):
        waiver({"operator": "a", "reason": "r", "for": "1", "until": "2030-01-01T00:00:00Z"})


def test_sessions_expire_and_forms_are_taken_once() -> None:
    clock = [0.0]
    sessions = Sessions(clock=lambda: clock[0])
    session_id, session = sessions.open(frozenset({"cases:read"}))
    assert sessions.get(session_id) is session and sessions.get("guess") is None
    assert session.csrf_matches(session.csrf) and not session.csrf_matches(None)
    form_id = session.new_form()
    assert not session.use_form("not-issued")
    assert session.use_form(form_id) and not session.use_form(form_id) and session.was_used(form_id)
    clock[0] = LIFETIME_SECONDS + 1
    assert sessions.get(session_id) is None


def test_the_temporal_ui_url_is_checked_at_start() -> None:
    assert (
        load_settings({"MARGIN_CALL_TEMPORAL_UI_URL": "http://ui:8080/"}).temporal_ui_url == "http://ui:8080"
    )
    with pytest.raises(ConfigError, match="MARGIN_CALL_TEMPORAL_UI_URL"):
        load_settings({"MARGIN_CALL_TEMPORAL_UI_URL": "ui:8080"})
