"""``margin-call instruments halt|resume|list``: the operator's trading halts, from the command line.

The same ledger calls as the API's ``/v1/instruments`` routes: a halt stops
liquidations from selling the instrument and the risk monitor from calling
anyone on its price, until it is resumed. Each change is audited with the
operator and the reason; an unknown instrument or a blank reason is refused
(exit 2) naming the field, with nothing written.
"""

from __future__ import annotations

from activities.ledger.halts import InstrumentState, halt_instrument, list_instruments, resume_instrument
from worker.cli._output import emit
from worker.cli._resources import ledger_pool
from worker.config import Settings
from workflows.contract import StaffAction


def _line(state: InstrumentState) -> str:
    mark = f"mark {state.mark_price} as of {state.mark_as_of.isoformat()}" if state.mark_as_of else "no mark"
    if not state.halted:
        return f"{state.instrument}: trading, {mark}"
    since = state.halted_at.isoformat() if state.halted_at else "?"
    return f"{state.instrument}: HALTED since {since} by {state.halted_by}: {state.halt_reason}; {mark}"


async def change(settings: Settings, instrument: str, halt: bool, action: StaffAction, as_json: bool) -> int:
    """Halt or resume ``instrument``; says whether anything changed."""
    change_it = halt_instrument if halt else resume_instrument
    async with ledger_pool(settings) as pool, pool.acquire() as conn:
        changed = await change_it(conn, instrument, action.operator, action.reason)
        [state] = [s for s in await list_instruments(conn) if s.instrument == instrument]
    verb = "halted" if halt else "resumed"
    text = (
        _line(state)
        if changed
        else f"{instrument} was already {'halted' if halt else 'trading'}: nothing changed"
    )
    if changed:
        text = f"{verb}: {text}"
    emit({"changed": changed, "instrument": state.model_dump(mode="json")}, as_json, text)
    return 0


async def listing(settings: Settings, halted_only: bool, as_json: bool) -> int:
    async with ledger_pool(settings) as pool, pool.acquire() as conn:
        states = await list_instruments(conn, halted_only=halted_only)
    text = "\n".join(_line(s) for s in states) or (
        "no instrument is halted" if halted_only else "no instruments"
    )
    emit([s.model_dump(mode="json") for s in states], as_json, text)
    return 0
