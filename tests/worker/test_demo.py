"""``make demo`` as a reader runs it, and what it leaves on record: the day's calls report and a statement per outcome.

The demo is the project's main job and nothing else runs it end to end, so this
test does, on free ports and a scratch directory over a fresh ledger database,
and then reads back the files it wrote, as the compliance desk and an auditor
would: the day's calls report (FINRA Rule 4220's record) must list every case
once, its outcome agreeing with how the call was met; each statement must be of
the outcome it is filed under and recompute from the inputs it lists.
"""

from __future__ import annotations

import csv
from decimal import ROUND_FLOOR, localcontext
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.workflows.test_statement import check_reading, check_settlement, check_stage_books, unit
from worker.call_report import COLUMNS
from worker.config import load_settings
from worker.demo.records import MET_BY
from worker.demo.run import run_demo
from workflows.contract import CaseStatement, StageLine
from workflows.domain import margin


def check_venue_stage(stage: StageLine) -> None:
    """A stage the venue filled: its prices are the venue's, everything else follows from them and the account."""
    before = stage.before
    assert before is not None
    check_reading(before)
    check_reading(stage.after)
    assert before.figures.equity < before.figures.maintenance_margin  # sold only from an account in breach
    positions = {p.instrument: p for p in before.portfolio.positions}
    with localcontext() as ctx:
        ctx.prec = margin.PRECISION
        for fill in stage.fills:
            position = positions[fill.instrument]
            sign = 1 if position.quantity > 0 else -1
            assert fill.side == ("sell" if sign > 0 else "buy")
            assert 0 < fill.quantity <= abs(position.quantity)
            # Never worse than the mark by more than the policy's slippage.
            assert sign * (fill.fill_price - position.mark_price * (1 - sign * stage.plan.slippage)) >= 0
            assert fill.notional == fill.quantity * fill.fill_price
            gain = fill.quantity * sign * (fill.fill_price - position.entry_price)
            assert fill.realised_pnl == gain.quantize(unit(before), rounding=ROUND_FLOOR)
    check_stage_books(before, stage)


def check_demo_statement(statement: CaseStatement) -> None:
    assert statement.not_recorded == []
    assert statement.opening.recorded and statement.opening.account is not None
    check_reading(statement.opening.account)
    for stage in statement.stages:
        check_venue_stage(stage)
    if statement.settlement is not None:
        check_settlement(statement.settlement)
    assert statement.closing is not None and statement.closing.account is not None
    assert statement.closing.state == statement.state
    check_reading(statement.closing.account)
    assert statement.notices and all(n.status == "delivered" for n in statement.notices)


async def test_the_demo_leaves_its_days_report_and_a_statement_of_each_outcome(
    ledger_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings({"MARGIN_CALL_DATA_DIR": str(tmp_path), "MARGIN_CALL_DATABASE_URL": ledger_url})
    code = await run_demo(
        settings,
        temporal_port=free_port(),
        receiver_port=free_port(),
        api_port=free_port(),
        venue_port=free_port(),
        temporal_ui=False,
    )
    out = capsys.readouterr().out
    assert code == 0, out[-4000:]
    assert "Ledger check: PASS" in out and "RECORDS DISAGREE" not in out
    records = tmp_path / "demo" / "records"

    # The day's report, as the broker files it: one call per case, met as the outcome says.
    (report,) = records.glob("margin-calls-*.csv")
    with report.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        calls = list(reader)
    accounts = [c["account_id"] for c in calls]
    assert len(accounts) == len(set(accounts)) >= 5
    for call in calls:
        assert call["met_by"] in MET_BY[call["outcome"]], call
        assert call["met_at"] and call["called_at"] <= call["met_at"]
    assert {c["outcome"] for c in calls} == set(MET_BY)
    # The console is where the demo points a reader next, with each outcome's case.
    assert "/console/" in out
    for outcome in MET_BY:
        assert "/console/cases/" in out and outcome in out

    # One statement of each outcome, each of that outcome, each recomputing from its own inputs.
    for outcome in MET_BY:
        (page,) = (records / "statements").glob(f"{outcome}-*.html")
        account = page.stem.removeprefix(f"{outcome}-")
        assert account in accounts
        assert "<html" in page.read_text(encoding="utf-8").lower()
        statement = CaseStatement.model_validate_json(page.with_suffix(".json").read_text(encoding="utf-8"))
        assert (statement.account_id, statement.state.value) == (account, outcome)
        check_demo_statement(statement)
        call = next(c for c in calls if c["account_id"] == account)
        assert call["case_id"] == statement.case_id and call["outcome"] == outcome
