"""Named case policies: the operator's, not the caller's.

A policy decides how long a trader has to pay and how hard liquidation bites,
so it belongs to the exchange's risk officers. They configure named policies
(per account tier or instrument group) with the bounds within which a caller
may override a field; whoever opens a case names a policy and may ask for an
override inside those bounds, nothing else. The worker checks every case it
opens against the same book, so a case started by any route (the HTTP API,
the client, the ``temporal`` CLI) is held to it.

Pure and deterministic: the book is data, loaded once at start.
"""

from __future__ import annotations

import decimal
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints, ValidationError, model_validator

from workflows.domain.liquidation import LiquidationPolicy
from workflows.domain.message import Message
from workflows.domain.money import DecimalStr
from workflows.domain.validation import describe_validation_error

# No margin call waits longer than a month for money, and no liquidation
# pauses longer than an hour between stages: past these a case is not
# managing risk, it is shielding the account from it.
MAX_DEADLINE = timedelta(days=30)
MAX_PAUSE_BETWEEN_STAGES = timedelta(hours=1)
# A second operator approves a large waive within this (default) or it lapses: the figures the
# first operator saw are still current, and an expired request leaves the trader time to pay.
DEFAULT_WAIVE_APPROVAL_WITHIN = timedelta(hours=1)
MAX_WAIVE_APPROVAL_WITHIN = timedelta(days=1)
# A mark feed publishes every second or so; a minute without one is an outage,
# and a day-old mark is never a price to sell at.
DEFAULT_MAX_MARK_AGE = timedelta(seconds=60)
MAX_MARK_AGE = timedelta(days=1)
# Warnings before the call: equity below 150 % and then 120 % of maintenance, each
# warned once until the account is clearly (5 % of the level) back above it.
DEFAULT_WARNING_LEVELS = (Decimal("1.5"), Decimal("1.2"))
DEFAULT_WARNING_REARM_MARGIN = Decimal("0.05")
MAX_WARNING_LEVELS = 5
# A warning at ten times maintenance is not a warning, it is noise.
MAX_WARNING_LEVEL = Decimal(10)


class CasePolicy(Message):
    """Everything about a case's timing and liquidation that an exchange may tune."""

    deadline: timedelta = timedelta(hours=4)
    reminders_before_deadline: list[timedelta] = [timedelta(hours=1), timedelta(minutes=15)]
    hard_threshold: DecimalStr = Field(
        default=Decimal("0.5"),
        description="liquidate at once when equity falls below this fraction of maintenance",
    )
    max_deadline_extension: timedelta = timedelta(hours=24)
    pause_between_stages: timedelta = timedelta(seconds=30)
    max_stages: int = Field(default=20, ge=1, le=200)
    ledger_attempt_timeout: timedelta = Field(
        default=timedelta(seconds=30),
        description="how long one ledger call may take before Temporal retries it (e.g. on another worker)",
    )
    notice_delivery_window: timedelta = Field(
        default=timedelta(minutes=10),
        description="how long one notice is retried before it is recorded as undelivered",
    )
    max_mark_age: timedelta = Field(
        default=DEFAULT_MAX_MARK_AGE,
        description="never liquidate on a mark older than this; the case waits for fresh marks instead",
    )
    liquidation: LiquidationPolicy = LiquidationPolicy()
    warning_levels: list[DecimalStr] = Field(
        default=list(DEFAULT_WARNING_LEVELS),
        description="warn the trader, before any call, when equity falls below each of these multiples of"
        " maintenance (the risk monitor; once per level until the account is clearly back above it)",
    )
    warning_rearm_margin: DecimalStr = Field(
        default=DEFAULT_WARNING_REARM_MARGIN,
        description="a level warns again only after equity went above level x (1 + this) x maintenance",
    )
    # None (the default) keeps every waive one operator's decision, as before the rule existed; a case
    # recorded before it carries no such field and replays as it ran.
    waive_approval_above: DecimalStr | None = Field(
        default=None,
        description="a waive of a shortfall above this (settlement currency) needs a second operator's approval",
    )
    waive_approval_within: timedelta = Field(
        default=DEFAULT_WAIVE_APPROVAL_WITHIN,
        description="how long a waive awaiting approval stays open before it lapses",
    )

    @model_validator(mode="after")
    def _ranges(self) -> CasePolicy:
        # Outer limits that no operator's policy may pass: beyond them a
        # duration overflows datetime arithmetic in the workflow, or a case
        # stops making progress. Operators narrow them per named policy
        # (workflows/policies.py).
        def within(name: str, value: timedelta, low: timedelta, high: timedelta) -> None:
            if not low <= value <= high:
                raise ValueError(
                    f"{name}: must be between {describe_span(low)} and {describe_span(high)}, got {describe_span(value)}"
                )

        within("deadline", self.deadline, timedelta(seconds=1), MAX_DEADLINE)
        if len(self.reminders_before_deadline) > 10:
            raise ValueError("reminders_before_deadline: at most 10 reminders")
        for reminder in self.reminders_before_deadline:
            within("reminders_before_deadline", reminder, timedelta(seconds=1), MAX_DEADLINE)
        if not (0 <= self.hard_threshold < 1):
            raise ValueError("hard_threshold: must be in [0, 1)")
        within("max_deadline_extension", self.max_deadline_extension, timedelta(0), MAX_DEADLINE)
        within("pause_between_stages", self.pause_between_stages, timedelta(0), MAX_PAUSE_BETWEEN_STAGES)
        within(
            "ledger_attempt_timeout", self.ledger_attempt_timeout, timedelta(seconds=1), timedelta(minutes=10)
        )
        within("notice_delivery_window", self.notice_delivery_window, timedelta(seconds=1), timedelta(days=1))
        within("max_mark_age", self.max_mark_age, timedelta(seconds=1), MAX_MARK_AGE)
        # A level at or below 1 would warn at or after the call itself; the same level twice would warn twice.
        if len(self.warning_levels) > MAX_WARNING_LEVELS:
            raise ValueError(f"warning_levels: at most {MAX_WARNING_LEVELS} levels")
        for level in self.warning_levels:
            if not 1 < level <= MAX_WARNING_LEVEL:
                raise ValueError(
                    f"warning_levels: each must be above 1 and at most {MAX_WARNING_LEVEL}, got {level}"
                )
        if len(set(self.warning_levels)) != len(self.warning_levels):
            raise ValueError("warning_levels: each level at most once")
        if not 0 <= self.warning_rearm_margin <= 1:
            raise ValueError("warning_rearm_margin: must be in [0, 1]")
        if self.waive_approval_above is not None and self.waive_approval_above < 0:
            raise ValueError(f"waive_approval_above: must be zero or more, got {self.waive_approval_above}")
        within(
            "waive_approval_within",
            self.waive_approval_within,
            timedelta(seconds=1),
            MAX_WAIVE_APPROVAL_WITHIN,
        )
        return self

    def warning_levels_crossed(self, equity: Decimal, maintenance_margin: Decimal) -> list[Decimal]:
        """The levels whose line (level x maintenance) equity is below, highest first; none once in breach.

        In breach the case says more than any warning could, so no level is
        crossed there: a warning never arrives with the call.
        """
        if maintenance_margin <= 0 or equity < maintenance_margin:
            return []
        with decimal.localcontext() as exact:
            exact.prec = 200  # the product of two figures, never rounded before the comparison
            crossed = [lv for lv in self.warning_levels if equity < lv * maintenance_margin]
        return sorted(crossed, reverse=True)


def describe_span(value: timedelta) -> str:
    """A duration as people read it in an error message."""
    seconds = value.total_seconds()
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g} d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


DEFAULT_POLICY = "standard"
PolicyName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class PolicyError(ValueError):
    """A policy or override the operator's book does not allow; the message names the field."""


class DurationRange(Message):
    low: timedelta
    high: timedelta

    @model_validator(mode="after")
    def _ordered(self) -> DurationRange:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


class FractionRange(Message):
    low: DecimalStr
    high: DecimalStr

    @model_validator(mode="after")
    def _ordered(self) -> FractionRange:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


class PolicyBounds(Message):
    """How far a caller may move each overridable field; fields not listed here cannot be overridden."""

    deadline: DurationRange = DurationRange(low=timedelta(minutes=5), high=timedelta(days=3))
    reminder: DurationRange = DurationRange(low=timedelta(minutes=1), high=timedelta(days=3))
    hard_threshold: FractionRange = FractionRange(low=Decimal("0.1"), high=Decimal("0.9"))
    max_deadline_extension: DurationRange = DurationRange(low=timedelta(0), high=timedelta(days=3))


class PolicyOverrides(Message):
    """What a caller asks to change for one case; the named policy says which fields it may, and how far."""

    deadline: timedelta | None = None
    reminders_before_deadline: list[timedelta] | None = Field(default=None, max_length=10)
    hard_threshold: DecimalStr | None = None
    max_deadline_extension: timedelta | None = None
    pause_between_stages: timedelta | None = None
    max_stages: int | None = None
    ledger_attempt_timeout: timedelta | None = None
    notice_delivery_window: timedelta | None = None
    max_mark_age: timedelta | None = None
    liquidation: LiquidationPolicy | None = None
    waive_approval_above: DecimalStr | None = None
    waive_approval_within: timedelta | None = None


OVERRIDABLE = ("deadline", "reminders_before_deadline", "hard_threshold", "max_deadline_extension")


class NamedPolicy(Message):
    name: PolicyName
    version: int = Field(default=1, ge=1)
    defaults: CasePolicy = CasePolicy()
    bounds: PolicyBounds = PolicyBounds()
    # Which fields a case may set differently; the rest are the operator's alone.
    # Fields without bounds of their own are held only to CasePolicy's outer limits.
    overridable: list[str] = Field(default=list(OVERRIDABLE), max_length=len(CasePolicy.model_fields))

    @model_validator(mode="after")
    def _defaults_within_bounds(self) -> NamedPolicy:
        unknown = sorted(set(self.overridable) - set(CasePolicy.model_fields))
        if unknown:
            raise ValueError(f"overridable: {', '.join(unknown)} is not a policy field")
        problem = _out_of_bounds(self.defaults, self.bounds)
        if problem is not None:
            raise ValueError(f"defaults.{problem}")
        return self


class PolicyBook(Message):
    """Every policy the operator allows, by name."""

    policies: list[NamedPolicy] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _unique(self) -> PolicyBook:
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ValueError("policies: names must be unique")
        return self

    def named(self, name: str) -> NamedPolicy:
        for policy in self.policies:
            if policy.name == name:
                return policy
        known = ", ".join(sorted(p.name for p in self.policies))
        raise PolicyError(f"policy: unknown policy {name[:64]!r} (known: {known})")

    def resolve(self, name: str, overrides: PolicyOverrides | None = None) -> CasePolicy:
        """The named policy with the caller's overrides, each checked against the operator's bounds."""
        named = self.named(name)
        if overrides is None:
            return named.defaults
        changes = overrides.model_dump(exclude_none=True)
        for field in changes:
            if field not in named.overridable:
                raise PolicyError(
                    f"overrides.{field}: set by the operator's policy {name!r}; it cannot be overridden"
                )
        try:
            policy = named.defaults.model_validate({**named.defaults.model_dump(), **changes})
        except ValidationError as error:
            raise PolicyError(f"overrides.{describe_validation_error(error)}") from None
        self.check(name, policy)
        return policy

    def check(self, name: str, policy: CasePolicy) -> None:
        """Refuse a policy that differs from the named one other than by allowed, in-bounds overrides."""
        named = self.named(name)
        overridable = set(named.overridable)
        for field in CasePolicy.model_fields:
            if field not in overridable and getattr(policy, field) != getattr(named.defaults, field):
                raise PolicyError(
                    f"policy.{field}: set by the operator's policy {name!r}; it cannot be overridden"
                )
        problem = _out_of_bounds(policy, named.bounds)
        if problem is not None:
            raise PolicyError(f"policy.{problem} (policy {name!r}, version {named.version})")


def _out_of_bounds(policy: CasePolicy, bounds: PolicyBounds) -> str | None:
    """The first overridable field outside the bounds, as ``field: why``; None when all are within."""

    def outside(value: timedelta, span: DurationRange) -> bool:
        return not span.low <= value <= span.high

    if outside(policy.deadline, bounds.deadline):
        return f"deadline: must be between {_range(bounds.deadline)}"
    for reminder in policy.reminders_before_deadline:
        if outside(reminder, bounds.reminder):
            return f"reminders_before_deadline: each must be between {_range(bounds.reminder)}"
    threshold = bounds.hard_threshold
    if not threshold.low <= policy.hard_threshold <= threshold.high:
        return f"hard_threshold: must be between {threshold.low} and {threshold.high}"
    extension = bounds.max_deadline_extension
    if outside(policy.max_deadline_extension, extension):
        return f"max_deadline_extension: must be between {_range(extension)}"
    return None


def _range(span: DurationRange) -> str:
    return f"{describe_span(span.low)} and {describe_span(span.high)}"


STANDARD_BOOK = PolicyBook(policies=[NamedPolicy(name=DEFAULT_POLICY)])


def open_book(defaults: CasePolicy | None = None) -> PolicyBook:
    """A book whose one policy lets a case set any field within CasePolicy's outer limits.

    For the environments where whoever opens cases is the operator: the
    tests, the demo, the soak and the benchmark run deadlines of seconds.
    """
    return PolicyBook(
        policies=[
            NamedPolicy(
                name=DEFAULT_POLICY,
                defaults=defaults or CasePolicy(),
                bounds=PolicyBounds(
                    deadline=DurationRange(low=timedelta(seconds=1), high=MAX_DEADLINE),
                    reminder=DurationRange(low=timedelta(seconds=1), high=MAX_DEADLINE),
                    hard_threshold=FractionRange(low=Decimal(0), high=Decimal("0.99")),
                    max_deadline_extension=DurationRange(low=timedelta(0), high=MAX_DEADLINE),
                ),
                overridable=list(CasePolicy.model_fields),
            )
        ]
    )


def load_book(path: Path) -> PolicyBook:
    """The operator's book from a JSON file; a bad file is refused at start, naming the field."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PolicyError(f"policies file {path}: {error}") from None
    try:
        return PolicyBook.model_validate(document)
    except ValidationError as error:
        raise PolicyError(f"policies file {path}: {describe_validation_error(error)}") from None
