"""The webhook receiver over real HTTP: what it cannot verify is a 401 in the one error shape, never a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio
from standardwebhooks.webhooks import Webhook

from tests.helpers import free_port
from worker.config import DEV_WEBHOOK_SECRET
from worker.receiver import MAX_NOTICE_BYTES, WebhookReceiver
from worker.serving import serving

NOTICE = json.dumps({"kind": "opened", "case_id": "acct/call", "notice_id": "n-1"})
UNVERIFIABLE = {"detail": "webhook-signature: could not be verified"}


def signed(body: str | bytes, notice_id: str = "n-1", **overrides: str) -> dict[str, str]:
    """Standard Webhooks headers for ``body`` (bytes signed as they are, valid UTF-8 or not)."""
    now = datetime.now(UTC)
    timestamp = str(int(now.timestamp()))
    data = body if isinstance(body, bytes) else body.encode()
    key = base64.b64decode(DEV_WEBHOOK_SECRET.removeprefix("whsec_") + "==")
    digest = hmac.new(key, f"{notice_id}.{timestamp}.".encode() + data, hashlib.sha256).digest()
    headers = {
        "webhook-id": notice_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{base64.b64encode(digest).decode()}",
        "content-type": "application/json",
    }
    if isinstance(body, str):  # the library's own signature, the same bytes
        assert headers["webhook-signature"] == Webhook(DEV_WEBHOOK_SECRET).sign(notice_id, now, body)
    return {**headers, **overrides}


@pytest_asyncio.fixture(loop_scope="session")
async def hook() -> AsyncIterator[tuple[WebhookReceiver, httpx.AsyncClient]]:
    receiver = WebhookReceiver(secret=DEV_WEBHOOK_SECRET)
    port = free_port()
    async with (
        serving(receiver.app(), port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        yield receiver, client


async def test_a_signed_notice_is_kept_once(hook: tuple[WebhookReceiver, httpx.AsyncClient]) -> None:
    receiver, client = hook
    for _ in range(2):
        response = await client.post("/webhooks", content=NOTICE, headers=signed(NOTICE))
        assert response.status_code == 204, response.text
    assert list(receiver.notices) == ["n-1"] and receiver.rejected_signatures == 0


UNVERIFIABLE_REQUESTS: list[tuple[str, bytes, dict[str, str]]] = [
    ("not utf-8, signed", b'{"kind": "\xff"}', signed(b'{"kind": "\xff"}')),
    ("not utf-8, unsigned", b"\xff\xfe", signed(NOTICE)),
    ("version only", NOTICE.encode(), signed(NOTICE, **{"webhook-signature": "v1"})),
    ("three parts", NOTICE.encode(), signed(NOTICE, **{"webhook-signature": "v1,a,b"})),
    ("garbage base64", NOTICE.encode(), signed(NOTICE, **{"webhook-signature": "v1,!!!not*base64"})),
    ("bad padding", NOTICE.encode(), signed(NOTICE, **{"webhook-signature": "v1,abc"})),
    ("empty", NOTICE.encode(), signed(NOTICE, **{"webhook-signature": ""})),
    ("other version", NOTICE.encode(), signed(NOTICE, **{"webhook-signature": "v2,AAAA"})),
    ("wrong signature", NOTICE.encode(), signed(NOTICE, **{"webhook-signature": "v1,AAAA"})),
    ("signed other body", NOTICE.encode(), signed(NOTICE.replace("n-1", "n-2"))),
    ("nan timestamp", NOTICE.encode(), signed(NOTICE, **{"webhook-timestamp": "nan"})),
    ("huge timestamp", NOTICE.encode(), signed(NOTICE, **{"webhook-timestamp": "1e400"})),
    ("no id", NOTICE.encode(), {k: v for k, v in signed(NOTICE).items() if k != "webhook-id"}),
]


@pytest.mark.parametrize(
    ("label", "body", "headers"), UNVERIFIABLE_REQUESTS, ids=[r[0] for r in UNVERIFIABLE_REQUESTS]
)
async def test_what_cannot_be_verified_is_a_401_in_the_one_shape(
    hook: tuple[WebhookReceiver, httpx.AsyncClient], label: str, body: bytes, headers: dict[str, str]
) -> None:
    receiver, client = hook
    rejected = receiver.rejected_signatures
    response = await client.post("/webhooks", content=body, headers=headers)
    assert response.status_code == 401, (label, response.status_code, response.text)
    assert response.json() == UNVERIFIABLE
    assert receiver.rejected_signatures == rejected + 1 and not receiver.notices


async def test_signed_but_not_a_json_object_is_refused_and_not_kept(
    hook: tuple[WebhookReceiver, httpx.AsyncClient],
) -> None:
    receiver, client = hook
    for body in ("not json", "[1, 2]", "NaN"):
        response = await client.post("/webhooks", content=body, headers=signed(body))
        assert response.status_code == 422 and response.json() == {"detail": "body: not a JSON object"}
    assert not receiver.notices and receiver.rejected_signatures == 0


async def test_an_oversized_notice_is_refused_unread(hook: tuple[WebhookReceiver, httpx.AsyncClient]) -> None:
    receiver, client = hook

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(2 * MAX_NOTICE_BYTES // 65536):
            yield b" " * 65536

    response = await client.post("/webhooks", content=chunked(), headers=signed(NOTICE))
    assert response.status_code == 413 and response.json()["detail"].startswith("body: ")
    assert receiver.attempts == 0 and not receiver.notices
