"""Who is signed in to the console: a session per login, held by the API process.

A browser cannot send a bearer header from a link, so the console asks for the
token once, checks it against the API's tokens (``scopes_of``: constant time)
and hands the browser a random session id in an HttpOnly, SameSite=Strict
cookie. The token itself never goes back to the browser and is not kept: the
session holds the scopes the token had, and what the session may do is decided
by them, as the API decides by the token's.

Each session has its own CSRF token, which every form that changes something
carries and every POST must return; SameSite=Strict already keeps the cookie
off other sites' requests, the CSRF token also covers a browser that ignores
SameSite. Each staff action form also carries a one-time form id: a form sent
twice (a double click, a reload after a slow answer) acts once.

Sessions live in memory: a restart of the API, or another replica, asks staff
to sign in again. That is the price of keeping nothing about them in the ledger.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "margin_call_console"
LIFETIME_SECONDS = 12 * 3600
# Sessions beyond this are dropped oldest first: only holders of a token can log in, but even
# they should not be able to grow the API's memory without bound.
MAX_SESSIONS = 10_000
# Form ids kept per session to recognise a form sent again; older ones are forgotten first.
MAX_FORMS = 1_000


@dataclass
class Session:
    scopes: frozenset[str]
    csrf: str
    expires: float
    forms_issued: OrderedDict[str, None] = field(default_factory=OrderedDict)
    forms_used: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def may(self, scope: str) -> bool:
        return scope in self.scopes

    def csrf_matches(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())

    def new_form(self) -> str:
        """A one-time id for a staff action form about to be shown."""
        form_id = secrets.token_urlsafe(16)
        _remember(self.forms_issued, form_id)
        return form_id

    def use_form(self, form_id: str | None) -> bool:
        """True the first time a form this session was shown comes back; False for a repeat or a stranger."""
        if form_id is None or form_id not in self.forms_issued or form_id in self.forms_used:
            return False
        _remember(self.forms_used, form_id)
        return True

    def was_used(self, form_id: str | None) -> bool:
        return form_id is not None and form_id in self.forms_used


def _remember(ids: OrderedDict[str, None], new: str) -> None:
    ids[new] = None
    while len(ids) > MAX_FORMS:
        ids.popitem(last=False)


class Sessions:
    """The signed-in sessions, by the random id their cookie carries."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def open(self, scopes: frozenset[str]) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(
            scopes=scopes, csrf=secrets.token_urlsafe(32), expires=self._clock() + LIFETIME_SECONDS
        )
        self._by_id[session_id] = session
        while len(self._by_id) > MAX_SESSIONS:
            self._by_id.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._by_id[session_id]
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)
