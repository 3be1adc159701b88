"""Money as ``Decimal``: one place that decides what an acceptable amount is.

Both the case workflow (update validators) and the ledger refuse bad amounts
with the same words, before anything is written, so this module lives with the
shared models and imports nothing but the standard library and pydantic.
"""

from __future__ import annotations

import decimal
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

# Decimal places each settlement or collateral currency allows.
CURRENCY_DECIMALS: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "USDT": 6,
    "USDC": 6,
    "BTC": 8,
    "ETH": 8,
}

# No single amount or price on this exchange is anywhere near this; a bigger one
# is a unit mistake (or an attack on numeric parsing), never a real movement.
MAX_AMOUNT = Decimal("1e15")


class AmountError(ValueError):
    """An amount that must not reach the ledger; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def to_decimal(value: Any, field: str) -> Decimal:
    """A finite Decimal from a decimal string (or Decimal); floats and bools are refused.

    JSON numbers are refused because a binary float cannot carry money exactly.
    """
    if isinstance(value, (bool, float)):
        raise AmountError(field, f'must be a decimal string such as "125.50", got {value!r}')
    if isinstance(value, int):
        raise AmountError(field, f'must be a decimal string such as "125.50", got number {value}')
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 64:
            raise AmountError(field, "must be a decimal string of at most 64 characters")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise AmountError(field, f"{value[:40]!r} is not a decimal number") from None
    else:
        raise AmountError(field, f"must be a decimal string, got {type(value).__name__}")
    if not number.is_finite():
        raise AmountError(field, "must be a finite number (NaN and infinities are refused)")
    if abs(number) > MAX_AMOUNT:
        raise AmountError(field, f"magnitude exceeds {MAX_AMOUNT:,.0f}")
    return number


def currency_decimals(currency: str, field: str = "currency") -> int:
    """Decimal places of a well-known currency, for callers that have no ledger at hand.

    The ledger's ``assets.decimals`` is the truth for any asset it lists (a
    snapshot carries it); this table only serves inputs checked before the
    ledger is asked.
    """
    try:
        return CURRENCY_DECIMALS[currency]
    except KeyError:
        known = ", ".join(sorted(CURRENCY_DECIMALS))
        raise AmountError(field, f"unknown currency {currency[:16]!r} (known: {known})") from None


# Digits a figure may have when shown: a computed figure of 1e26 or more must still print.
DISPLAY_PRECISION = 120


def display_money(value: Decimal | None) -> str:
    """A figure for people: two places and thousands separators, ``-`` for none. Display only.

    The figures themselves stay exact; this is how the Web UI, the notices'
    wording and ``margin-call cases show`` print them, alike. Pure, so the
    workflow may call it too.
    """
    if value is None:
        return "-"
    with decimal.localcontext() as context:
        context.prec = DISPLAY_PRECISION
        return f"{value.quantize(Decimal('0.01')):,}"


# Finer than any real asset's unit; the ledger's own decimals narrow it where known.
MAX_PLACES = 18


def places_if_known(currency: str) -> int:
    """Decimals of a well-known currency, else the widest any asset may have.

    Models check amounts before the ledger is asked; an asset the table does
    not know (DAI, say) is not refused here: the ledger, which knows its
    decimals, checks it exactly.
    """
    return CURRENCY_DECIMALS.get(currency, MAX_PLACES)


def money_amount(value: Any, currency: str, field: str = "amount", *, places: int | None = None) -> Decimal:
    """A positive amount with no more decimals than ``currency`` allows (``places`` when the ledger said)."""
    number = to_decimal(value, field)
    if number <= 0:
        raise AmountError(field, f"must be positive, got {number}")
    if places is None:
        places = currency_decimals(currency)
    exponent = number.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite numbers have an int exponent
    if -exponent > places:
        raise AmountError(field, f"{currency} allows {places} decimal places, got {number}")
    return number


def _decimal_field(value: Any) -> Decimal:
    # pydantic prefixes the field's location, so the message carries only the problem.
    try:
        return to_decimal(value, "value")
    except AmountError as error:
        raise ValueError(error.problem) from None


def _figure_field(value: Any) -> Decimal:
    """Any finite decimal: figures the ledger or the risk math computed are never refused for size.

    A computed figure (a bankruptcy price of 2e15, a portfolio's notional) is
    a fact, not a caller's input: bounding it like an input would make a valid
    account unreadable, and a case that cannot read its account is wedged.
    """
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, str) and len(value) <= 4000:
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{value[:40]!r} is not a decimal number") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    else:
        raise ValueError(f"must be a decimal string, got {type(value).__name__}")
    if not number.is_finite():
        raise ValueError("must be a finite number (NaN and infinities are refused)")
    return number


_AS_STRING = PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json")

# What callers send: a Decimal that arrives and leaves as a JSON string, bounded; floats are refused.
DecimalStr = Annotated[Decimal, BeforeValidator(_decimal_field), _AS_STRING]
# What the ledger and the risk math produce: finite, unbounded, a string in JSON.
Figure = Annotated[Decimal, BeforeValidator(_figure_field), _AS_STRING]
