"""A small webhook receiver for the embedded stack and the tests.

It verifies each notice's Standard Webhooks signature, keeps what it received
(deduplicated by ``webhook-id``, as a real receiver must), and can be told to
misbehave (status codes, delays) so that tests see a real failing server.

Whatever it cannot verify (a body that is not UTF-8, a missing or malformed
signature header) is a 401, never a 500: a sender retries a 5xx, and an
attacker must not learn more from a malformed header than from a wrong one.
Its errors have the API's one shape (``worker.serving.Problem``).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from worker.serving import BodyLimit, one_error_shape, problem

# Notices are a few hundred bytes; a megabyte is any real one with room to spare.
MAX_NOTICE_BYTES = 1024 * 1024


@dataclass
class Behaviour:
    """What the receiver answers: normally 204; tests set failures."""

    status: int = 204
    delay_seconds: float = 0.0
    retry_after: int | None = None


@dataclass
class WebhookReceiver:
    secret: str
    journal: Path | None = None
    behaviour: Behaviour = field(default_factory=Behaviour)
    notices: dict[str, dict[str, Any]] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)  # notice id -> time.time() of first receipt
    waiters: dict[str, asyncio.Future[float]] = field(default_factory=dict)

    def arrival(self, notice_id: str) -> asyncio.Future[float]:
        """A future resolved with the receipt time when ``notice_id`` first arrives."""
        future = self.waiters.setdefault(notice_id, asyncio.get_running_loop().create_future())
        if notice_id in self.received_at and not future.done():
            future.set_result(self.received_at[notice_id])
        return future

    attempts: int = 0
    rejected_signatures: int = 0

    def app(self) -> FastAPI:
        webhook = Webhook(self.secret)
        app = FastAPI(title="margin call notice receiver")
        one_error_shape(app)
        app.add_middleware(BodyLimit, limit=MAX_NOTICE_BYTES)

        @app.post("/webhooks")
        async def receive(request: Request) -> Response:
            self.attempts += 1
            try:
                # The signature is over text; bytes that are not UTF-8 cannot have been signed.
                body = (await request.body()).decode("utf-8")
                # The library unpacks the header without checking its form: "v1" or
                # "v1,a,b" raise ValueError, bad base64 binascii.Error (a ValueError).
                webhook.verify(body, dict(request.headers), json_parse=False)
            except (UnicodeDecodeError, WebhookVerificationError, ValueError):
                self.rejected_signatures += 1
                return problem(401, "webhook-signature: could not be verified")
            try:
                notice = json.loads(body)
            except ValueError:
                notice = None
            if not isinstance(notice, dict):  # signed by us, so our bug; still no 500 to retry
                return problem(422, "body: not a JSON object")
            if self.behaviour.delay_seconds:
                await asyncio.sleep(self.behaviour.delay_seconds)
            if self.behaviour.status >= 300:
                headers = {}
                if self.behaviour.retry_after is not None:
                    headers["retry-after"] = str(self.behaviour.retry_after)
                return problem(self.behaviour.status, "receiver: told to fail", headers)
            notice_id = request.headers["webhook-id"]
            if notice_id not in self.notices:
                self.notices[notice_id] = notice
                self.received_at[notice_id] = time.time()
                waiter = self.waiters.get(notice_id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(self.received_at[notice_id])
                if self.journal is not None:
                    with self.journal.open("a") as out:
                        out.write(json.dumps(notice) + "\n")
            return Response(status_code=204)

        @app.get("/notices")
        async def listing() -> list[dict[str, Any]]:
            return list(self.notices.values())

        return app

    def of_kind(self, kind: str, case_id: str | None = None) -> list[dict[str, Any]]:
        return [
            n
            for n in self.notices.values()
            if n["kind"] == kind and (case_id is None or n["case_id"] == case_id)
        ]
