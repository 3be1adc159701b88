"""API bearer tokens and their scopes, from ``MARGIN_CALL_API_TOKENS``."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

# ``feed:write``: the exchange's feeds (marks, trades, movements, withdrawals, reconciliation);
# ``admin``: reference data (assets, instruments, accounts) and instrument halts.
SCOPES = ("cases:open", "deposits:write", "cases:read", "cases:act", "feed:write", "admin")


class TokenError(ValueError):
    pass


def parse_tokens(text: str) -> dict[str, frozenset[str]]:
    """``token=scope,scope;token2=scope`` (``MARGIN_CALL_API_TOKENS``) as token -> scopes."""
    tokens: dict[str, frozenset[str]] = {}
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        token, _, scopes = entry.partition("=")
        wanted = frozenset(s.strip() for s in scopes.split(",") if s.strip())
        unknown = wanted - set(SCOPES)
        if len(token) < 16 or unknown or not wanted:
            raise TokenError(
                "MARGIN_CALL_API_TOKENS: each entry is token=scope,... with a token of 16+ characters"
                f" and scopes from {', '.join(SCOPES)}"
            )
        tokens[token] = wanted
    return tokens


def scopes_of(tokens: Mapping[str, frozenset[str]], presented: str) -> frozenset[str] | None:
    """The scopes of the token ``presented``, or None, in time that does not depend on which.

    A dict lookup (or ``==``) returns sooner the earlier the first wrong
    character, which lets a caller guess a token a character at a time. Every
    configured token is compared, each with ``hmac.compare_digest`` over
    SHA-256 digests: equal lengths, so not even a token's length shows.
    """
    digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
    found: frozenset[str] | None = None
    for token, scopes in tokens.items():
        if hmac.compare_digest(digest, hashlib.sha256(token.encode()).digest()):
            found = scopes
    return found
