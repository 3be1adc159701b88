"""The case list as staff read it: filters and sorting from the query string, rows in the trader's words.

The cases come from visibility (``MarginCallClient.list_cases``: the search
attributes, no worker asked), filtered there by state and account; sorting is
done here, on the rows fetched, so that every column sorts the same way
whatever the visibility store can order by. A case that is running shows its
state; one that closed shows its outcome instead, so a list of closed cases
reads CURED, WAIVED, RESTORED, CLOSED_OUT, BANKRUPT rather than one COMPLETED.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from workflows.contract import CLOSED_STATES, CaseSummary
from workflows.listing import LISTED_STATES

# The rows fetched for one page: more than a support desk scrolls through; the filters narrow it.
PAGE_LIMIT = 500
ACCOUNT = re.compile(r"^[A-Za-z0-9._:@/-]{1,128}$")
OUTCOMES = frozenset(state.value for state in CLOSED_STATES)


def _shortfall(case: CaseSummary) -> Decimal | None:
    """The search attribute is a double; its shortest repr is the decimal the case published."""
    return None if case.shortfall is None else Decimal(repr(case.shortfall))


# Column -> the value it sorts by. None sorts last in either direction.
SORTS: dict[str, Callable[[CaseSummary], Any]] = {
    "account": lambda c: c.account_id,
    "state": lambda c: c.state,
    "shortfall": _shortfall,
    "deadline": lambda c: c.deadline,
    "stage": lambda c: c.stage,
    "hold": lambda c: c.hold if c.running else None,
    "opened": lambda c: c.started_at,
    "closed": lambda c: c.closed_at,
}
DEFAULT_SORT = "opened"


class QueryError(ValueError):
    """A filter or sort the list cannot take: ``field: problem``."""


@dataclass(frozen=True)
class ListQuery:
    state: str | None = None
    account: str | None = None
    sort: str = DEFAULT_SORT
    descending: bool = True

    def with_sort(self, column: str) -> dict[str, str]:
        """The query string that sorts by ``column``: flips the order when it is already the sort."""
        descending = not self.descending if column == self.sort else column in ("opened", "closed")
        params = {"sort": column, "order": "desc" if descending else "asc"}
        if self.state:
            params["state"] = self.state
        if self.account:
            params["account"] = self.account
        return params


def list_query(params: Mapping[str, str]) -> ListQuery:
    state = params.get("state", "").strip() or None
    if state is not None and state not in LISTED_STATES:
        raise QueryError(f"state: unknown state (known: {', '.join(LISTED_STATES)})")
    account = params.get("account", "").strip() or None
    if account is not None and not ACCOUNT.fullmatch(account):
        raise QueryError("account: 1 to 128 letters, digits or ._:@/-")
    sort = params.get("sort", "").strip() or DEFAULT_SORT
    if sort not in SORTS:
        raise QueryError(f"sort: one of {', '.join(SORTS)}")
    order = params.get("order", "").strip() or ("desc" if sort in ("opened", "closed") else "asc")
    if order not in ("asc", "desc"):
        raise QueryError("order: asc or desc")
    return ListQuery(state=state, account=account, sort=sort, descending=order == "desc")


def sorted_cases(cases: list[CaseSummary], query: ListQuery) -> list[CaseSummary]:
    key = SORTS[query.sort]
    present = [c for c in cases if key(c) is not None]
    absent = [c for c in cases if key(c) is None]
    # Ties keep a stable order: the most recently opened first.
    present.sort(key=lambda c: c.started_at.timestamp() if c.started_at else 0.0, reverse=True)
    present.sort(key=key, reverse=query.descending)
    return present + absent


@dataclass(frozen=True)
class Row:
    """One case as the list shows it."""

    account_id: str | None
    state: str | None
    outcome: str | None
    shortfall: Decimal | None
    deadline: datetime | None
    stage: int | None
    hold: str | None
    opened: datetime | None
    closed: datetime | None
    running: bool


def row(case: CaseSummary) -> Row:
    closed = not case.running
    return Row(
        account_id=case.account_id,
        state=None if closed else case.state,
        outcome=case.state if closed else None,
        shortfall=_shortfall(case),
        deadline=case.deadline,
        stage=case.stage,
        hold=case.hold if case.running else None,
        opened=case.started_at,
        closed=case.closed_at,
        running=case.running,
    )
