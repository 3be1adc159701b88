"""``margin-call risk``: a portfolio as JSON on stdin, its figures as JSON on stdout."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from pydantic import ValidationError

from activities.risk import assess
from workflows.models import Portfolio
from workflows.validation import describe_validation_error

MAX_INPUT = 1_000_000


def run(stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    text = stdin.read(MAX_INPUT + 1)
    if len(text) > MAX_INPUT:
        print(f"error: input: larger than {MAX_INPUT} characters", file=stderr)
        return 2
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        print(
            f"error: input: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})",
            file=stderr,
        )
        return 2
    try:
        portfolio = Portfolio.model_validate(document)
    except ValidationError as error:
        print(f"error: {describe_validation_error(error)}", file=stderr)
        return 2
    figures = assess(portfolio).model_dump(
        mode="json",
        include={
            "equity": True,
            "maintenance_margin": True,
            "initial_margin": True,
            "shortfall": True,
            "margin_ratio": True,
            "positions": {
                "__all__": {
                    "instrument",
                    "notional",
                    "maintenance_margin",
                    "liquidation_price",
                    "bankruptcy_price",
                }
            },
        },
    )
    json.dump(figures, stdout, indent=2)
    stdout.write("\n")
    return 0
