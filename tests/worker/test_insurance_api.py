"""The insurance fund over real HTTP (scope ``admin``), through ``ApiClient`` as the exchange side calls it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from tests.helpers import TEST_POLICIES, auth, free_port
from worker.api import create_app
from worker.exchange.api import ApiClient, ApiError
from worker.serving import serving
from workflows.client import MarginCallClient

ADMIN, FEED = "admin-token-0123456789", "feed-token-0123456789"
TOKENS = {ADMIN: frozenset({"admin"}), FEED: frozenset({"feed:write"})}
SEEDED = Decimal("1000")  # what the venue fixture paid in


@pytest_asyncio.fixture(loop_scope="session")
async def api_url(venue: asyncpg.Pool) -> AsyncIterator[str]:
    # The fund's routes never ask Temporal: a client that connects only when used is enough.
    cases = MarginCallClient(await Client.connect("127.0.0.1:1", lazy=True))
    port = free_port()
    async with serving(create_app(cases, venue, TOKENS, TEST_POLICIES), port):
        yield f"http://127.0.0.1:{port}"


async def test_a_contribution_is_booked_once_and_names_its_operator(
    venue: asyncpg.Pool, api_url: str
) -> None:
    async with ApiClient.connect(api_url, ADMIN) as api:
        assert (await api.insurance_fund("USDT")).balance == SEEDED
        booked = await api.fund_insurance("capital-2027", "USDT", Decimal("250.5"), "treasurer")
        assert (booked.booked, booked.balance, booked.amount) == (True, Decimal("1250.5"), Decimal("250.5"))
        again = await api.fund_insurance("capital-2027", "USDT", Decimal("250.5"), "treasurer")
        assert (again.booked, again.balance) == (False, Decimal("1250.5"))
        with pytest.raises(ApiError) as conflict:
            await api.fund_insurance("capital-2027", "USDT", Decimal("999"), "treasurer")
        assert (conflict.value.status, conflict.value.detail) == (
            409,
            "contribution_id: already used for another contribution",
        )
        assert (await api.insurance_fund("USDT")).balance == Decimal("1250.5")
    reference = await venue.fetchval(
        "SELECT reference FROM transfers WHERE transfer_id = 'insurance_fund:capital-2027'"
    )
    assert reference == "paid in by treasurer"


async def test_the_fund_takes_the_admin_scope_and_refuses_bad_money(
    venue: asyncpg.Pool, api_url: str
) -> None:
    body = {"contribution_id": "c-1", "asset": "USDT", "amount": "10", "operator": "ops"}
    async with httpx.AsyncClient(base_url=api_url) as http:
        route = "/v1/insurance-fund/contributions"
        assert (await http.post(route, json=body)).status_code == 401
        no_admin = await http.post(route, json=body, headers=auth(FEED))
        assert no_admin.status_code == 403 and no_admin.json() == {
            "detail": "authorization: this token lacks the admin scope"
        }
        assert (await http.get("/v1/insurance-fund/USDT", headers=auth(FEED))).status_code == 403
        for amount, problem in (("0", "amount:"), ("1.0000001", "amount:"), ("NaN", "amount:")):
            refused = await http.post(route, json={**body, "amount": amount}, headers=auth(ADMIN))
            assert refused.status_code == 422 and refused.json()["detail"].startswith(problem), refused.text
        unlisted = await http.post(route, json={**body, "asset": "EUR"}, headers=auth(ADMIN))
        assert unlisted.status_code == 422 and unlisted.json() == {
            "detail": "asset: asset 'EUR' is not listed"
        }
        unknown = await http.get("/v1/insurance-fund/EUR", headers=auth(ADMIN))
        assert unknown.status_code == 404 and unknown.json()["detail"].startswith("asset:")
    # Nothing of the refused requests was written.
    assert (
        await venue.fetchval("SELECT count(*) FROM transfers WHERE transfer_id LIKE 'insurance_fund:%'") == 0
    )
