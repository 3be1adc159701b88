"""The daily record of margin calls (FINRA Rule 4220), as CSV or JSON, for ``margin-call report calls`` and the API.

One document for both interfaces, so that they never disagree: the calls made
on one day, 00:00 to 24:00 **UTC** whatever the reader's zone, each with the
account, when and for how much it was made (the shortfall the opening case
read, and the deposit it asked: the shortfall rounded up), when it was due
(and any extension), and how and when it was met: ``deposit``, ``recovered``
(the account came back above maintenance with no money in), ``liquidation``,
``waiver``, or ``still open`` at the time of the report. Amounts are decimal
strings, exactly as the ledger holds them; times are ISO 8601 in UTC.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime

from pydantic import BaseModel

from activities.ledger import CallRecord

COLUMNS = tuple(CallRecord.model_fields)
TIMEZONE = "UTC"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_day(text: str) -> date:
    """A calendar day as ``YYYY-MM-DD``; anything else is refused with the reason (the caller names ``day``)."""
    if not _DAY.match(text):
        raise ValueError(f"must be a date as YYYY-MM-DD, got {text[:40]!r}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a day of the calendar") from None


class CallsReport(BaseModel):
    """The day's calls, as of when the report was read."""

    day: date
    timezone: str = TIMEZONE
    as_of: datetime
    calls: list[CallRecord]


def rows(report: CallsReport) -> list[dict[str, str]]:
    """Each call as CSV cells: the JSON document's values, with an empty cell for none."""
    return [
        {
            column: "" if value is None else str(value)
            for column, value in call.model_dump(mode="json").items()
        }
        for call in report.calls
    ]


def to_csv(report: CallsReport, newline: str = "\n") -> str:
    """A header line and a line per call (``newline``: ``\\r\\n`` over HTTP, as RFC 4180 has it)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator=newline)
    writer.writeheader()
    writer.writerows(rows(report))
    return out.getvalue()
