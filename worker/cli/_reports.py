"""``margin-call report calls --day YYYY-MM-DD``: the day's margin calls, for the regulator's daily record.

CSV on stdout (a header line, then a line per call), or with ``--json`` the
document ``GET /v1/reports/calls`` answers: the same calls, the same values.
The day runs 00:00 to 24:00 UTC. Nothing is written.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime

from activities.ledger import calls_on
from worker.call_report import CallsReport, to_csv
from worker.cli._output import emit
from worker.cli._resources import ledger_pool
from worker.config import Settings


async def calls(settings: Settings, day: date, as_json: bool) -> int:
    async with ledger_pool(settings) as pool:
        report = CallsReport(day=day, as_of=datetime.now(UTC), calls=await calls_on(pool, day))
    if as_json:
        emit(report.model_dump(mode="json"), True, "")
    else:
        sys.stdout.write(to_csv(report))
    return 0
