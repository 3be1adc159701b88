"""Rendering a ``CaseStatement`` with Jinja2: figures printed exactly, times in UTC."""

from __future__ import annotations

import decimal
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from workflows.contract import CaseStatement
from workflows.domain.money import DISPLAY_PRECISION
from workflows.domain.policies import describe_span


def figure(value: Decimal | None, places: int = 2) -> str:
    """A figure exactly as the ledger holds it, grouped by thousands, with at least ``places`` decimals.

    Never rounded: a statement is checked figure by figure, so a fee of
    0.000123 must read 0.000123, not 0.00.
    """
    if value is None:
        return "-"
    with decimal.localcontext() as ctx:
        ctx.prec = DISPLAY_PRECISION
        exact = value.normalize()
        exponent = exact.as_tuple().exponent
        assert isinstance(exponent, int)
        shown = exact.quantize(Decimal(1).scaleb(-max(places, -exponent)))
        return f"{shown:,}"


def percent(value: Decimal | None) -> str:
    """A rate as a percentage (0.004 reads 0.4 %)."""
    if value is None:
        return "-"
    with decimal.localcontext() as ctx:
        ctx.prec = DISPLAY_PRECISION
        return f"{(value * 100).normalize():f} %"


def moment(value: datetime | None) -> str:
    """A time in UTC to the millisecond, as the timeline and the ledger's rows are compared."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def span(value: object) -> str:
    """A duration in seconds, minutes or hours, as a policy reads."""
    return describe_span(value) if isinstance(value, timedelta) else str(value)


@cache
def _environment(autoescape: bool) -> Environment:
    env = Environment(
        loader=PackageLoader("worker.statement", "templates"),
        autoescape=select_autoescape(["html"]) if autoescape else False,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(figure=figure, percent=percent, moment=moment, span=span)
    return env


def render_html(statement: CaseStatement) -> str:
    """The statement as a self-contained page that reads on screen and prints on A4."""
    return _environment(True).get_template("statement.html").render(s=statement)


def render_text(statement: CaseStatement) -> str:
    """The statement as plain text for a terminal (``margin-call cases statement``)."""
    return _environment(False).get_template("statement.txt").render(s=statement)
