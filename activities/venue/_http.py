"""``HttpVenue``: the port over the exchange's order gateway (httpx, JSON).

``POST {url}/orders`` with the order; the gateway answers 200 with the order's
report (a new order, or the one it already has under that client id; a
rejection is a report too, with status ``rejected``). Anything that is not such
an answer (connection refused, timeout, any other HTTP status, a body that is
not a report) is ``VenueUnavailable``: the order may exist, so the caller
resends the same id, never a new one.
"""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from activities.venue._port import OrderReport, VenueOrder, VenueUnavailable

# An IOC order is answered in milliseconds; past this the gateway is in trouble.
ORDER_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
JSON = {"content-type": "application/json"}


def venue_http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=ORDER_TIMEOUT)


class HttpVenue:
    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url.rstrip("/")

    async def place(self, order: VenueOrder) -> OrderReport:
        try:
            response = await self.http.post(
                f"{self.url}/orders", content=order.model_dump_json(), headers=JSON
            )
        except httpx.HTTPError as error:
            raise VenueUnavailable(f"order gateway {self.url}: {type(error).__name__} {error}") from error
        if response.status_code != 200:
            # Only an answer about the order is final. Any other status (a 4xx for an id it has
            # seen, an expired key, a wrong path, a redirect, a 5xx) says nothing of whether the
            # order exists: the same id is sent again later, never a new order.
            raise VenueUnavailable(
                f"order gateway {self.url}: HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            report = OrderReport.model_validate_json(response.content)
        except ValidationError as error:
            raise VenueUnavailable(
                f"order gateway {self.url}: an answer that is not a report: {error}"
            ) from error
        if report.client_order_id != order.client_order_id:
            raise VenueUnavailable(
                f"order gateway answered for {report.client_order_id}, not {order.client_order_id}"
            )
        return report
