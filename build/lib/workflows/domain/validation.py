"""Bad input, told in one line that names the field: shared by every entry point.

Update validators, signal handlers, the CLI and the HTTP API all turn pydantic's
errors into the same ``field.path: problem`` words.
"""

from __future__ import annotations

import re
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)
_NAMED = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*): (.+)$", re.DOTALL)


def describe_validation_error(error: ValidationError) -> str:
    """``field.path: problem`` for the first error (and how many more there are)."""
    problems = error.errors(include_url=False)
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if not where:
        # A check of the whole model (an amount against its currency, say)
        # already names its field ("amount: ..."); say "input" only when it does not.
        named = _NAMED.match(message)
        where, message = (named.group(1), named.group(2)) if named else ("input", message)
    if first["type"] == "missing":
        message = "missing required field"
    elif first["type"] == "extra_forbidden":
        message = "unknown field"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{where}: {message}{more}"


class Submission(BaseModel):
    """Any JSON object, as a message handler receives it before validation.

    Handlers take this instead of the contract model so that a bad message is
    refused with a message naming the field rather than a decoding failure.
    """

    model_config = ConfigDict(extra="allow", frozen=True)


def parse(model: type[M], submission: BaseModel | dict[str, object]) -> M:
    """The submission as ``model``, or ``ValueError`` with a one-line, field-naming message."""
    data = submission.model_dump() if isinstance(submission, BaseModel) else submission
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from None
