"""The staff console: a small web console served by the API under ``/console/``.

The Temporal Web UI shows a case's history, but its list cannot show a
case's state, shortfall or deadline, and every outcome reads as the same
COMPLETED. Support staff get here the list of cases (state, shortfall,
deadline, stage, outcome, hold; filtered and sorted on the server), a case
page (status, timeline, stages and fills, refreshed while the case runs, links
to the case in the Temporal UI and to its statement) and the staff actions
(extend, waive, force) with operator and reason.

Server-rendered (Jinja2), with one stylesheet and one small script served
from here, so it works with no internet. Behind the API's own tokens and
scopes: the token is given once on a sign-in form, and the browser holds a
session cookie (``_sessions``). Inside: ``_routes`` (the routes),
``_case_page`` (one case and its actions), ``_listing`` (the list's filters,
sorting and rows), ``_forms`` (forms as the contract's staff actions),
``_pages`` (templates, state words and colours, headers), ``_sessions``,
``_statement`` (the case's statement under the session).
"""

from __future__ import annotations

from worker.console._routes import PREFIX, console_routes
from worker.console._sessions import Sessions

__all__ = ["PREFIX", "Sessions", "console_routes"]
