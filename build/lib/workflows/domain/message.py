"""The vocabulary every message is built from: strict records and bounded ids.

Ids travel into workflow ids, SQL keys and webhook headers, so they are printable
and bounded here, once, for every entry point.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
)

# Ids travel into workflow ids, SQL keys and webhook headers: printable, bounded.
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/-]+$")]
# A call id may not hold "/": the case id is "<account>/<call>", split at its last "/",
# so two different (account, call) pairs can never name the same case.
CallId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")]
# "<account>/<call>": as long as both parts together, never truncated.
CaseId = Annotated[str, StringConstraints(min_length=3, max_length=257, pattern=r"^[A-Za-z0-9._:@/-]+$")]
# Operators and reasons are free text, but bounded and never blank.
FreeText = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]


class Message(BaseModel):
    """Strict by default: an unknown field is a caller's mistake worth naming."""

    model_config = ConfigDict(extra="forbid", frozen=True)
