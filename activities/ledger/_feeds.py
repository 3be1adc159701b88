"""``LedgerFeeds``: the in-process client of the feeds, for exchange services with database access.

One method per feed, each taking a batch of records (models or plain
mappings, as a JSON document decodes) and answering a ``FeedAnswer`` that says
of every record, in the order sent, whether it was applied, a duplicate,
ignored (a stale mark) or refused (with the field named). The HTTP routes and
``margin-call feed`` are thin layers over these methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from pydantic import TypeAdapter, ValidationError

from activities.ledger._batches import BatchTooLarge, each_in_savepoint, refused, validate
from activities.ledger._marks import apply_marks
from activities.ledger._movements import book_movement, book_withdrawal
from activities.ledger._reconcile import reconcile
from activities.ledger._reference_feed import Record, apply_reference, key_of
from activities.ledger._trades import book_trade
from workflows.contract._feeds import (
    MAX_BATCH,
    AccountRecord,
    AccountView,
    AssetPrice,
    FeedAnswer,
    Mark,
    Movement,
    Reconciliation,
    RecordResult,
    RecordStatus,
    ReferenceRecord,
    Trade,
    Withdrawal,
)
from workflows.domain.policies import PolicyBook
from workflows.domain.validation import describe_validation_error

Raw = Mapping[str, Any]


_REFERENCE = TypeAdapter[Record](ReferenceRecord)


class LedgerFeeds:
    """The feeds over one pool; every method is safe to repeat with the same records."""

    def __init__(self, pool: asyncpg.Pool, policies: PolicyBook | None = None) -> None:
        self.pool = pool
        # The operator's book: an account may name only a policy in it (None: names are not checked).
        self.policies = policies

    async def marks(self, records: Sequence[Mark | AssetPrice | Raw]) -> FeedAnswer:
        """Instrument marks ``{instrument, price, as_of}`` and asset prices ``{asset, price, as_of}``."""
        return FeedAnswer.of(await apply_marks(self.pool, records))

    async def trades(self, records: Sequence[Trade | Raw]) -> FeedAnswer:
        valid, results = validate(Trade, records)
        results += await each_in_savepoint(self.pool, valid, lambda t: t.trade_id, book_trade)
        return FeedAnswer.of(results)

    async def movements(self, records: Sequence[Movement | Raw]) -> FeedAnswer:
        valid, results = validate(Movement, records)
        results += await each_in_savepoint(self.pool, valid, lambda m: m.movement_id, book_movement)
        return FeedAnswer.of(results)

    async def withdrawals(self, records: Sequence[Withdrawal | Raw]) -> FeedAnswer:
        valid, results = validate(Withdrawal, records)
        results += await each_in_savepoint(self.pool, valid, lambda w: w.withdrawal_id, book_withdrawal)
        return FeedAnswer.of(results)

    async def reference(self, records: Sequence[Record | Raw], operator: str) -> FeedAnswer:
        """Assets, instruments and accounts (``kind`` says which), audited as changed by ``operator``."""
        valid, results = validate_reference(records)
        if self.policies is not None:
            valid, unknown = _known_policies_only(valid, {p.name for p in self.policies.policies})
            results += unknown

        async def apply(conn: asyncpg.Connection, record: Record) -> RecordStatus:
            return await apply_reference(conn, record, operator)

        results += await each_in_savepoint(self.pool, valid, key_of, apply)
        return FeedAnswer.of(results)

    async def reconcile(self, view: AccountView | Raw) -> Reconciliation:
        """Every difference between the exchange's view of an account and the ledger's; writes nothing."""
        return await reconcile(self.pool, AccountView.model_validate(view))


def _known_policies_only(
    valid: list[tuple[int, Record]], known: set[str]
) -> tuple[list[tuple[int, Record]], list[RecordResult]]:
    """Accounts naming a policy outside the operator's book are refused: no case could be held to it."""
    kept: list[tuple[int, Record]] = []
    unknown: list[RecordResult] = []
    names = ", ".join(sorted(known))
    for index, record in valid:
        if (
            isinstance(record, AccountRecord)
            and record.policy_name is not None
            and record.policy_name not in known
        ):
            detail = f"policy_name: {record.policy_name!r} is not in the operator's book (known: {names})"
            unknown.append(refused(index, record.account_id, detail))
        else:
            kept.append((index, record))
    return kept, unknown


def validate_reference(
    records: Sequence[Record | Raw],
) -> tuple[list[tuple[int, Record]], list[RecordResult]]:
    """Each record as the kind its ``kind`` field names, or a refusal naming the field."""
    if len(records) > MAX_BATCH:
        raise BatchTooLarge(f"records: at most {MAX_BATCH} in one batch, got {len(records)}")
    valid: list[tuple[int, Record]] = []
    results: list[RecordResult] = []
    for index, record in enumerate(records):
        try:
            valid.append((index, _REFERENCE.validate_python(record)))
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
                detail = "kind: must be one of asset, instrument, account"
            else:
                detail = describe_validation_error(error)
            results.append(refused(index, None, detail))
    return valid, results
