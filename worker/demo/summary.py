"""The operator's audit at the end of the demo: what the cases did, read back from where it is recorded.

This is the operator's side, not the exchange's: it owns the stack, so it reads
the ledger (outcomes, stages, fees, the insurance fund, the venue orders it
booked, the balance check), the webhook receiver (the notices delivered) and the
venue simulator (the orders it matched) directly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from activities.ledger import cases_summary, venue_bookings
from activities.ledger.audit import check_ledger
from worker.exchange.listings import SETTLEMENT
from worker.stack import Stack

ORDER_STATUS = {
    "filled": "filled",
    "partially_filled": "partially filled",
    "cancelled": "with nothing within the limit",
    "rejected": "rejected",
}
OUTCOMES = frozenset({"CURED", "RESTORED", "CLOSED_OUT", "BANKRUPT", "WAIVED"})


async def audit(stack: Stack, say: Callable[[str], None]) -> bool:
    """Print the summary; True when every outcome kind showed, the venue filled stages and the ledger balances."""
    summary = await cases_summary(stack.pool, SETTLEMENT)
    venue = await venue_bookings(stack.pool)
    async with stack.pool.acquire() as conn:
        check = await check_ledger(conn)
    say("\nCases by outcome")
    for outcome in summary.outcomes:
        say(f"  {outcome.state:<12} {outcome.cases:>3}   {', '.join(outcome.accounts)}")
    notices = Counter(n["kind"] for n in stack.receiver.notices.values()) if stack.receiver else Counter()
    say(f"\nNotices delivered (signed, verified by the receiver): {sum(notices.values())}")
    for kind, n in sorted(notices.items()):
        say(f"  {kind:<32} {n:>3}")

    say(f"\nLiquidation: {summary.stages} stages, {summary.sold_notional:,.2f} USDT sold")
    matched = Counter(o.status.value for o in stack.venue.orders.values()) if stack.venue else Counter()
    say(
        f"  orders the venue simulator matched {sum(matched.values()):>5}: "
        + ", ".join(f"{n} {ORDER_STATUS.get(status, status)}" for status, n in sorted(matched.items()))
        + f" (the ledger booked {sum(venue.orders.values())})"
    )
    say(f"  stages filled by the simulator     {venue.stages_at_venue:>5}")
    say(f"  stages that filled nothing         {venue.empty_stages:>5}")
    say(f"  stages taken over by the backstop  {venue.backstop_stages:>5}")
    say(f"  fees to the insurance fund        {summary.liquidation_fees:>12,.2f} USDT")
    say(f"  insurance fund used (bankruptcy)  {summary.covered_by_insurance_fund:>12,.2f} USDT")
    say(f"  uncovered loss (for ADL)          {summary.uncovered_loss:>12,.2f} USDT")
    say(f"  insurance fund balance now        {summary.insurance_fund:>12,.2f} USDT")

    totals = ", ".join(f"{asset} {total}" for asset, total in sorted(check.totals_by_asset.items()))
    verdict = "PASS" if check.balanced else "FAIL"
    say(
        f"\nLedger check: {verdict}: sum over all ledger accounts = {totals}; "
        f"{len(check.drifted_accounts)} balances drifted from their transfers"
    )
    ok = check.balanced
    if not summary.states >= OUTCOMES:
        say(f"missing outcomes: {', '.join(sorted(OUTCOMES - summary.states))}")
        ok = False
    if venue.stages_at_venue == 0:
        say("no stage was filled by the venue simulator")
        ok = False
    return ok
