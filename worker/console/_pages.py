"""How the console's pages are made: templates, the words and colours of each state, the headers every page has.

The pages are rendered here, on the server, with every value escaped
(Jinja2's autoescape): an account id or a reason typed by staff is text on the
page, never markup. The browser gets the page, one stylesheet and one small
script, all from this process; the Content-Security-Policy allows nothing
else, so the console works with no internet and no injected script runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.responses import HTMLResponse, Response

from workflows.domain.money import display_money

ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("worker.console", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

# What each state means to staff, shown beside its word. Outcomes each have their own colour
# (console.css, .state-<name>), so that a list of closed cases reads at a glance.
MEANINGS = {
    "OPEN": "opening: the case is reading the account",
    "NOTIFIED": "the trader is being told",
    "AWAITING_DEPOSIT": "waiting for the trader's deposit until the deadline",
    "LIQUIDATING": "selling positions in stages",
    "CURED": "closed: the account is above maintenance again, nothing sold",
    "RESTORED": "closed: liquidation brought the account back above maintenance",
    "CLOSED_OUT": "closed: every position sold, no loss left",
    "BANKRUPT": "closed: a loss was left after close-out (insurance fund, then uncovered loss)",
    "WAIVED": "closed by staff without liquidation",
    "FAILED": "the case's workflow failed: no outcome",
    "TERMINATED": "the case's workflow was terminated: no outcome",
    "TIMED_OUT": "the case's workflow timed out: no outcome",
    "CANCELED": "the case's workflow was canceled: no outcome",
}

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _relative(moment: datetime | None, now: datetime | None = None) -> str:
    """ "in 4 min" or "12 s ago": how near a deadline is, without reading a clock on the wall."""
    if moment is None:
        return ""
    seconds = int((moment - (now or datetime.now(UTC))).total_seconds())
    span = abs(seconds)
    if span < 120:
        words = f"{span} s"
    elif span < 2 * 3600:
        words = f"{span // 60} min"
    elif span < 2 * 86400:
        words = f"{span // 3600} h {span % 3600 // 60} min"
    else:
        words = f"{span // 86400} days"
    return f"in {words}" if seconds >= 0 else f"{words} ago"


def _exact(value: Decimal | None) -> str:
    """The figure as the ledger holds it (the page shows it to the cent; this is its title)."""
    return "" if value is None else format(value, "f")


def _path_id(value: str) -> str:
    """An id as one path segment: an account id may hold "/", which must not split the path."""
    return quote(value, safe="")


ENV.filters["money"] = display_money
ENV.filters["path_id"] = _path_id
ENV.filters["exact"] = _exact
ENV.filters["when"] = _when
ENV.filters["relative"] = _relative
ENV.globals["meanings"] = MEANINGS


def page(template: str, http_status: int = 200, /, **context: Any) -> HTMLResponse:
    html = ENV.get_template(template).render(**context)
    return HTMLResponse(html, status_code=http_status, headers=HEADERS)


def problem_page(status: int, detail: str, session: Any = None) -> HTMLResponse:
    """The console's one error shape: a page whose alert is ``field: problem``."""
    return page("problem.html", status, detail=detail, status_code=status, session=session)


def _static(name: str) -> bytes:
    return resources.files("worker.console").joinpath("static", name).read_bytes()


STATIC = {
    "console.css": ("text/css; charset=utf-8", _static("console.css")),
    "console.js": ("text/javascript; charset=utf-8", _static("console.js")),
}


def static_file(name: str) -> Response:
    media_type, content = STATIC[name]
    return Response(
        content,
        media_type=media_type,
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )
