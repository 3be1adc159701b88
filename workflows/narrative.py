"""How a case tells its story: the Web UI's details, search attributes, notices, timeline and metrics.

Pulled out of the workflow so that ``case.py`` reads as the lifecycle: it
decides, and this module says so in people's words. Nothing here decides
anything about money: these functions only describe figures the ledger
returned (money as people read it is ``display_money``, one rule for the
case, its notices and the CLI). Workflow code, deterministic: time is
``workflow.now()``, no I/O; the search attribute upsert is the one command
issued here, and ``publish`` issues it exactly when the case used to; metrics
go through ``workflow.metric_meter()``, which replay skips.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

from workflows import contract
from workflows.contract import (
    BankruptcySettlement,
    CaseState,
    CollateralSale,
    Deposit,
    Notice,
    NoticeKind,
    PendingWaiver,
    RiskEscalation,
    StaffAction,
    StageResult,
    Waiver,
)
from workflows.domain.liquidation import Fill, LiquidationPlan
from workflows.domain.money import display_money as money
from workflows.domain.portfolio import MarginSnapshot
from workflows.record import AWAITING, CaseRecord, deposit_needed


def publish(record: CaseRecord, *, search: bool = True) -> None:
    """Keep the Web UI's details current, and the search attributes at each transition.

    Search attributes are upserted only when state, stage or deadline move
    (each upsert is a history event); the shortfall rides along then.
    """
    updates = search_updates(record)
    current = workflow.info().typed_search_attributes
    if search and any(current.get(u.key) != u.value for u in updates):
        workflow.upsert_search_attributes(updates)
    workflow.set_current_details(details(record))


def search_updates(record: CaseRecord) -> list[SearchAttributeUpdate[Any]]:
    """The case's search attributes: what support staff filter the case list by."""
    snapshot = record.snapshot
    shortfall = float(snapshot.figures.shortfall) if snapshot else 0.0
    updates: list[SearchAttributeUpdate[Any]] = [
        contract.MARGIN_CALL_STATE.value_set(record.state.value),
        contract.ACCOUNT_ID.value_set(record.account_id),
        contract.MARGIN_SHORTFALL.value_set(shortfall),
        contract.LIQUIDATION_STAGE.value_set(len(record.stages)),
    ]
    if record.deadline is not None:
        updates.append(contract.DEPOSIT_DEADLINE.value_set(record.deadline))
    if record.held_once:  # never in a case recorded before holds: its upserts replay unchanged
        updates.append(hold_update(record.hold))
    return updates


def hold_update(hold: str | None) -> SearchAttributeUpdate[Any]:
    """``MarginCallHold``: why liquidation waits, unset once it resumes (staff query ``IS NOT NULL``)."""
    return contract.MARGIN_CALL_HOLD.value_set(hold) if hold else contract.MARGIN_CALL_HOLD.value_unset()


def details(record: CaseRecord) -> str:
    """The Web UI's current details: the case at a glance, in markdown."""
    lines = [f"**{record.state.value}** · account `{record.account_id}` · case `{record.case_id}`"]
    if record.snapshot is not None:
        f = record.snapshot.figures
        lines.append(
            f"equity {money(f.equity)} · maintenance {money(f.maintenance_margin)} · "
            f"shortfall {money(f.shortfall)} {record.snapshot.currency}"
        )
    if record.deadline is not None and record.state in AWAITING:
        lines.append(f"deposit deadline {record.deadline.isoformat()}")
    if record.stages:
        lines.append(f"{len(record.stages)} stage(s), fees {money(record.fees)} to the insurance fund")
    if record.pending_waiver is not None:
        pending = record.pending_waiver
        lines.append(
            f"waive by {pending.operator} awaits a second operator until {pending.expires_at.isoformat()}"
        )
    return "\n\n".join(lines)


def notice(
    record: CaseRecord,
    kind: NoticeKind,
    suffix: str,
    message: str,
    *,
    stage: StageResult | None = None,
    operator: str | None = None,
    reason: str | None = None,
) -> Notice:
    """A notice with the figures the trader needs to act on it; its id (case and ``suffix``) is stable across retries."""
    snapshot = record.snapshot
    figures = snapshot.figures if snapshot else None
    return Notice(
        notice_id=f"{record.case_id}:{suffix}",
        kind=kind,
        case_id=record.case_id,
        account_id=record.account_id,
        state=record.state,
        occurred_at=workflow.now(),
        message=message,
        deadline=record.deadline,
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


# --- the words: notices and the timeline -----------------------------------------


def call_message(record: CaseRecord) -> str:
    """The margin call itself, as the trader reads it in the opened and reminder notices."""
    currency = record.snapshot.currency if record.snapshot else ""
    when = record.deadline.isoformat() if record.deadline else "now"
    return (
        f"Margin call on account {record.account_id}: deposit at least {deposit_needed(record.snapshot)} "
        f"{currency} by {when} or positions will be liquidated in stages."
    )


def opened_line(snapshot: MarginSnapshot) -> str:
    figures = snapshot.figures
    return f"opened: equity {money(figures.equity)}, maintenance {money(figures.maintenance_margin)}"


def escalation_line(seen: RiskEscalation) -> str:
    return (
        f"risk monitor saw equity {money(seen.equity)} against maintenance "
        f"{money(seen.maintenance_margin)}; re-reading the ledger"
    )


def deposit_line(deposit: Deposit) -> str:
    return f"deposit {deposit.deposit_id} of {deposit.amount} {deposit.currency} reported"


def describe_fills(fills: Sequence[Fill]) -> str:
    return ", ".join(
        f"{'sold' if f.side == 'sell' else 'bought back'} {f.quantity.normalize()} {f.instrument} "
        f"at {money(f.fill_price)}"
        for f in fills
    )


def stage_summary(stage: int, plan: LiquidationPlan) -> str:
    """The stage activity's summary in the Web UI."""
    return f"Liquidation stage {stage}: " + ", ".join(
        f"{o.side} {o.quantity} {o.instrument}" for o in plan.orders
    )


def stage_line(result: StageResult) -> str:
    sold = describe_fills(result.fills)
    return f"stage {result.stage} {sold or 'sold nothing'}, fee {money(result.fee)} to the insurance fund"


def stage_message(result: StageResult) -> str:
    return f"Liquidation stage {result.stage}: {describe_fills(result.fills)}; fee {money(result.fee)}."


def sale_line(sale: CollateralSale) -> str:
    return (
        f"sold {sale.amount.normalize()} {sale.asset} collateral at {money(sale.price)}: "
        f"proceeds {money(sale.proceeds)}, fee {money(sale.fee)} to the insurance fund"
    )


def bankrupt_line(settlement: BankruptcySettlement) -> str:
    return (
        f"bankrupt: deficit {money(settlement.deficit)}, insurance fund covered "
        f"{money(settlement.covered_by_insurance_fund)}, uncovered loss "
        f"{money(settlement.uncovered_loss)} recorded for auto-deleveraging"
    )


def staff_line(what: str, action: StaffAction) -> str:
    return f"{what} by {action.operator}: {action.reason}"


def staff_message(what: str, action: StaffAction) -> str:
    return f"{what} by support staff: {action.reason}"


def waiver_line(waiver: Waiver) -> str:
    scope = f"until {waiver.until.isoformat()}" if waiver.until else "until the account recovers"
    return f"case waived without liquidation; holds {scope}"


def waive_requested_line(pending: PendingWaiver, above: Decimal) -> str:
    shortfall = "unknown" if pending.shortfall is None else money(pending.shortfall)
    return (
        f"waive requested: shortfall {shortfall} is above {money(above)}, so it takes effect only if "
        f"a second operator approves it by {pending.expires_at.isoformat()}; the case runs on meanwhile"
    )


def waive_approved_line(waiver: Waiver) -> str:
    return f"waive by {waiver.operator} approved; {waiver_line(waiver)}"


def waive_lapsed_line(pending: PendingWaiver, why: str) -> str:
    return f"waive requested by {pending.operator} lapsed without approval: {why}"


def closed_message(state: CaseState, why: str) -> str:
    return f"Margin call closed: {state.value} ({why})."


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
