"""Reports (scope ``cases:read``): the day's margin calls, for the regulator's daily record (FINRA Rule 4220).

``GET /v1/reports/calls?day=YYYY-MM-DD`` answers JSON; ``&format=csv`` the same
calls as CSV. The day runs 00:00 to 24:00 UTC. Nothing is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from activities.ledger import calls_on
from worker.api._problems import ERRORS
from worker.api._services import Services
from worker.call_report import CallsReport, parse_day, to_csv
from worker.serving import Refused


def report_routes(services: Services) -> APIRouter:
    router = APIRouter(tags=["reports"], responses=ERRORS)
    pool = services.pool

    @router.get(
        "/v1/reports/calls",
        dependencies=services.scopes.needs("cases:read"),
        response_model=CallsReport,
        responses={200: {"content": {"text/csv": {}}, "description": "the day's calls (JSON, or CSV)"}},
    )
    async def calls(
        day: Annotated[str, Query(max_length=40, description="YYYY-MM-DD; the day runs 00:00 to 24:00 UTC")],
        report_format: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
    ) -> Response | CallsReport:
        """Every margin call made on ``day``: account, when and how much, when due, how and when met."""
        try:
            when = parse_day(day)
        except ValueError as error:
            raise Refused(422, f"day: {error}") from None
        report = CallsReport(day=when, as_of=datetime.now(UTC), calls=await calls_on(pool, when))
        if report_format == "csv":
            return Response(
                to_csv(report, newline="\r\n"),
                media_type="text/csv; charset=utf-8",
                headers={
                    "content-disposition": f'attachment; filename="margin-calls-{when.isoformat()}.csv"'
                },
            )
        return report

    return router
