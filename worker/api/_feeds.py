"""The feeds over HTTP: what an exchange's systems tell the ledger (``feed:write``), reference data (``admin``).

Each route takes ``{"records": [...]}`` and answers the ledger's ``FeedAnswer``
with 200 whatever became of each record: a record is validated on its own, so
one the ledger refuses is named in the answer (``records[i].detail`` names the
field) and the rest are applied. Only a body that is not a batch at all (not
an object with a list of records, too many records, too large) is refused as a
whole, in the API's one error shape. Reconciliation reads and answers the
differences; nothing is written.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from activities.exceptions import UnknownAccount
from activities.ledger import LedgerFeeds
from worker.api._problems import ERRORS, no_such_account
from worker.api._services import Services
from workflows.contract import AccountView, FeedAnswer, Reconciliation
from workflows.contract._feeds import MAX_BATCH
from workflows.domain.message import FreeText, Message


class Batch(Message):
    """Records as sent: each is validated by the ledger on its own, so a bad one is named, not the batch."""

    records: list[dict[str, Any]] = Field(max_length=MAX_BATCH)


class ReferenceBatch(Batch):
    operator: FreeText = Field(description="who sends the change, for the audit")


def feed_routes(services: Services) -> APIRouter:
    router = APIRouter(tags=["feeds"], responses=ERRORS)
    feeds = LedgerFeeds(services.pool, services.policies)
    write = services.scopes.needs("feed:write")

    @router.post("/v1/feeds/marks", dependencies=write)
    async def marks(body: Batch) -> FeedAnswer:
        """Instrument marks ``{instrument, price, as_of}`` and asset prices ``{asset, price, as_of}``; only forward."""
        return await feeds.marks(body.records)

    @router.post("/v1/feeds/trades", dependencies=write)
    async def trades(body: Batch) -> FeedAnswer:
        """Fills ``{trade_id, account_id, instrument, side, quantity, price, fee}``, once per trade id."""
        return await feeds.trades(body.records)

    @router.post("/v1/feeds/movements", dependencies=write)
    async def movements(body: Batch) -> FeedAnswer:
        """Funding and collateral arriving ``{movement_id, account_id, kind, asset, amount}``."""
        return await feeds.movements(body.records)

    @router.post("/v1/feeds/withdrawals", dependencies=write)
    async def withdrawals(body: Batch) -> FeedAnswer:
        """Withdrawals, refused during an open case or when they would leave equity below initial margin."""
        return await feeds.withdrawals(body.records)

    @router.post("/v1/feeds/reconciliation", dependencies=write)
    async def reconciliation(body: AccountView) -> Reconciliation:
        """The exchange's view of one account against the ledger's: every difference, nothing written."""
        try:
            return await feeds.reconcile(body)
        except UnknownAccount:
            raise no_such_account() from None

    @router.post("/v1/reference", dependencies=services.scopes.needs("admin"))
    async def reference(body: ReferenceBatch) -> FeedAnswer:
        """Assets, instruments, accounts (``kind`` says which); each change audited with the operator."""
        return await feeds.reference(body.records, operator=body.operator)

    return router
