"""A case as plain lines for people: status first, then the timeline."""

from __future__ import annotations

from datetime import datetime

from workflows.contract import CaseStatus
from workflows.domain.money import display_money as money
from workflows.listing import EndedCase


def _at(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "-"


def render_status(status: CaseStatus) -> str:
    currency = status.currency or ""
    lines = [
        f"case {status.case_id}  account {status.account_id}  call {status.call_id}",
        f"state       {status.state.value}",
        f"opened      {_at(status.opened_at)}",
        f"deadline    {_at(status.deadline)}",
        f"equity      {money(status.equity)} {currency}   maintenance {money(status.maintenance_margin)}"
        f"   shortfall {money(status.shortfall)}",
        f"deposits    {', '.join(status.deposits_counted) or 'none'}",
        f"stages      {len(status.stages)}   fees to insurance fund {money(status.fees_to_insurance_fund)}"
        f"   insurance fund used {money(status.insurance_fund_used)}"
        f"   uncovered loss {money(status.uncovered_loss)}",
        f"notices     {status.notices_sent} delivered, {len(status.notices_failed)} undelivered",
    ]
    if status.pending_waiver:
        pending = status.pending_waiver
        lines.append(
            f"waive       requested by {pending.operator} at {_at(pending.requested_at)}: {pending.reason};"
            f" awaits a second operator until {_at(pending.expires_at)}"
        )
    if status.waiver and status.waiver_approval:
        lines.append(
            f"waive       by {status.waiver.operator}, approved by {status.waiver_approval.operator}"
            f" at {_at(status.waiver_approval.approved_at)}"
        )
    if status.closed_at:
        lines.append(f"closed      {_at(status.closed_at)}")
    lines.append("timeline")
    lines += [f"  {entry.at.strftime('%H:%M:%S.%f')[:-3]}  {entry.what}" for entry in status.timeline]
    return "\n".join(lines)


def render_ended(case: EndedCase) -> str:
    """A case that ended without an outcome has no figures or timeline to show, only why it ended."""
    return "\n".join(
        [
            f"case {case.workflow_id}  account {case.account_id}  run {case.run_id or '-'}",
            f"state       {case.state}",
            f"opened      {_at(case.started_at)}",
            f"closed      {_at(case.closed_at)}",
            f"reason      {case.reason}",
        ]
    )
