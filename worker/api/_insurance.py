"""The insurance fund over HTTP (scope ``admin``): paying the exchange's own capital into it, its balance.

Liquidation fees add to the fund and bankruptcies draw on it, inside the
ledger; what the exchange itself pays in had no way in but a direct ledger
call. Paying in is the operator's act, so it takes ``admin`` and names the
operator (kept on the transfer), and it is keyed by a contribution id, so a
request retried after a timeout books once.
"""

from __future__ import annotations

from fastapi import APIRouter

from activities.exceptions import IdempotencyConflict, InvalidReferenceData
from activities.ledger.reference import fund_insurance, insurance_fund_balance
from worker.api._problems import ERRORS
from worker.api._services import Services
from worker.api_messages import ContributionBooked, InsuranceContribution, InsuranceFund
from worker.serving import Refused
from workflows.contract._feeds import Asset


def _refusal(error: InvalidReferenceData) -> Refused:
    # The ledger's words name the field ("asset: asset 'EUR' is not listed", "amount: ...").
    return Refused(422, str(error))


def insurance_routes(services: Services) -> APIRouter:
    router = APIRouter(tags=["insurance fund"], responses=ERRORS, dependencies=services.scopes.needs("admin"))
    pool = services.pool

    @router.post("/v1/insurance-fund/contributions")
    async def contribute(body: InsuranceContribution) -> ContributionBooked:
        """Pay the exchange's own money into the fund; the same contribution again books nothing."""
        async with pool.acquire() as conn:
            try:
                booked = await fund_insurance(
                    conn,
                    body.asset,
                    body.amount,
                    f"insurance_fund:{body.contribution_id}",
                    reference=f"paid in by {body.operator}",
                )
            except InvalidReferenceData as error:
                raise _refusal(error) from None
            except IdempotencyConflict:
                raise Refused(409, "contribution_id: already used for another contribution") from None
            balance = await insurance_fund_balance(conn, body.asset)
        return ContributionBooked(
            asset=body.asset,
            balance=balance,
            contribution_id=body.contribution_id,
            amount=body.amount,
            booked=booked,
        )

    @router.get("/v1/insurance-fund/{asset}")
    async def fund(asset: Asset) -> InsuranceFund:
        """The fund's balance in ``asset``: paid in, plus fees, less what bankruptcies drew."""
        async with pool.acquire() as conn:
            try:
                balance = await insurance_fund_balance(conn, asset)
            except InvalidReferenceData as error:
                raise Refused(404, str(error)) from None
        return InsuranceFund(asset=asset, balance=balance)

    return router
