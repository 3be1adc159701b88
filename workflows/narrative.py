"""How a case tells its story: the Web UI's details, search attributes, notice wording and metrics.

Pulled out of the workflow so that ``case.py`` reads as the lifecycle. Nothing
here decides anything about money: these functions only describe figures the
ledger returned. Deterministic (workflow code): no clock but the one passed in,
no I/O; metrics go through ``workflow.metric_meter()``, which replay skips.
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

from workflows import contract
from workflows.contract import CaseState, Notice, NoticeKind, StageResult
from workflows.domain.liquidation import Fill
from workflows.domain.money import DISPLAY_PRECISION, display_money
from workflows.domain.portfolio import MarginSnapshot

# Enough significant digits that quantizing any figure the ledger can hold never overflows the context.
FIGURE_PRECISION = DISPLAY_PRECISION


def deposit_needed(snapshot: MarginSnapshot | None) -> Decimal | None:
    """The shortfall in the settlement currency's units, rounded up: a deposit of this much cures."""
    if snapshot is None:
        return None
    with decimal.localcontext() as ctx:
        ctx.prec = FIGURE_PRECISION
        return snapshot.figures.shortfall.quantize(
            Decimal(1).scaleb(-snapshot.places), rounding=decimal.ROUND_UP
        )


def search_updates(
    state: CaseState, account_id: str, snapshot: MarginSnapshot | None, stages: int, deadline: datetime | None
) -> list[SearchAttributeUpdate[Any]]:
    """The case's search attributes: what support staff filter the case list by."""
    shortfall = float(snapshot.figures.shortfall) if snapshot else 0.0
    updates: list[SearchAttributeUpdate[Any]] = [
        contract.MARGIN_CALL_STATE.value_set(state.value),
        contract.ACCOUNT_ID.value_set(account_id),
        contract.MARGIN_SHORTFALL.value_set(shortfall),
        contract.LIQUIDATION_STAGE.value_set(stages),
    ]
    if deadline is not None:
        updates.append(contract.DEPOSIT_DEADLINE.value_set(deadline))
    return updates


def hold_update(hold: str | None) -> SearchAttributeUpdate[Any]:
    """``MarginCallHold``: why liquidation waits, unset once it resumes (staff query ``IS NOT NULL``)."""
    return contract.MARGIN_CALL_HOLD.value_set(hold) if hold else contract.MARGIN_CALL_HOLD.value_unset()


def details(
    state: CaseState,
    account_id: str,
    case_id: str,
    snapshot: MarginSnapshot | None,
    deadline: datetime | None,
    stages: int,
    fees: Decimal,
) -> str:
    """The Web UI's current details: the case at a glance, in markdown."""
    lines = [f"**{state.value}** · account `{account_id}` · case `{case_id}`"]
    if snapshot is not None:
        f = snapshot.figures
        lines.append(
            f"equity {display_money(f.equity)} · maintenance {display_money(f.maintenance_margin)} · "
            f"shortfall {display_money(f.shortfall)} {snapshot.currency}"
        )
    if deadline is not None:
        lines.append(f"deposit deadline {deadline.isoformat()}")
    if stages:
        lines.append(f"{stages} stage(s), fees {display_money(fees)} to the insurance fund")
    return "\n\n".join(lines)


def call_message(account_id: str, snapshot: MarginSnapshot | None, deadline: datetime | None) -> str:
    """The margin call itself, as the trader reads it in the opened and reminder notices."""
    currency = snapshot.currency if snapshot else ""
    when = deadline.isoformat() if deadline else "now"
    return (
        f"Margin call on account {account_id}: deposit at least {deposit_needed(snapshot)} {currency} "
        f"by {when} or positions will be liquidated in stages."
    )


def describe_fills(fills: Sequence[Fill]) -> str:
    return ", ".join(
        f"{'sold' if f.side == 'sell' else 'bought back'} {f.quantity.normalize()} {f.instrument} "
        f"at {display_money(f.fill_price)}"
        for f in fills
    )


def notice(
    kind: NoticeKind,
    notice_id: str,
    message: str,
    *,
    case_id: str,
    account_id: str,
    state: CaseState,
    snapshot: MarginSnapshot | None,
    deadline: datetime | None,
    stage: StageResult | None = None,
    operator: str | None = None,
    reason: str | None = None,
) -> Notice:
    """A notice with the figures the trader needs to act on it (``notice_id`` is stable across retries)."""
    figures = snapshot.figures if snapshot else None
    return Notice(
        notice_id=notice_id,
        kind=kind,
        case_id=case_id,
        account_id=account_id,
        state=state,
        occurred_at=workflow.now(),
        message=message,
        deadline=deadline,
        currency=snapshot.currency if snapshot else None,
        equity=figures.equity if figures else None,
        maintenance_margin=figures.maintenance_margin if figures else None,
        shortfall=figures.shortfall if figures else None,
        deposit_needed=deposit_needed(snapshot),
        stage=stage.stage if stage else None,
        fills=stage.fills if stage else [],
        fee=stage.fee if stage else None,
        operator=operator,
        reason=reason,
    )


# --- metrics (the worker exports them; replay does not count them twice) ----------


def case_opened() -> None:
    workflow.metric_meter().create_counter("margin_call_cases_opened", "margin call cases opened").add(1)


def case_closed(state: CaseState) -> None:
    workflow.metric_meter().create_counter(
        "margin_call_cases_closed", "margin call cases closed, by outcome"
    ).add(1, {"outcome": state.value})


def deposit_counted() -> None:
    workflow.metric_meter().create_counter(
        "margin_call_deposits_counted", "deposits counted by open cases"
    ).add(1)


def stage_booked(result: StageResult) -> None:
    meter = workflow.metric_meter()
    meter.create_histogram_float(
        "margin_call_liquidation_notional", "notional sold per liquidation stage", "USD"
    ).record(float(result.sold_notional))
    meter.create_histogram_float(
        "margin_call_insurance_fund_fees", "liquidation fee to the insurance fund per stage", "USD"
    ).record(float(result.fee))


def notice_failed(kind: NoticeKind) -> None:
    workflow.metric_meter().create_counter(
        "margin_call_notices_failed", "notices that could not be delivered in their window"
    ).add(1, {"kind": kind.value})
