"""Bodies of the HTTP API that are not the case contract's, shared by its routes and its Python callers.

They live apart from ``worker.api`` (which imports the ledger) so that a caller
of the API, such as the exchange side in ``worker.exchange``, can speak them
without importing anything of ``activities``.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, model_validator

from workflows.contract._feeds import Asset
from workflows.domain.message import FreeText, Identifier, Message
from workflows.domain.money import DecimalStr, Figure, money_amount, places_if_known


class InsuranceContribution(Message):
    """Money the exchange pays into the insurance fund, once per ``contribution_id``."""

    contribution_id: Identifier
    asset: Asset
    amount: DecimalStr
    operator: FreeText

    @model_validator(mode="after")
    def _money(self) -> InsuranceContribution:
        money_amount(self.amount, self.asset, places=places_if_known(self.asset))
        return self


class InsuranceFund(BaseModel):
    asset: str
    balance: Figure


class ContributionBooked(InsuranceFund):
    """``booked`` is false when this contribution had been booked before (nothing booked again)."""

    contribution_id: str
    amount: Figure
    booked: bool


class InstrumentView(BaseModel):
    """An instrument as ``GET /v1/instruments`` shows it, as far as a caller needs it (more may be sent)."""

    model_config = ConfigDict(extra="ignore")

    instrument: str
    halted: bool
    mark_price: DecimalStr | None
    mark_as_of: datetime | None
