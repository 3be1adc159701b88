"""Deposits: credit the ledger, then report the deposit to the account's open case."""

from __future__ import annotations

from fastapi import APIRouter
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError

from activities.exceptions import CurrencyMismatch, IdempotencyConflict, InvalidAmount, UnknownAccount
from activities.ledger import PostgresDeposits, settlement_currency
from worker.api._problems import ERRORS, case_busy, no_such_account
from worker.api._services import Services
from worker.serving import Refused, naming_a_field
from workflows.asking import not_ready
from workflows.client import DepositReport
from workflows.contract import Deposit


def deposit_routes(services: Services) -> APIRouter:
    router = APIRouter(tags=["deposits"], responses=ERRORS)
    cases, pool = services.cases, services.pool

    @router.post("/v1/deposits", dependencies=services.scopes.needs("deposits:write"))
    async def deposit(body: Deposit) -> DepositReport:
        """Credit the ledger (idempotent on deposit id), then report the deposit to the open case."""
        try:
            return await cases.report_deposit(PostgresDeposits(pool), body)
        # The ledger's words are for the operator's logs: they may name another
        # account or repeat the input, so the caller gets ours.
        except UnknownAccount:
            raise no_such_account() from None
        except IdempotencyConflict:
            raise Refused(409, "deposit_id: already used for another deposit") from None
        except CurrencyMismatch:
            settles = await settlement_currency(pool, body.account_id)
            raise Refused(422, f"currency: this account settles in {settles}") from None
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as error:
            if isinstance(error, RPCError) and not not_ready(error):
                raise
            # Credited already (the ledger first): the case has not heard yet. Reporting again is safe,
            # the ledger and the case count a deposit id once.
            raise case_busy(
                f"case: busy; deposit {body.deposit_id} is credited, report it again for the case's receipt"
            ) from None
        except InvalidAmount as error:
            # money_amount's words, the same the body's validators use ("amount: ...").
            raise Refused(422, naming_a_field(str(error), "amount")) from None

    return router
