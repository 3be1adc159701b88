"""Errors the ledger raises, and which of them retrying cannot fix.

Our exception hierarchy::

    LedgerError                   something about the request or the books is wrong
    ├── UnknownAccount            no such trader account
    ├── CurrencyMismatch          the amount is not in the account's settlement currency
    ├── InvalidAmount             NaN, infinite, non-positive, too precise or too large
    ├── IdempotencyConflict       the same id was used before with another body
    ├── UnknownCase               no case record with that id
    ├── PositionsStillOpen        bankruptcy settlement asked for before close-out
    ├── AccountAboveMaintenance   a stage asked to sell from a healthy account
    ├── StaleMarks                a stage would sell on a mark older than the case's policy allows
    ├── InstrumentHalted          a stage would sell an instrument an operator halted
    ├── PolicyRefused             a case's policy is not the operator's, or overrides it out of bounds
    └── InvalidReferenceData      a listing, mark, account or position the books cannot hold

Every ``LedgerError`` is a caller's or a bug's doing, so the activities turn it
into a non-retryable ``ApplicationError`` whose type is the class name; database
and network errors are left alone so that Temporal retries them.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from temporalio.exceptions import ApplicationError


class LedgerError(Exception):
    """Retrying cannot help: the request or the books are inconsistent."""


class UnknownAccount(LedgerError):
    pass


class CurrencyMismatch(LedgerError):
    pass


class InvalidAmount(LedgerError):
    pass


class IdempotencyConflict(LedgerError):
    pass


class UnknownCase(LedgerError):
    pass


class PositionsStillOpen(LedgerError):
    pass


class AccountAboveMaintenance(LedgerError):
    """The ledger shows the account healthy: a stage must not sell anything."""


class StaleMarks(LedgerError):
    """A stage refused: a mark the account is valued or sold at is older than the policy's max_mark_age.

    Nothing was sold; the case waits for fresh marks (retrying the same stage
    at once could not help, so it is non-retryable like every ledger error).
    """


class InstrumentHalted(LedgerError):
    """A stage refused: an order is for an instrument an operator halted. Nothing was sold."""


class PolicyRefused(LedgerError):
    """The case names a policy the operator's book does not have, or overrides it beyond its bounds."""


class InvalidReferenceData(LedgerError):
    """An asset, instrument, mark, account or position refused before it reaches the books; names the field."""


P = ParamSpec("P")
R = TypeVar("R")


def non_retryable(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Report a ``LedgerError`` to Temporal as a non-retryable failure of the same name."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except LedgerError as error:
            raise ApplicationError(str(error), type=type(error).__name__, non_retryable=True) from error

    return wrapper
