"""What the demo leaves on record: the day's margin calls as a broker files them, and a statement per outcome.

Read through the HTTP API, as the compliance desk and support staff would, and
written under the demo's data directory, so that they can be opened after the
stack has stopped. And checked, because a record nobody compares rots: the
day's report must list each case of the demo once, its outcome the case's own
and how the call was met agreeing with that outcome; each statement kept must
be of the outcome it is filed under.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from worker.call_report import CallsReport
from worker.exchange.api import ApiClient
from workflows.contract import CaseSummary

Say = Callable[[str], None]
# How a call may be met, by the case's outcome (a cure with no money in is the account recovering).
MET_BY = {
    "CURED": frozenset({"deposit", "recovered"}),
    "RESTORED": frozenset({"liquidation"}),
    "CLOSED_OUT": frozenset({"liquidation"}),
    "BANKRUPT": frozenset({"liquidation"}),
    "WAIVED": frozenset({"waiver"}),
}


@dataclass
class Records:
    """The files written, and what disagreed (nothing, when all is well)."""

    reports: list[Path] = field(default_factory=list)
    statements: dict[str, tuple[str, Path]] = field(default_factory=dict)  # outcome -> (account, page)
    problems: list[str] = field(default_factory=list)


async def keep_records(api: ApiClient, out: Path, say: Say) -> Records:
    """The report of each day the demo's calls fell on, and one statement of each outcome, checked and written."""
    out.mkdir(parents=True, exist_ok=True)
    records = Records()
    cases = {c.account_id: c for c in await api.cases() if c.account_id}
    days = sorted({c.started_at.date() for c in cases.values() if c.started_at})
    met: Counter[str] = Counter()
    reported: set[str] = set()
    for day in days:
        report = CallsReport.model_validate(await api.calls_report(day))
        path = out / f"margin-calls-{day.isoformat()}.csv"
        path.write_text(await api.calls_report_csv(day), encoding="utf-8")
        records.reports.append(path)
        for call in report.calls:
            met[call.met_by] += 1
            records.problems += _disagreements(call.account_id, call.outcome, call.met_by, cases, reported)
            reported.add(call.account_id)
    records.problems += [f"{a}: its case made no call in the report" for a in sorted(cases.keys() - reported)]
    say(
        f"\nThe day's margin calls (FINRA Rule 4220 record, {_days(days)} UTC): {sum(met.values())} calls, met by "
        + ", ".join(f"{how} {n}" for how, n in sorted(met.items()))
    )
    for path in records.reports:
        say(f"  {path}")

    statements = out / "statements"
    statements.mkdir(exist_ok=True)
    say("\nOne statement of each outcome (every figure beside its inputs; prints well):")
    for outcome in MET_BY:
        account = next((a for a, c in sorted(cases.items()) if c.state == outcome), None)
        if account is None:
            continue
        statement = await api.statement(account)
        if statement.state.value != outcome:
            records.problems.append(
                f"{account}: its statement says {statement.state.value}, its case {outcome}"
            )
        page = statements / f"{outcome}-{account}.html"
        page.write_text(await api.statement_page(account), encoding="utf-8")
        (statements / f"{outcome}-{account}.json").write_text(
            statement.model_dump_json(indent=2), encoding="utf-8"
        )
        records.statements[outcome] = (account, page)
        say(f"  {outcome:<11} {page}")
    for problem in records.problems:
        say(f"RECORDS DISAGREE: {problem}")
    return records


def _disagreements(
    account: str, outcome: str, met_by: str, cases: dict[str, CaseSummary], reported: set[str]
) -> Iterable[str]:
    case = cases.get(account)
    if case is None:
        yield f"{account}: a call in the report, but no case in the listing"
        return
    if account in reported:
        yield f"{account}: more than one call in the report for one case"
    if outcome != case.state:
        yield f"{account}: the report says {outcome}, the case {case.state}"
    if met_by not in MET_BY.get(outcome, frozenset()):
        yield f"{account}: a {outcome} case cannot have been met by {met_by!r}"


def _days(days: list[date]) -> str:
    return " and ".join(d.isoformat() for d in days) or "no day"
