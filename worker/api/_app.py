"""The app: one error shape, a cap on the body, a health check, and the routes of each resource."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg
from fastapi import FastAPI

from worker.api._auth import Scopes
from worker.api._cases import case_routes
from worker.api._deposits import deposit_routes
from worker.api._docs import docs_routes
from worker.api._feeds import feed_routes
from worker.api._instruments import instrument_routes
from worker.api._insurance import insurance_routes
from worker.api._reports import report_routes
from worker.api._services import Services
from worker.api._staff import staff_routes
from worker.api._statement import statement_routes
from worker.console import console_routes
from worker.serving import BodyLimit, one_error_shape
from workflows import contract
from workflows.client import MarginCallClient
from workflows.domain.policies import STANDARD_BOOK, PolicyBook

MAX_BODY_BYTES = 64 * 1024
# A feed's batch: up to 10,000 records (a crash brings thousands of marks and trades a second).
MAX_FEED_BODY_BYTES = 8 * 1024 * 1024
FEED_PATHS = ("/v1/feeds/", "/v1/reference")
TITLE = "Margin call case manager"
# The embedded stack's Temporal Web UI (``margin-call up``): where the console links cases by default.
DEFAULT_TEMPORAL_UI_URL = "http://127.0.0.1:8233"


def create_app(
    cases: MarginCallClient,
    pool: asyncpg.Pool,
    tokens: Mapping[str, frozenset[str]],
    policies: PolicyBook = STANDARD_BOOK,
    *,
    temporal_ui_url: str | None = DEFAULT_TEMPORAL_UI_URL,
) -> FastAPI:
    """The API over ``cases`` and the ledger's ``pool``, for callers holding one of ``tokens``.

    ``temporal_ui_url`` is the Temporal Web UI the staff console links each case to (None: no link).
    """
    app = FastAPI(
        title=TITLE,
        version="1",
        description="Open margin call cases, report deposits, find cases and act on them.",
        # /docs is served from local files (worker/api/_docs.py); /redoc would need a CDN.
        docs_url=None,
        redoc_url=None,
    )
    one_error_shape(app)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES, larger=dict.fromkeys(FEED_PATHS, MAX_FEED_BODY_BYTES))
    services = Services(cases=cases, pool=pool, scopes=Scopes(tokens), policies=policies)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        await pool.fetchval("SELECT 1")  # the database answers (a connection check, no ledger read)
        await cases.client.count_workflows(f"WorkflowType = '{contract.WORKFLOW_TYPE}'")
        return {"status": "ok"}

    app.include_router(case_routes(services))
    app.include_router(statement_routes(services))
    app.include_router(deposit_routes(services))
    app.include_router(staff_routes(services))
    app.include_router(instrument_routes(services))
    app.include_router(feed_routes(services))
    app.include_router(insurance_routes(services))
    app.include_router(report_routes(services))
    app.include_router(docs_routes(TITLE, app.openapi_url or "/openapi.json"))
    app.include_router(console_routes(services, temporal_ui_url))
    return app
