"""Bearer tokens and their scopes: a route names the scope it needs, and nothing else of auth.

Which scopes a token carries is ``worker.api_tokens``' business (parsed from
``MARGIN_CALL_API_TOKENS``, compared in constant time); here a missing or
wrong token is a 401 and a token without the route's scope a 403, both in the
one error shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import Depends, params
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from worker.api_tokens import scopes_of
from worker.serving import Refused

# Module level: FastAPI resolves the (string) annotations of dependencies in module globals.
BEARER = HTTPBearer(auto_error=False)

Check = Callable[[HTTPAuthorizationCredentials | None], Awaitable[None]]


class Scopes:
    """The configured tokens, and a dependency per scope that refuses a request without it."""

    def __init__(self, tokens: Mapping[str, frozenset[str]]) -> None:
        self.tokens = tokens

    def require(self, scope: str) -> Check:
        tokens = self.tokens

        async def check(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
        ) -> None:
            granted = scopes_of(tokens, credentials.credentials) if credentials else None
            if granted is None:
                raise Refused(
                    401, "authorization: missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
                )
            if scope not in granted:
                raise Refused(403, f"authorization: this token lacks the {scope} scope")

        return check

    def needs(self, scope: str) -> list[params.Depends]:
        """``dependencies=`` for a route that needs ``scope``."""
        return [Depends(self.require(scope))]
