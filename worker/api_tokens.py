"""API bearer tokens and their scopes, from ``MARGIN_CALL_API_TOKENS``."""

from __future__ import annotations

SCOPES = ("cases:open", "deposits:write", "cases:read", "cases:act")


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
