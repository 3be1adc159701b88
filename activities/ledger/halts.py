"""Trading halts and mark freshness: when the ledger will not sell, and the operator's halt and resume.

An exchange halts an instrument when it no longer stands behind its price (an
outage, a wick under investigation). While halted, no liquidation stage sells
it; other instruments of the same account may still be sold. Independently, a
stage never fills on a mark older than the case policy's ``max_mark_age``.
Both refusals are checked inside the stage's own transaction, on the very
snapshot it fills at (``refuse_untradable``), so no mark or halt written
meanwhile can slip between the check and the sale. Halts and resumes are
audited in ``instrument_halts`` (who, why, when) beside the instrument's
current state.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

import asyncpg
from pydantic import BaseModel

from activities.exceptions import InstrumentHalted, InvalidReferenceData, StaleMarks
from workflows.domain.portfolio import MarginSnapshot

_LONGEST_TEXT = 500


class InstrumentState(BaseModel):
    """An instrument as the halt list shows it."""

    instrument: str
    halted: bool
    halt_reason: str | None
    halted_by: str | None
    halted_at: datetime | None
    mark_price: str | None
    mark_as_of: datetime | None


def _text(field: str, value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= _LONGEST_TEXT:
        raise InvalidReferenceData(f"{field}: must be 1 to {_LONGEST_TEXT} characters, got {value!r}")
    return value.strip()


async def _change(conn: asyncpg.Connection, instrument: str, halt: bool, operator: str, reason: str) -> bool:
    """Set the halt flag (audited); False when it was already in that state (nothing written)."""
    operator, reason = _text("operator", operator), _text("reason", reason)
    _text("instrument", instrument)
    async with conn.transaction():
        current = await conn.fetchval(
            "SELECT halted FROM instruments WHERE instrument = $1 FOR UPDATE", instrument
        )
        if current is None:
            raise InvalidReferenceData(f"instrument: {instrument!r} is not listed")
        if current == halt:
            return False
        await conn.execute(
            "UPDATE instruments SET halted = $2, halt_reason = CASE WHEN $2 THEN $3 END,"
            " halted_by = CASE WHEN $2 THEN $4 END, halted_at = CASE WHEN $2 THEN now() END"
            " WHERE instrument = $1",
            instrument,
            halt,
            reason,
            operator,
        )
        await conn.execute(
            "INSERT INTO instrument_halts (instrument, action, operator, reason) VALUES ($1, $2, $3, $4)",
            instrument,
            "halt" if halt else "resume",
            operator,
            reason,
        )
        return True


async def halt_instrument(conn: asyncpg.Connection, instrument: str, operator: str, reason: str) -> bool:
    """Halt ``instrument``: no stage sells it, no breach is called on it. False if it was halted already."""
    return await _change(conn, instrument, True, operator, reason)


async def resume_instrument(conn: asyncpg.Connection, instrument: str, operator: str, reason: str) -> bool:
    """Let ``instrument`` trade again. False if it was not halted."""
    return await _change(conn, instrument, False, operator, reason)


async def list_instruments(conn: asyncpg.Connection, halted_only: bool = False) -> list[InstrumentState]:
    """Every listed instrument (or only the halted ones) with its halt and its mark's age."""
    rows = await conn.fetch(
        "SELECT i.instrument, i.halted, i.halt_reason, i.halted_by, i.halted_at,"
        " m.price::text AS mark_price, m.as_of AS mark_as_of"
        " FROM instruments i LEFT JOIN mark_prices m USING (instrument)"
        " WHERE NOT $1 OR i.halted ORDER BY i.instrument",
        halted_only,
    )
    return [InstrumentState.model_validate(dict(r)) for r in rows]


async def refuse_untradable(
    conn: asyncpg.Connection, snapshot: MarginSnapshot, selling: Collection[str], max_age: timedelta
) -> None:
    """Refuse a stage that would sell a halted instrument, or act on a mark older than ``max_age``.

    ``snapshot`` is the read the stage checks its breach on and fills at; its
    marks are the ones that matter. Every open position's mark counts for the
    age (they all decide the breach), except a halted instrument's, which is
    not sold. A plan selling nothing while halted positions remain is refused
    too: it would only book an empty stage. Ages are measured on the ledger's
    clock at this moment.
    """
    halted = [p.instrument for p in snapshot.halted_positions if p.instrument in selling or not selling]
    if halted:
        raise InstrumentHalted(f"instrument halted, nothing sold: {', '.join(halted)}")
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    stale = [
        f"{p.instrument} (as of {p.mark_as_of.isoformat()}, {(now - p.mark_as_of).total_seconds():.0f} s old)"
        for p in snapshot.portfolio.positions
        if p.quantity != 0 and not p.halted and p.mark_as_of is not None and now - p.mark_as_of > max_age
    ]
    if stale:
        raise StaleMarks(f"marks older than {max_age.total_seconds():g} s, nothing sold: {', '.join(stale)}")
