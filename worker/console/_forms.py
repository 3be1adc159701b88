"""The console's forms as the contract's staff actions, or a refusal that names the field.

Forms arrive urlencoded (the only kind a plain HTML form without files sends),
read here with the standard library rather than a multipart parser. A blank
field is a missing one, so an empty operator is "operator: missing required
field", as the API and the CLI say it; everything else is checked by the
contract's own models (``StaffAction``, ``DeadlineExtension``, ``Waiver``), so
the console accepts exactly what the other entry points accept.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError

from workflows.contract import DeadlineExtension, StaffAction, Waiver
from workflows.domain.validation import describe_validation_error

M = TypeVar("M", bound=BaseModel)

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 20
# "by" and "for" are seconds: at most 30 days, the longest any policy lets a deadline or a waive run.
MAX_SECONDS = 30 * 24 * 3600


class FormError(ValueError):
    """A form the console refuses: ``field: problem``, shown beside the form, nothing sent to the case."""


def read_form(content_type: str | None, body: bytes) -> dict[str, str]:
    """The fields of an urlencoded body; a field sent twice or a body that is no form is refused."""
    if (content_type or "").split(";")[0].strip().lower() != FORM_TYPE:
        raise FormError(f"body: expected a form ({FORM_TYPE})")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise FormError("body: not a form this console sends") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise FormError(f"{name[:40]}: sent twice")
        fields[name] = value
    return fields


def _given(form: dict[str, str], name: str) -> str | None:
    value = form.get(name, "").strip()
    return value or None


def _seconds(form: dict[str, str], name: str) -> int | None:
    raw = _given(form, name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_SECONDS:
        raise FormError(f"{name}: a whole number of seconds from 1 to {MAX_SECONDS}")
    return int(raw)


def _model(model: type[M], fields: dict[str, Any]) -> M:
    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as error:
        raise FormError(describe_validation_error(error)) from None


def staff_action(form: dict[str, str]) -> StaffAction:
    """Force liquidation: who and why."""
    return _model(StaffAction, {"operator": _given(form, "operator"), "reason": _given(form, "reason")})


def deadline_extension(form: dict[str, str], current_deadline: datetime | None) -> DeadlineExtension:
    """A new deadline given outright (a time with a zone) or ``by`` seconds past the current one."""
    new_deadline = _given(form, "new_deadline")
    by = _seconds(form, "by")
    if new_deadline is not None and by is not None:
        raise FormError("new_deadline: give a new deadline or a number of seconds (by), not both")
    if new_deadline is None and by is None:
        raise FormError("new_deadline: give a new deadline, or a number of seconds (by) to add")
    fields: dict[str, Any] = {"operator": _given(form, "operator"), "reason": _given(form, "reason")}
    if by is not None:
        if current_deadline is None:
            raise FormError("state: this case has no deadline to extend")
        fields["new_deadline"] = current_deadline + timedelta(seconds=by)
    else:
        fields["new_deadline"] = new_deadline
    return _model(DeadlineExtension, fields)


def waiver(form: dict[str, str], now: datetime | None = None) -> Waiver:
    """A waive, holding until a time (with a zone), for a number of seconds, or until the account recovers."""
    until = _given(form, "until")
    hold = _seconds(form, "for")
    if until is not None and hold is not None:
        raise FormError("until: give a time or a number of seconds (for), not both")
    fields: dict[str, Any] = {"operator": _given(form, "operator"), "reason": _given(form, "reason")}
    if hold is not None:
        fields["until"] = (now or datetime.now(UTC)) + timedelta(seconds=hold)
    else:
        fields["until"] = until
    return _model(Waiver, fields)
