"""Serving an ASGI app (the API, the webhook receiver) on loopback inside our event loop.

Both apps also share how they refuse a request: one error shape for every
status (``{"detail": "field.path: problem"}``, the ``Problem`` model) and a cap
on the body that holds however the body arrives. A caller can then handle any
refusal the same way, and no error body can carry back what was sent, fail to
serialise it, or show our internals.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@asynccontextmanager
async def serving(app: Any, port: int, host: str = "127.0.0.1") -> AsyncIterator[uvicorn.Server]:
    """Serve until the block ends; a port already taken fails here, not later."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"could not serve on {host}:{port}")
        await asyncio.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        await task


class Problem(BaseModel):
    detail: str = Field(description="what was wrong, naming the field where there is one")


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(Problem(detail=detail).model_dump(), status_code=status, headers=headers)


class Refused(StarletteHTTPException):
    """A refusal whose ``detail`` we wrote (``field: problem``), shown as it is.

    Any other ``HTTPException`` comes from the framework (no such route, a body
    it could not decode) and is given words of ours instead of its own.
    """

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, detail, headers)


# The framework's own refusals, in our words. A body the framework could not
# decode (bytes that are not UTF-8) is a 400 there but the same caller's
# mistake as malformed JSON, which it answers 422: both are 422 here.
_FRAMEWORK: dict[int, tuple[int, str]] = {
    400: (422, "body: not valid JSON"),
    404: (404, "path: no such route"),
    405: (405, "method: not allowed on this route"),
}
_LOCATIONS = ("body", "query", "path", "header", "cookie")
_FIELD_PREFIX = re.compile(r"[A-Za-z_][\w.\-]*: ")


def naming_a_field(message: str, field: str) -> str:
    """``message`` as ``field: problem``, not ``field: other.field: problem``.

    Messages from the case, the ledger and model validators mostly name their
    field already; the one shape wants exactly one name in front.
    """
    return message if _FIELD_PREFIX.match(message) else f"{field}: {message}"


def describe_request_error(problems: Sequence[Any]) -> str:
    """``field.path: problem`` for the first of FastAPI's errors, in the words of
    ``workflows.validation.describe_validation_error``.

    The location's kind (``body``, ``query``, ``path``) is left out, so that a
    field is named as every other entry point (update validators, the CLI)
    names it: ``amount``, ``opened_since``. A problem with the body as a whole
    is named ``body``. A model validator's message that already names its
    field (``amount: must be positive``) is used as it is. The input itself,
    which FastAPI keeps beside each error, is never shown.
    """
    first = problems[0]
    location = [str(part) for part in first.get("loc", ())]
    kind = location.pop(0) if location and location[0] in _LOCATIONS else None
    kind_of_error = first.get("type")
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    if kind_of_error == "json_invalid":
        return "body: not valid JSON"
    if kind_of_error == "missing":
        message = "missing required field"
    elif kind_of_error == "extra_forbidden":
        message = "unknown field"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    if location:
        return f"{'.'.join(location)}: {message}{more}"
    return naming_a_field(message, kind or "input") + more


def one_error_shape(app: FastAPI) -> None:
    """Every error ``app`` answers, 4xx or 5xx, as a ``Problem``.

    FastAPI's own 422 is a list that repeats the input: an 8 MiB body comes
    back whole, and a ``NaN`` in it cannot be serialised, so the 422 becomes
    a 500.
    """

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        headers = dict(error.headers) if error.headers else None
        if isinstance(error, Refused):
            return problem(error.status_code, str(error.detail), headers)
        status, detail = _FRAMEWORK.get(error.status_code, (error.status_code, "request: refused"))
        return problem(status, detail, headers)

    async def validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return problem(422, describe_request_error(error.errors()))

    async def server_error(request: Request, error: Exception) -> JSONResponse:
        # Starlette logs the exception after this answer; the caller learns only that it was ours.
        return problem(500, "server: internal error")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, server_error)


_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")


class BodyLimit:
    """Refuses (413) a request whose body is larger than ``limit`` bytes, however it is sent.

    A ``Content-Length`` over the limit is refused before any byte is read. A
    chunked body has no length to check, so the bytes are counted as they
    arrive, and the request is refused as soon as they pass the limit: at most
    ``limit`` bytes (plus the server's last read) are ever held. The body is
    read up to the limit before the app sees the request, because FastAPI reads
    and parses the whole body before it resolves dependencies such as the
    bearer token check; a big body without a token is thus a 413, not read whole
    for a 401. The app then receives the body as one message.
    """

    def __init__(self, app: ASGIApp, limit: int, larger: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        # Paths (by prefix) allowed a larger body: a feed's batch of thousands of records.
        self.larger = dict(larger or {})

    def limit_for(self, scope: Scope) -> int:
        path: str = scope.get("path", "")
        return next((n for prefix, n in self.larger.items() if path.startswith(prefix)), self.limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not _CONTENT_LENGTH.fullmatch(declared) or int(declared) > limit):
            await self.too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        first: Message | None = None
        while first is None:
            message = await receive()
            if message["type"] != "http.request":
                first = message  # the client went away: the app sees that instead of a body
                break
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self.too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        pending: list[Message] = [first]

        async def replay() -> Message:
            # After the body, the server's own receive: the app may wait there for a disconnect.
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    async def too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The connection is left open: closing it with the client still sending makes
        # the kernel reset it, and the client loses the 413 it has not read yet. The
        # server then reads and drops the rest of the body; it never reaches the app.
        await problem(413, f"body: larger than {self.limit_for(scope)} bytes")(scope, receive, send)
