"""The auto-deleveraging ranking: recorded for a loss beyond the insurance fund, in the formula's order.

Each test lists an instrument of its own (marked at 1,000, one tier at 1 %),
so that the opposite side is exactly the accounts it seeds; the insurance fund
is shared with the other tests, so a test sizes its bankruptcy from the fund's
balance and gives the fund back what it took.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal, localcontext

from activities.ledger import case_statement
from activities.ledger import reference as exchange
from tests.helpers import CaseStack, balance, fast_policy
from worker.market import SETTLEMENT, Trader, onboard, tiers
from worker.statement import render_html, render_text
from workflows.client import MarginCallClient
from workflows.contract import CaseState

D = Decimal
MARK = D("1000")
FUND = "insurance_fund:USDT"


async def listed(stack: CaseStack) -> str:
    instrument = f"ADL{uuid.uuid4().hex[:8].upper()}USDT"
    async with stack.pool.acquire() as conn:
        await exchange.add_instrument(conn, instrument, SETTLEMENT, tiers(("0", "0.01", "0.02")), MARK)
    return instrument


async def trader(
    stack: CaseStack, name: str, collateral: str, instrument: str, quantity: str, entry: str
) -> str:
    account = stack.account(name)
    await onboard(stack.pool, Trader(account, D(collateral), {instrument: (D(quantity), D(entry))}))
    return account


def score(quantity: str, entry: str, collateral: str) -> Decimal:
    """Binance's ADL score by hand: (PnL / |q x entry|) x (|q x mark| / (collateral + PnL))."""
    with localcontext() as ctx:
        ctx.prec = 60
        q, e, c = D(quantity), D(entry), D(collateral)
        pnl = q * (MARK - e)
        return (pnl / (abs(q) * e)) * (abs(q) * MARK / (c + pnl))


async def test_a_loss_beyond_the_fund_ranks_the_opposite_side_by_profit_and_leverage(
    stack: CaseStack,
) -> None:
    instrument = await listed(stack)
    # The shorts on the other side, and two who are not ranked: a short in loss, a long (the same side).
    shorts = {
        "a": ("300", "-2", "1100"),  # PnL 200, ratio 0.0909, leverage 4      -> 0.3636
        "b": ("2000", "-1", "1500"),  # PnL 500, ratio 0.3333, leverage 0.4   -> 0.1333
        "c": ("1000", "-10", "1020"),  # PnL 200, ratio 0.0196, leverage 8.33 -> 0.1634
    }
    accounts = {n: await trader(stack, f"adl-{n}", c, instrument, q, e) for n, (c, q, e) in shorts.items()}
    await trader(stack, "adl-losing-short", "1000", instrument, "-1", "900")
    await trader(stack, "adl-long", "1000", instrument, "1", "800")
    # Long 1 from far above the mark with 100 of collateral: sold at 999.5, the deficit is the fund + 500.
    fund = await balance(stack.pool, FUND)
    entry = fund + D("1599.5")
    bankrupt = await trader(stack, "adl-bankrupt", "100", instrument, "1", str(entry))
    api = MarginCallClient(stack.client)
    try:
        handle = await api.open_case(bankrupt, "call-1", fast_policy(deadline=timedelta(seconds=60)))
        outcome = await asyncio.wait_for(handle.result(), 60)
    finally:
        async with stack.pool.acquire() as conn:  # what this test took from the fund, back
            await exchange.fund_insurance(conn, "USDT", fund, f"refill:{bankrupt}")
    assert outcome.state == CaseState.BANKRUPT
    assert outcome.status.uncovered_loss == D("500") and outcome.status.insurance_fund_used == fund

    statement = await case_statement(stack.pool, bankrupt)
    settled = statement.settlement
    assert settled is not None and settled.insurance_fund_before == fund  # the balance it covered from
    assert (settled.deficit, settled.covered_by_insurance_fund) == (fund + 500, fund)
    ranking = statement.adl
    assert ranking is not None and ranking.uncovered_loss == D("500") and ranking.currency == "USDT"
    # Highest score first: neither PnL alone (b first), nor leverage alone (c first) would give this order.
    assert [(e.rank, e.account_id) for e in ranking.entries] == [
        (1, accounts["a"]),
        (2, accounts["c"]),
        (3, accounts["b"]),
    ]
    for entry_ in ranking.entries:
        name = next(n for n, a in accounts.items() if a == entry_.account_id)
        collateral, quantity, price = shorts[name]
        assert entry_.instrument == instrument and entry_.side == "short"
        assert (entry_.quantity, entry_.entry_price, entry_.mark_price) == (D(quantity), D(price), MARK)
        assert entry_.equity == D(collateral) + entry_.unrealised_pnl
        assert entry_.score == score(quantity, price, collateral)
    page, text = render_html(statement), render_text(statement)
    for place, name in enumerate("acb"):
        assert f"{place + 1}. {instrument} {accounts[name]} short" in text
    assert ">Auto-deleveraging ranking<" in page and page.index(accounts["a"]) < page.index(
        accounts["c"]
    ) < page.index(accounts["b"])
    async with stack.pool.acquire() as conn:
        rows = await conn.fetchval(
            "SELECT count(*) FROM adl_ranking_entries WHERE case_id = $1", outcome.case_id
        )
    assert rows == 3


async def test_a_loss_the_fund_covers_ranks_nobody(stack: CaseStack) -> None:
    instrument = await listed(stack)
    await trader(
        stack, "adl-profit-short", "300", instrument, "-2", "1100"
    )  # someone to rank, were it needed
    bankrupt = await trader(stack, "adl-covered", "100", instrument, "1", "1200")  # deficit 100.5
    async with stack.pool.acquire() as conn:
        await exchange.fund_insurance(conn, "USDT", D("1000"), f"top-up:{bankrupt}")
    api = MarginCallClient(stack.client)
    handle = await api.open_case(bankrupt, "call-1", fast_policy(deadline=timedelta(seconds=60)))
    outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.state == CaseState.BANKRUPT
    assert outcome.status.insurance_fund_used == D("100.5") and outcome.status.uncovered_loss == 0
    async with stack.pool.acquire() as conn:
        ranked = await conn.fetchval(
            "SELECT (SELECT count(*) FROM adl_rankings WHERE case_id = $1)"
            " + (SELECT count(*) FROM adl_ranking_entries WHERE case_id = $1)",
            outcome.case_id,
        )
    assert ranked == 0
    assert (await case_statement(stack.pool, bankrupt)).adl is None
