"""A case as plain lines for people: status first, then the timeline."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from workflows.client import EndedCase
from workflows.contract import CaseStatus


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value.quantize(Decimal('0.01')):,}"


def render_status(status: CaseStatus) -> str:
    currency = status.currency or ""
    lines = [
        f"case {status.case_id}  account {status.account_id}  call {status.call_id}",
        f"state       {status.state.value}",
        f"opened      {status.opened_at.isoformat(timespec='seconds')}",
        f"deadline    {status.deadline.isoformat(timespec='seconds') if status.deadline else '-'}",
        f"equity      {_money(status.equity)} {currency}   maintenance {_money(status.maintenance_margin)}"
        f"   shortfall {_money(status.shortfall)}",
        f"deposits    {', '.join(status.deposits_counted) or 'none'}",
        f"stages      {len(status.stages)}   fees to insurance fund {_money(status.fees_to_insurance_fund)}"
        f"   insurance fund used {_money(status.insurance_fund_used)}"
        f"   uncovered loss {_money(status.uncovered_loss)}",
        f"notices     {status.notices_sent} delivered, {len(status.notices_failed)} undelivered",
    ]
    if status.closed_at:
        lines.append(f"closed      {status.closed_at.isoformat(timespec='seconds')}")
    lines.append("timeline")
    lines += [f"  {entry.at.strftime('%H:%M:%S.%f')[:-3]}  {entry.what}" for entry in status.timeline]
    return "\n".join(lines)


def render_ended(case: EndedCase) -> str:
    """A case that ended without an outcome has no figures or timeline to show, only why it ended."""

    def at(moment: datetime | None) -> str:
        return moment.isoformat(timespec="seconds") if moment else "-"

    return "\n".join(
        [
            f"case {case.workflow_id}  account {case.account_id}  run {case.run_id or '-'}",
            f"state       {case.state}",
            f"opened      {at(case.started_at)}",
            f"closed      {at(case.closed_at)}",
            f"reason      {case.reason}",
        ]
    )
