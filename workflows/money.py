"""Money as ``Decimal``: one place that decides what an acceptable amount is.

Both the case workflow (update validators) and the ledger refuse bad amounts
with the same words, before anything is written, so this module lives with the
shared models and imports nothing but the standard library and pydantic.
"""

from __future__ import annotations

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
    try:
        return CURRENCY_DECIMALS[currency]
    except KeyError:
        known = ", ".join(sorted(CURRENCY_DECIMALS))
        raise AmountError(field, f"unknown currency {currency[:16]!r} (known: {known})") from None


def money_amount(value: Any, currency: str, field: str = "amount") -> Decimal:
    """A positive amount with no more decimals than ``currency`` allows."""
    number = to_decimal(value, field)
    if number <= 0:
        raise AmountError(field, f"must be positive, got {number}")
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


# A Decimal that arrives and leaves as a JSON string; floats are refused.
DecimalStr = Annotated[
    Decimal,
    BeforeValidator(_decimal_field),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
]
