"""How every feed handles a batch: each record validated alone, each applied in its own savepoint.

A record that fails validation, names something the ledger does not know,
conflicts with an earlier one or is refused by a guard is answered
``refused`` with the field named, and nothing of it is written; the records
around it are applied and answered for. The batch runs in one transaction (one
commit for the lot), each record inside a savepoint of its own, so a record
that fails half-way rolls back to where it started and only it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel, ValidationError

from activities.exceptions import LedgerError
from workflows.contract._feeds import MAX_BATCH, RecordResult, RecordStatus
from workflows.domain.validation import describe_validation_error

M = TypeVar("M", bound=BaseModel)


class BatchTooLarge(LedgerError):
    """More records than one batch may hold (``MAX_BATCH``)."""


def refused(index: int, key: str | None, detail: str) -> RecordResult:
    return RecordResult(index=index, key=key, status=RecordStatus.REFUSED, detail=detail)


def done(index: int, key: str | None, status: RecordStatus, detail: str | None = None) -> RecordResult:
    return RecordResult(index=index, key=key, status=status, detail=detail)


def validate(model: type[M], records: Sequence[Any]) -> tuple[list[tuple[int, M]], list[RecordResult]]:
    """The records that are valid ``model``s (with their index), and a refusal for each that is not."""
    if len(records) > MAX_BATCH:
        raise BatchTooLarge(f"records: at most {MAX_BATCH} in one batch, got {len(records)}")
    valid: list[tuple[int, M]] = []
    results: list[RecordResult] = []
    for index, record in enumerate(records):
        if isinstance(record, model):
            valid.append((index, record))
            continue
        try:
            valid.append((index, model.model_validate(record)))
        except ValidationError as error:
            name = record.get(_key_field(model)) if isinstance(record, Mapping) else None
            results.append(
                refused(index, name if isinstance(name, str) else None, describe_validation_error(error))
            )
    return valid, results


def _key_field(model: type[BaseModel]) -> str:
    """The first field of a record names it in the answer (``trade_id``, ``instrument``...)."""
    return next(iter(model.model_fields))


async def each_in_savepoint(
    pool: asyncpg.Pool,
    items: Iterable[tuple[int, M]],
    key: Callable[[M], str],
    apply: Callable[[asyncpg.Connection, M], Awaitable[RecordStatus]],
) -> list[RecordResult]:
    """Apply each record in its own savepoint of one transaction; a ``LedgerError`` refuses only it."""
    results: list[RecordResult] = []
    async with pool.acquire() as conn, conn.transaction():
        for index, item in items:
            try:
                async with conn.transaction():
                    status = await apply(conn, item)
            except LedgerError as error:
                results.append(refused(index, key(item), str(error)))
            else:
                results.append(done(index, key(item), status))
    return results
