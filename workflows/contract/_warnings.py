"""Warnings before the call: what the risk monitor asks the ledger, what it records, what the trader reads.

A warning is no case: it opens nothing, moves no money and waits for no
answer. It tells the trader, once per level, that equity has fallen below one
of the operator's warning levels (a multiple of maintenance) and how far it may
still fall before a margin call opens, so that the call is never the first
word. The ledger keeps each warning (for statements) and its notice (for the
outbox) in one transaction.
"""

from __future__ import annotations

import decimal
from datetime import datetime, timedelta
from decimal import Decimal

from pydantic import Field

from workflows.contract._notices import Notice, NoticeKind
from workflows.domain.message import Message
from workflows.domain.money import DecimalStr, Figure, display_money
from workflows.domain.policies import DEFAULT_MAX_MARK_AGE


def level_text(level: Decimal) -> str:
    """A level as people and ids read it: ``1.5``, ``1.2``, ``2`` (never ``1.50`` nor ``2E+0``)."""
    return format(level.normalize(), "f")


def percent(level: Decimal) -> str:
    return format((level * 100).normalize(), "f") + " %"


class WarningScan(Message):
    # The highest warning level of any policy: accounts with equity below this multiple of maintenance
    # (and still at or above maintenance) are read; the monitor decides per account's own levels.
    top_level: DecimalStr = Field(gt=1)
    # A price the exchange no longer stands behind warns no one (as it calls no one).
    max_mark_age: timedelta = DEFAULT_MAX_MARK_AGE
    limit: int = Field(default=10_000, ge=1, le=1_000_000)


class NearCall(Message):
    """An account within the highest warning level of maintenance, and the levels it was already warned at."""

    account_id: str
    currency: str
    equity: Figure
    maintenance_margin: Figure
    policy_name: str | None = None
    # Levels whose warning holds (sent, and the account not yet clearly back above them).
    warned_levels: list[Figure] = []
    # A position's mark is stale or its instrument halted: no warning on that price.
    unpriced: bool = False


class WarningCrossing(Message):
    """A level the monitor found crossed and not yet warned: what the ledger is asked to record."""

    account_id: str
    currency: str
    level: DecimalStr
    equity: Figure
    maintenance_margin: Figure
    # The warning holds until equity is above this multiple of maintenance: level x (1 + re-arm margin).
    rearm_above: DecimalStr
    notice_delivery_window: timedelta = timedelta(minutes=10)

    @property
    def distance_to_call(self) -> Decimal:
        """How much equity may still fall before a margin call opens (exact; never rounded up)."""
        return self.equity - self.maintenance_margin


class MarginWarning(Message):
    """One warning as the ledger recorded it: the level, the episode (one per re-arm), the figures."""

    account_id: str
    currency: str
    level: Figure
    episode: int
    equity: Figure
    maintenance_margin: Figure
    distance_to_call: Figure
    rearm_above: Figure
    notice_id: str
    warned_at: datetime
    rearmed_at: datetime | None = None

    def notice(self) -> Notice:
        """The trader's notice: the level crossed, equity against maintenance, and the room left."""
        return Notice(
            notice_id=self.notice_id,
            kind=NoticeKind.WARNING,
            account_id=self.account_id,
            occurred_at=self.warned_at,
            message=warning_message(self),
            currency=self.currency,
            equity=self.equity,
            maintenance_margin=self.maintenance_margin,
            level=self.level,
            distance_to_call=self.distance_to_call,
        )


def warning_prefix(account_id: str, level: Decimal) -> str:
    """The notice ids of the account's warnings at ``level``, less the episode (the ledger numbers those)."""
    return f"warning:{account_id}:{level_text(level)}:"


def warning_id(account_id: str, level: Decimal, episode: int) -> str:
    """The notice id: stable for the account, level and episode, so a receiver dedupes a resend."""
    return f"{warning_prefix(account_id, level)}{episode}"


def warning_message(warning: MarginWarning) -> str:
    currency = warning.currency
    with decimal.localcontext() as exact:
        exact.prec = 200
        line = warning.level * warning.maintenance_margin
        # The room left, in words, is never more than there is: cut, not rounded, to the cent.
        room = warning.distance_to_call.quantize(Decimal("0.01"), rounding=decimal.ROUND_DOWN)
    return (
        f"Margin warning on account {warning.account_id}: equity {display_money(warning.equity)} {currency}"
        f" is below {percent(warning.level)} of maintenance ({display_money(line)} {currency})."
        f" A margin call opens if equity falls {display_money(room)} {currency} more,"
        f" below maintenance of {display_money(warning.maintenance_margin)} {currency}."
        " Deposit or reduce positions to stay clear."
    )
