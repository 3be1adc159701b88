"""The venue port: where a liquidation stage's orders go, chosen by configuration.

``ledger`` (no venue object: the ledger's backstop takes the positions over at
the mark with the policy's slippage, the behaviour before this port) or
``http`` (``HttpVenue``: a reduce-only immediate-or-cancel limit order per
instrument to the exchange's order gateway). The ledger's stage code calls the
port (``Venue.place``) and books what it reports; this package knows nothing of
the ledger's tables.
"""

from __future__ import annotations

from activities.venue._http import HttpVenue, venue_http_client
from activities.venue._port import (
    ORDER_REJECTED,
    VENUE_REPORT_INVALID,
    VENUE_UNAVAILABLE,
    OrderReport,
    OrderStatus,
    Venue,
    VenueOrder,
    VenueUnavailable,
    client_order_id,
    report_problem,
)

__all__ = [
    "ORDER_REJECTED",
    "VENUE_REPORT_INVALID",
    "VENUE_UNAVAILABLE",
    "HttpVenue",
    "OrderReport",
    "OrderStatus",
    "Venue",
    "VenueOrder",
    "VenueUnavailable",
    "client_order_id",
    "report_problem",
    "venue_http_client",
]
