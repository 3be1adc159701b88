"""What a command prints on stdout: a line or a table for people, or the same answer as JSON (``--json``).

Every command prints exactly one answer; its words for people and its JSON
are built side by side here, so that the two never disagree on what happened.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel

from worker.case_view import render_ended, render_status
from workflows.client import DepositReport
from workflows.contract import CaseStatus, CaseSummary, DepositBooking
from workflows.listing import EndedCase

# What ``--json`` prints: an object, or a list of objects.
Document = Mapping[str, object] | Sequence[Mapping[str, object]]


def _json_default(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def emit(document: Document, as_json: bool, text: str) -> None:
    """The answer: ``document`` as indented JSON with ``--json``, else ``text``."""
    if as_json:
        print(json.dumps(document, indent=2, default=_json_default))
    else:
        print(text)


def _json(model: BaseModel) -> dict[str, object]:
    return model.model_dump(mode="json")


def case_opened(workflow_id: str, run_id: str | None, call_id: str, account_id: str, as_json: bool) -> None:
    document = {"workflow_id": workflow_id, "run_id": run_id, "call_id": call_id}
    emit(document, as_json, f"case {workflow_id} (run {run_id}) is open for {account_id}")


def _what_was_credited(booking: DepositBooking, amount: str, currency: str, account_id: str) -> str:
    done = "already credited" if booking.already_credited else "credited"
    return f"{amount} {currency} {done} to {account_id}"


def deposit_credited(
    booking: DepositBooking, amount: str, currency: str, account_id: str, as_json: bool
) -> None:
    """A deposit credited to the ledger and not reported to any case (``--credit-only``)."""
    emit(_json(booking), as_json, _what_was_credited(booking, amount, currency, account_id))


def deposit_reported(
    report: DepositReport, amount: str, currency: str, account_id: str, as_json: bool
) -> None:
    """A deposit credited, and what the account's case made of it (if it has one open)."""
    if report.receipt:
        case = f"case {report.receipt.state.value}, shortfall {report.receipt.shortfall}"
    else:
        case = "reported to the open case" if report.case_open else "no open case"
    credited = _what_was_credited(report.booking, amount, currency, account_id)
    emit(_json(report), as_json, f"{credited}; {case}")


def case_table(cases: Sequence[CaseSummary], as_json: bool) -> None:
    """Cases as visibility lists them: one row each, then how many."""
    lines = [f"{'ACCOUNT':<24} {'STATE':<17} {'SHORTFALL':>12} {'STAGE':>5}  DEADLINE"]
    for c in cases:
        shortfall = f"{c.shortfall:,.2f}" if c.shortfall is not None else "-"
        deadline = c.deadline.isoformat(timespec="seconds") if c.deadline else "-"
        account, state = c.account_id or "?", c.state or "?"
        lines.append(f"{account:<24} {state:<17} {shortfall:>12} {c.stage or 0:>5}  {deadline}")
    lines.append(f"{len(cases)} case(s)")
    emit([_json(c) for c in cases], as_json, "\n".join(lines))


def case_shown(case: CaseStatus | EndedCase, as_json: bool) -> None:
    """A case's status and timeline, or, for one that ended without an outcome, why it ended."""
    if isinstance(case, EndedCase):
        emit(dataclasses.asdict(case), as_json, render_ended(case))
    else:
        emit(_json(case), as_json, render_status(case))
