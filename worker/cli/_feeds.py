"""``margin-call feed marks|trades|movements|withdrawals|reference|reconcile FILE``: load a feed from a file.

The file is JSON (a list of records, or one record) or JSON lines (one record a
line; blank lines skipped); ``-`` reads stdin. ``--as-of TIME|now`` dates
marks that carry no ``as_of`` (a mark typed by hand means "now"). Every record is checked before
anything connects: the first bad one is told in one line on stderr naming the
record and the field (``record 3 (t-17): price: must be positive``), exit 2,
nothing written. A file that passes is sent to the ledger through
``LedgerFeeds`` in batches; the answer (how many applied, duplicate, ignored,
refused, and each refusal) is printed, and a record the ledger refused (an
unknown account, a conflict, a guard) ends the command with exit 2 too, after
the rest were applied.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from worker.cli._output import emit
from worker.cli._resources import ledger_pool
from worker.config import Settings
from workflows.contract import AccountView, AssetPrice, FeedAnswer, Mark, Movement, Trade, Withdrawal
from workflows.contract._feeds import MAX_BATCH, ReferenceRecord
from workflows.domain.validation import describe_validation_error

FEEDS = ("marks", "trades", "movements", "withdrawals", "reference", "reconcile")


class BadFeedFile(ValueError):
    """The file, or a record in it, is not what the feed takes; the message names the record and field."""


def read_records(path: str) -> list[dict[str, Any]]:
    """The file's records: a JSON list or object, or JSON lines."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BadFeedFile(
            f"FILE: cannot read {path}: {getattr(error, 'strerror', None) or 'not UTF-8 text'}"
        ) from None
    stripped = text.strip()
    try:
        document = json.loads(stripped) if stripped else []
        records = document if isinstance(document, list) else [document]
    except json.JSONDecodeError:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise BadFeedFile(f"line {number}: not valid JSON") from None
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise BadFeedFile(f"record {index}: must be a JSON object")
    return records


def _mark_or_price(record: dict[str, Any]) -> BaseModel:
    return (AssetPrice if "asset" in record else Mark).model_validate(record)


_REFERENCE = TypeAdapter[BaseModel](ReferenceRecord)

CHECKS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "marks": _mark_or_price,
    "trades": Trade.model_validate,
    "movements": Movement.model_validate,
    "withdrawals": Withdrawal.model_validate,
    "reference": _REFERENCE.validate_python,
    "reconcile": AccountView.model_validate,
}


def check(feed: str, records: Sequence[dict[str, Any]]) -> None:
    """Refuse the file at its first bad record, naming it (index and its id where it has one) and the field."""
    for index, record in enumerate(records):
        try:
            CHECKS[feed](record)
        except ValidationError as error:
            name = next(iter(record.values()), None) if feed != "reference" else record.get("kind")
            label = (
                f"record {index} ({name})"
                if isinstance(name, str) and len(name) <= 128
                else f"record {index}"
            )
            raise BadFeedFile(f"{label}: {describe_validation_error(error)}") from None


def _answer_text(answer: FeedAnswer) -> str:
    lines = [
        f"applied {answer.applied}, duplicate {answer.duplicate},"
        f" ignored {answer.ignored}, refused {answer.refused}"
    ]
    lines += [f"record {r.index} ({r.key}): {r.status.value}: {r.detail}" for r in answer.records if r.detail]
    return "\n".join(lines)


def stamped(records: list[dict[str, Any]], as_of: datetime) -> list[dict[str, Any]]:
    """Records without an ``as_of`` given ``as_of``; those with one keep theirs."""
    return [record if "as_of" in record else {**record, "as_of": as_of.isoformat()} for record in records]


async def feed(
    settings: Settings,
    kind: str,
    path: str,
    operator: str | None,
    as_json: bool,
    as_of: datetime | str | None = None,
) -> int:
    """Load the file's records into the ledger; ``as_of`` (marks only) dates those that give no time."""
    from activities.ledger import LedgerFeeds

    if as_of is not None and kind != "marks":
        raise BadFeedFile("--as-of: only marks carry a time")
    records = read_records(path)
    check(kind, stamped(records, datetime.now(UTC)) if as_of is not None else records)
    if kind == "reference" and not operator:
        raise BadFeedFile("--operator: required for reference data (the audit names who changed it)")
    async with ledger_pool(settings) as pool:
        if as_of is not None:
            # "now" is the moment the marks go out, not the moment the command started: a mark
            # fed meanwhile by another feed is newer only if it really came later.
            records = stamped(records, datetime.now(UTC) if isinstance(as_of, str) else as_of)
        feeds = LedgerFeeds(pool, settings.policies)
        if kind == "reconcile":
            results = [await feeds.reconcile(view) for view in records]
            emit(
                [r.model_dump(mode="json") for r in results],
                as_json,
                "\n".join(
                    f"{r.account_id}: "
                    + (
                        "agrees"
                        if r.agrees
                        else "; ".join(
                            f"{d.field} ledger {d.ledger} exchange {d.exchange}" for d in r.differences
                        )
                    )
                    for r in results
                ),
            )
            return 0 if all(r.agrees for r in results) else 2
        answers: list[FeedAnswer] = []
        for start in range(0, len(records), MAX_BATCH):
            chunk = records[start : start + MAX_BATCH]
            if kind == "reference":
                assert operator is not None
                answer = await feeds.reference(chunk, operator)
            else:
                answer = await getattr(feeds, kind)(chunk)
            answers.append(_offset(answer, start))
    total = FeedAnswer.of([r for a in answers for r in a.records])
    emit(total.model_dump(mode="json"), as_json, _answer_text(total))
    refusal = total.first_refusal()
    if refusal is not None:
        print(f"error: record {refusal.index} ({refusal.key}): {refusal.detail}", file=sys.stderr)
        return 2
    return 0


def _offset(answer: FeedAnswer, start: int) -> FeedAnswer:
    if not start:
        return answer
    return FeedAnswer.of([r.model_copy(update={"index": r.index + start}) for r in answer.records])
