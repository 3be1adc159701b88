"""``margin-call risk``: a portfolio as JSON on stdin, its figures as JSON on stdout.

Every input ends in figures (exit 0) or in one line ``error: <field>: <problem>``
(exit 2). The models accept any finite figure, because the ledger's accounts are
what they are; what a caller may type in is bounded here, at the entry, so that
the risk math only ever sees portfolios it can compute.
"""

from __future__ import annotations

import json
import re
import sys
from decimal import Decimal
from typing import Any, TextIO

from pydantic import ValidationError

from workflows.domain.margin import assess
from workflows.domain.money import MAX_AMOUNT, MAX_PLACES
from workflows.domain.portfolio import Portfolio
from workflows.domain.validation import describe_validation_error

MAX_INPUT = 1_000_000
# A portfolio is four levels deep; anything far deeper is not one, and json's
# recursive decoder would run out of stack on it.
MAX_DEPTH = 16
MAX_COLLATERAL = 256
MAX_POSITIONS = 1024
MAX_TIERS = 64

# A JSON string (skipped whole, brackets inside it do not count) or a bracket.
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class InputError(ValueError):
    """What the caller sent cannot be assessed; the message is ``field: problem``."""


def _check_depth(text: str) -> None:
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for token in _STRUCTURE.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise InputError(f"input: nested deeper than {MAX_DEPTH} levels")
        elif bracket in ("]", "}"):
            depth -= 1


def _check_sizes(document: Any) -> None:
    """List sizes, before validation, so that an oversized portfolio costs nothing to refuse."""
    if not isinstance(document, dict):
        return  # validation names the problem

    def at_most(field: str, items: Any, limit: int, what: str) -> None:
        if isinstance(items, list) and len(items) > limit:
            raise InputError(f"{field}: at most {limit} {what}, got {len(items)}")

    at_most("collateral", document.get("collateral"), MAX_COLLATERAL, "collateral items")
    positions = document.get("positions")
    at_most("positions", positions, MAX_POSITIONS, "positions")
    if isinstance(positions, list):
        for i, position in enumerate(positions):
            if isinstance(position, dict):
                at_most(f"positions.{i}.tiers", position.get("tiers"), MAX_TIERS, "tiers")


def _places(value: Decimal) -> int:
    """Decimal places that carry a digit ("1.500" has 1), without any context arithmetic.

    ``abs`` and ``normalize`` round in the current context and overflow on a
    figure like 1e999999999999999999, which validation lets through; the
    tuple does not.
    """
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # validation let only finite numbers through
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return 0 if not any(digits) else max(0, -(exponent + trailing))


def _check_figure(field: str, value: Decimal, *, bounded: bool) -> None:
    if bounded and value.copy_abs() > MAX_AMOUNT:
        raise InputError(f"{field}: magnitude exceeds {MAX_AMOUNT:,.0f}")
    places = _places(value)
    if places > MAX_PLACES:
        raise InputError(f"{field}: at most {MAX_PLACES} decimal places, got {places}")


def _check_figures(portfolio: Portfolio) -> None:
    """Magnitudes and places: the bounds within which the risk math stays exact enough and finite.

    Rates and haircuts are already within [0, 1]; only their places are bounded.
    """
    for i, item in enumerate(portfolio.collateral):
        _check_figure(f"collateral.{i}.amount", item.amount, bounded=True)
        _check_figure(f"collateral.{i}.price", item.price, bounded=True)
        _check_figure(f"collateral.{i}.haircut", item.haircut, bounded=False)
    for i, position in enumerate(portfolio.positions):
        _check_figure(f"positions.{i}.quantity", position.quantity, bounded=True)
        _check_figure(f"positions.{i}.entry_price", position.entry_price, bounded=True)
        _check_figure(f"positions.{i}.mark_price", position.mark_price, bounded=True)
        for j, tier in enumerate(position.tiers):
            where = f"positions.{i}.tiers.{j}"
            _check_figure(f"{where}.notional_floor", tier.notional_floor, bounded=True)
            _check_figure(f"{where}.maintenance_rate", tier.maintenance_rate, bounded=False)
            _check_figure(f"{where}.initial_rate", tier.initial_rate, bounded=False)


def read_portfolio(stdin: TextIO) -> Portfolio:
    """The portfolio on stdin, or ``InputError`` naming the first thing wrong with it."""
    try:
        text = stdin.read(MAX_INPUT + 1)
        # Under a C locale stdin decodes with surrogateescape: bad bytes arrive as lone surrogates.
        text.encode("utf-8")
    except UnicodeError:
        raise InputError("input: not valid UTF-8") from None
    if len(text) > MAX_INPUT:
        raise InputError(f"input: larger than {MAX_INPUT} characters")
    _check_depth(text)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"input: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    except (ValueError, RecursionError) as error:  # e.g. an integer past Python's digit limit
        raise InputError(f"input: not valid JSON ({str(error)[:80]})") from None
    _check_sizes(document)
    try:
        portfolio = Portfolio.model_validate(document)
    except ValidationError as error:
        raise InputError(describe_validation_error(error)) from None
    _check_figures(portfolio)
    return portfolio


def _one_line(message: str) -> str:
    """Field names come from the caller's keys: a newline in one must not split the error line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def run(stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    try:
        portfolio = read_portfolio(stdin)
    except InputError as error:
        print(f"error: {_one_line(str(error))}", file=stderr)
        return 2
    figures = assess(portfolio).model_dump(
        mode="json",
        include={
            "equity": True,
            "maintenance_margin": True,
            "initial_margin": True,
            "shortfall": True,
            "margin_ratio": True,
            "positions": {
                "__all__": {
                    "instrument",
                    "notional",
                    "maintenance_margin",
                    "liquidation_price",
                    "bankruptcy_price",
                }
            },
        },
    )
    json.dump(figures, stdout, indent=2)
    stdout.write("\n")
    return 0
