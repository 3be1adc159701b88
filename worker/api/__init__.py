"""HTTP API for exchange services that do not use a Temporal SDK (``margin-call api``).

Bearer tokens carry scopes (``cases:open``, ``deposits:write``, ``cases:read``,
``cases:act``, ``feed:write`` for the exchange's feeds, ``admin`` for reference data,
halts and the insurance fund). Every body is a pydantic model, so a bad one is a 422 naming the
field; nothing is written before the request has been validated and the
account found.

Every error, 4xx or 5xx, is one ``Problem``: ``{"detail": "field.path: problem"}``,
a single string that names the field (``amount``, ``opened_since``,
``account_id``; a problem with the body as a whole names ``body``). It never
repeats what was sent nor another account's data, and never shows internals
(see ``worker.serving.one_error_shape``).

Inside: ``_app`` (the factory and health check), a module of routes per
resource (``_cases``, ``_deposits``, ``_staff``, ``_feeds``, ``_instruments``,
``_insurance``, ``_reports``), ``_auth`` (scopes per
route), ``_problems`` (refusals in our words) and ``_services`` (what the
routes work with). The ledger reads the routes make before asking a case
(``account_exists``, ``settlement_currency``, ``closed_case_state``) are the
ledger package's.
"""

from __future__ import annotations

from worker.api._app import DEFAULT_TEMPORAL_UI_URL, MAX_BODY_BYTES, MAX_FEED_BODY_BYTES, create_app
from worker.api_tokens import SCOPES
from worker.serving import Problem

__all__ = [
    "DEFAULT_TEMPORAL_UI_URL",
    "MAX_BODY_BYTES",
    "MAX_FEED_BODY_BYTES",
    "SCOPES",
    "Problem",
    "create_app",
]
