"""``ApiClient``: the case manager's HTTP API as typed calls, for an exchange's services written in Python.

It speaks the contract's models (``workflows.contract``) and the API's own
bodies (``worker.api_messages``), over httpx, with one bearer token; it imports
nothing of the ledger, so it runs wherever the API is reachable. A refusal is
an ``ApiError`` carrying the status and the API's one-line ``detail``, which
names the field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from worker.api_messages import ContributionBooked, InstrumentView, InsuranceContribution, InsuranceFund
from workflows.client import DepositReport
from workflows.contract import (
    CaseStatement,
    CaseStatus,
    CaseSummary,
    DeadlineExtension,
    Deposit,
    FeedAnswer,
    StaffAction,
    Waiver,
)

Model = TypeVar("Model", bound=BaseModel)
Records = Sequence[Mapping[str, Any]]
_CASES = TypeAdapter(list[CaseSummary])
_INSTRUMENTS = TypeAdapter(list[InstrumentView])


class ApiError(Exception):
    """The API refused a request: ``status`` and its ``detail`` (``field: problem``)."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class FeedRefused(ApiError):
    """A feed answered 200 but refused a record the caller needed applied."""


class ApiClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str, token: str, timeout: float = 30) -> AsyncIterator[ApiClient]:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout) as http:
            yield cls(http)

    async def _send(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        return (await self._request(method, path, body, **params)).json()

    async def _text(self, path: str, **params: Any) -> str:
        """A page or a file the API serves (HTML, CSV) rather than JSON."""
        return (await self._request("GET", path, **params)).text

    async def _request(self, method: str, path: str, body: Any = None, **params: Any) -> httpx.Response:
        query = {k: v for k, v in params.items() if v is not None}
        content = None
        if isinstance(body, BaseModel):
            content = body.model_dump_json()
        elif body is not None:
            content = TypeAdapter(Any).dump_json(body).decode()
        response = await self.http.request(
            method,
            path,
            content=content,
            params=query or None,
            headers={"content-type": "application/json"} if content is not None else None,
        )
        if response.status_code >= 300:
            try:
                detail = str(response.json()["detail"])
            except (ValueError, KeyError, TypeError):
                detail = response.text[:200]
            raise ApiError(method, path, response.status_code, detail)
        return response

    async def _call(
        self, model: type[Model], method: str, path: str, body: Any = None, **params: Any
    ) -> Model:
        return model.model_validate(await self._send(method, path, body, **params))

    # --- reference data, instruments and the insurance fund (scope admin)

    async def reference(self, records: Records, operator: str) -> FeedAnswer:
        body = {"operator": operator, "records": list(records)}
        return await self._call(FeedAnswer, "POST", "/v1/reference", body)

    async def instruments(self) -> list[InstrumentView]:
        return _INSTRUMENTS.validate_python(await self._send("GET", "/v1/instruments"))

    async def fund_insurance(
        self, contribution_id: str, asset: str, amount: Decimal, operator: str
    ) -> ContributionBooked:
        body = InsuranceContribution(
            contribution_id=contribution_id, asset=asset, amount=amount, operator=operator
        )
        return await self._call(ContributionBooked, "POST", "/v1/insurance-fund/contributions", body)

    async def insurance_fund(self, asset: str) -> InsuranceFund:
        return await self._call(InsuranceFund, "GET", f"/v1/insurance-fund/{asset}")

    # --- the feeds (scope feed:write)

    async def feed(self, kind: str, records: Records) -> FeedAnswer:
        """``kind``: marks, trades, movements or withdrawals."""
        return await self._call(FeedAnswer, "POST", f"/v1/feeds/{kind}", {"records": list(records)})

    async def marks(self, records: Records) -> FeedAnswer:
        return await self.feed("marks", records)

    async def trades(self, records: Records) -> FeedAnswer:
        return await self.feed("trades", records)

    async def movements(self, records: Records) -> FeedAnswer:
        return await self.feed("movements", records)

    # --- deposits (deposits:write), cases (cases:read) and staff actions (cases:act)

    async def deposit(self, deposit: Deposit) -> DepositReport:
        """Credit the ledger, then report to the open case; the receipt is the case's answer."""
        return await self._call(DepositReport, "POST", "/v1/deposits", deposit)

    async def case(self, account_id: str) -> CaseStatus:
        return await self._call(CaseStatus, "GET", f"/v1/cases/{account_id}")

    async def cases(
        self, state: str | None = None, account_id: str | None = None, limit: int = 1000
    ) -> list[CaseSummary]:
        found = await self._send("GET", "/v1/cases", state=state, account_id=account_id, limit=limit)
        return _CASES.validate_python(found)

    async def statement(self, account_id: str, case_id: str | None = None) -> CaseStatement:
        """The statement of the account's latest case (or ``case_id``): every figure with its inputs."""
        return await self._call(CaseStatement, "GET", f"/v1/cases/{account_id}/statement", case_id=case_id)

    async def statement_page(self, account_id: str, case_id: str | None = None) -> str:
        """The same statement as a printable HTML page."""
        return await self._text(f"/v1/cases/{account_id}/statement.html", case_id=case_id)

    async def calls_report(self, day: date) -> dict[str, Any]:
        """The day's margin calls (UTC) as the API's JSON document (``worker.call_report.CallsReport``)."""
        report: dict[str, Any] = await self._send("GET", "/v1/reports/calls", day=day.isoformat())
        return report

    async def calls_report_csv(self, day: date) -> str:
        """The same day's calls as CSV, the file a broker keeps."""
        return await self._text("/v1/reports/calls", day=day.isoformat(), format="csv")

    async def extend(self, account_id: str, extension: DeadlineExtension) -> CaseStatus:
        return await self._call(CaseStatus, "POST", f"/v1/cases/{account_id}/extend", extension)

    async def waive(self, account_id: str, waiver: Waiver) -> CaseStatus:
        return await self._call(CaseStatus, "POST", f"/v1/cases/{account_id}/waive", waiver)

    async def force(self, account_id: str, action: StaffAction) -> CaseStatus:
        return await self._call(CaseStatus, "POST", f"/v1/cases/{account_id}/force-liquidation", action)


def all_applied(what: str, answer: FeedAnswer) -> FeedAnswer:
    """``answer`` if nothing in it was refused; a record that was is raised, naming it and its field."""
    refusal = answer.first_refusal()
    if refusal is not None:
        raise FeedRefused("POST", what, 200, f"record {refusal.index} ({refusal.key}): {refusal.detail}")
    return answer
