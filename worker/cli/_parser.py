"""The command line's grammar: commands, options and the types that refuse bad values (exit 2).

A value is refused here, naming its option, before anything connects: argparse
prints ``error: argument --deadline: ...`` and exits 2, the CLI's one shape
for bad input.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from datetime import date, datetime, timedelta

from workflows.domain.policies import MAX_DEADLINE, describe_span
from workflows.listing import LISTED_STATES

DESCRIPTION = "``margin-call``: the command line of the case manager (see docs/design.md for the contract)."
# The commands that run until stopped log at INFO; the others print only their answer.
SERVICES = frozenset({"up", "worker", "monitor", "api"})
# What each staff action does to a case, as ``cases --help`` shows it.
STAFF_ACTIONS = {
    "extend": "move the deadline later",
    "waive": "close without liquidation",
    "approve-waive": "a second operator approves a pending waive (above the policy's amount)",
    "force": "start liquidating now",
}


def seconds(low: timedelta, high: timedelta) -> Callable[[str], timedelta]:
    """An argparse type for a duration in seconds, refused (exit 2, naming the option) outside [low, high].

    ``float`` alone lets ``inf``, ``nan`` and ``1e20`` through, which then
    overflow ``timedelta`` far from the option that caused it.
    """

    def duration(text: str) -> timedelta:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text[:40]!r}")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text[:40]!r}")
        if not low.total_seconds() <= value <= high.total_seconds():
            raise argparse.ArgumentTypeError(
                f"must be between {describe_span(low)} and {describe_span(high)}, got {text[:40]!r}"
            )
        return timedelta(seconds=value)

    return duration


def aware_time(text: str) -> datetime:
    """An argparse type for an ISO 8601 time that says its zone: a bare time is ambiguous across desks."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} has no time zone (add Z or +00:00)")
    return value


def as_of(text: str) -> datetime | str:
    """``--as-of``: a time with its zone, or ``now``, kept as it is: stamped as late as possible, when sent."""
    return text if text == "now" else aware_time(text)


# Staff may give a case up to the longest deadline a policy allows, and no less than a second.
CASE_SPAN = seconds(timedelta(seconds=1), MAX_DEADLINE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="margin-call", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_services(commands)
    _add_case_commands(commands)
    risk = commands.add_parser("risk", help="portfolio JSON on stdin -> margin figures JSON on stdout")
    risk.add_argument(
        "--json", action="store_true", help="the figures are always JSON; accepted like elsewhere"
    )
    _add_feeds(commands)
    _add_reports(commands)
    db = commands.add_parser("db", help="ledger database administration")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    db_commands.add_parser("migrate", help="apply the SQL migrations (safe to run twice)")
    return parser


def _add_services(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The processes that run until stopped, and the demo."""
    up = commands.add_parser("up", help="embedded stack + worker + monitor, until Ctrl-C")
    up.add_argument("--temporal-port", type=int, default=7233)
    up.add_argument("--receiver-port", type=int, default=8377)
    up.add_argument("--api-port", type=int, default=8080)
    up.add_argument(
        "--sample-exchange",
        action="store_true",
        help="load the sample exchange through the API (accounts, positions, marks, insurance fund) and send"
        " liquidations to the venue simulator, on --venue-port",
    )
    up.add_argument(
        "--venue-port", type=int, default=8378, help="the venue simulator's port (--sample-exchange)"
    )
    api = commands.add_parser("api", help="serve the HTTP API")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument("--host", default="127.0.0.1")
    commands.add_parser("demo", help="a market crash on the embedded stack, end to end, with a summary")
    commands.add_parser("worker", help="run a worker on task queue margin-calls")
    monitor = commands.add_parser("monitor", help="scan for breaches and open cases")
    monitor.add_argument(
        "--interval",
        type=seconds(timedelta(milliseconds=10), timedelta(hours=1)),
        default=timedelta(seconds=1),
        help="seconds between scans",
    )


def _add_case_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Opening a case, reporting a deposit, and finding and acting on cases."""
    start = commands.add_parser("start", help="open a case for an account (joins the open one)")
    start.add_argument("account_id")
    start.add_argument("--call-id", help="your id for this margin call (default: a timestamp)")
    start.add_argument("--deadline", type=CASE_SPAN, help="seconds the trader has to deposit")
    start.add_argument(
        "--policy", default="standard", help="the operator's named policy (MARGIN_CALL_POLICIES)"
    )
    start.add_argument("--json", action="store_true")

    deposit = commands.add_parser("deposit", help="credit a deposit to the ledger and report it to the case")
    deposit.add_argument("account_id")
    deposit.add_argument("deposit_id")
    deposit.add_argument("amount", help="decimal string, e.g. 125.50")
    deposit.add_argument("--currency", default="USDT")
    deposit.add_argument("--signal", action="store_true", help="report by signal (no receipt)")
    deposit.add_argument("--credit-only", action="store_true", help="credit the ledger, do not report it")
    deposit.add_argument("--json", action="store_true")

    instruments = commands.add_parser("instruments", help="halt, resume and list instruments (trading halts)")
    instrument_commands = instruments.add_subparsers(
        dest="instruments_command", required=True, metavar="INSTRUMENTS_COMMAND"
    )
    instrument_list = instrument_commands.add_parser("list", help="instruments with their halt and mark age")
    instrument_list.add_argument("--halted", action="store_true", help="only halted instruments")
    instrument_list.add_argument("--json", action="store_true")
    for name, text in (("halt", "stop liquidations selling it"), ("resume", "let it trade again")):
        change = instrument_commands.add_parser(name, help=text)
        change.add_argument("instrument")
        change.add_argument("--operator", required=True)
        change.add_argument("--reason", required=True)
        change.add_argument("--json", action="store_true")

    cases = commands.add_parser("cases", help="find, inspect and act on cases")
    case_commands = cases.add_subparsers(dest="cases_command", required=True, metavar="CASES_COMMAND")
    listing = case_commands.add_parser("list", help="cases by state, account, time")
    listing.add_argument(
        "--state",
        type=str.upper,
        choices=LISTED_STATES,
        metavar="STATE",
        help=f"one of {', '.join(LISTED_STATES)}",
    )
    listing.add_argument("--account")
    listing.add_argument("--since", type=aware_time, help="opened at or after (ISO 8601, with a zone)")
    listing.add_argument("--deadline-before", type=aware_time, help="ISO 8601, with a zone")
    listing.add_argument("--json", action="store_true")
    show = case_commands.add_parser("show", help="a case's status and timeline")
    show.add_argument("account_id")
    show.add_argument("--json", action="store_true")
    statement = case_commands.add_parser("statement", help="a case's statement: every figure with its inputs")
    statement.add_argument("account_id")
    statement.add_argument("--case-id", help="an older case of the account (default: its latest)")
    statement.add_argument("--json", action="store_true")
    for name, text in STAFF_ACTIONS.items():
        act = case_commands.add_parser(name, help=text)
        act.add_argument("account_id")
        act.add_argument("--operator", required=True)
        act.add_argument("--reason", required=True)
        act.add_argument("--json", action="store_true")
        if name == "extend":
            act.add_argument("--by", type=CASE_SPAN, required=True, help="seconds to add to the deadline")
        if name == "waive":
            act.add_argument(
                "--for",
                dest="hold",
                type=CASE_SPAN,
                help="seconds the waive holds (no new case for the account unless past the hard threshold);"
                " without it, until the account is healthy again",
            )


def _add_feeds(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``feed KIND FILE``: load an exchange's feed from a JSON or JSON-lines file into the ledger."""
    feed = commands.add_parser(
        "feed", help="load marks, trades, movements, withdrawals, reference data or a reconciliation"
    )
    feed.add_argument(
        "feed_kind",
        choices=("marks", "trades", "movements", "withdrawals", "reference", "reconcile"),
        metavar="KIND",
        help="marks, trades, movements, withdrawals, reference or reconcile",
    )
    feed.add_argument("file", metavar="FILE", help="JSON (a list or one record) or JSON lines; - for stdin")
    feed.add_argument("--operator", help="who changes reference data (required for reference; audited)")
    feed.add_argument(
        "--as-of",
        type=as_of,
        help="marks: the time of records that give none (ISO 8601 with a zone, or now: as the command sends them)",
    )
    feed.add_argument("--json", action="store_true")


def _day(text: str) -> date:
    """An argparse type for a calendar day, ``YYYY-MM-DD`` (exit 2 naming the option otherwise)."""
    from worker.call_report import parse_day

    try:
        return parse_day(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_reports(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``report calls --day``: the regulator's daily record of margin calls (FINRA Rule 4220)."""
    report = commands.add_parser("report", help="reports read from the ledger")
    reports = report.add_subparsers(dest="report_kind", required=True, metavar="REPORT")
    calls = reports.add_parser(
        "calls", help="the day's margin calls: amount, due date, how and when met (CSV; --json)"
    )
    calls.add_argument("--day", type=_day, required=True, help="YYYY-MM-DD; the day runs 00:00 to 24:00 UTC")
    calls.add_argument("--json", action="store_true")
