"""Instrument halts over HTTP (scope ``admin``): halt, resume and list.

A halt is the exchange saying it no longer stands behind an instrument's
price: no liquidation stage sells it and the risk monitor calls no one on it
until it resumes. Halting a halted instrument (or resuming a trading one)
changes nothing and says so (``changed: false``); every change is audited in
the ledger with the operator and the reason.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from activities.exceptions import InvalidReferenceData
from activities.ledger.halts import InstrumentState, halt_instrument, list_instruments, resume_instrument
from worker.api._problems import ERRORS
from worker.api._services import Services
from worker.serving import Refused
from workflows.contract import StaffAction
from workflows.domain.message import Identifier


class HaltChange(BaseModel):
    """The instrument after the request, and whether the request changed it."""

    changed: bool
    instrument: InstrumentState


def instrument_routes(services: Services) -> APIRouter:
    router = APIRouter(tags=["instruments"], responses=ERRORS, dependencies=services.scopes.needs("admin"))
    pool = services.pool

    async def change(instrument: str, halt: bool, action: StaffAction) -> HaltChange:
        change_it = halt_instrument if halt else resume_instrument
        async with pool.acquire() as conn:
            try:
                changed = await change_it(conn, instrument, action.operator, action.reason)
            except InvalidReferenceData as error:
                status = 404 if "is not listed" in str(error) else 422
                raise Refused(status, str(error)) from None
            [state] = [s for s in await list_instruments(conn) if s.instrument == instrument]
        return HaltChange(changed=changed, instrument=state)

    @router.get("/v1/instruments")
    async def instruments(halted: bool = False) -> list[InstrumentState]:
        """Every listed instrument (``?halted=true``: only halted ones), with its halt and its mark's as_of."""
        async with pool.acquire() as conn:
            return await list_instruments(conn, halted_only=halted)

    @router.post("/v1/instruments/{instrument}/halt")
    async def halt(instrument: Identifier, body: StaffAction) -> HaltChange:
        """Stop liquidations from selling ``instrument`` and the monitor from calling on its price."""
        return await change(instrument, True, body)

    @router.post("/v1/instruments/{instrument}/resume")
    async def resume(instrument: Identifier, body: StaffAction) -> HaltChange:
        """Let ``instrument`` trade again: held cases resume on their next re-read."""
        return await change(instrument, False, body)

    return router
