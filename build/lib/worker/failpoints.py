"""Failpoints: named places where a fault test freezes a worker before killing it.

``MARGIN_CALL_FAILPOINTS="stage.after_commit=/tmp/marker"`` makes the worker,
on reaching that checkpoint of a liquidation stage, create the marker file (so
the test knows where it is) and stall until it is killed. The worker passes
``from_environment()`` to ``LedgerActivities`` as its checkpoint; unset (always,
in production) that is the ledger's no-op. A test in the same process passes its
own checkpoint to ``LedgerActivities`` instead.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from activities.ledger import Checkpoint, no_checkpoint

ENVIRONMENT = "MARGIN_CALL_FAILPOINTS"


def parse(text: str) -> dict[str, Path]:
    """``name=marker;name=marker`` as {checkpoint name: marker file}."""
    points = {}
    for entry in filter(None, text.split(";")):
        name, _, marker = entry.partition("=")
        points[name.strip()] = Path(marker.strip())
    return points


def freezing_at(points: dict[str, Path]) -> Checkpoint:
    """A checkpoint that, at each named point, touches its marker and stalls for an hour (until killed)."""

    async def reach(name: str) -> None:
        marker = points.get(name)
        if marker is None:
            return
        marker.touch()
        await asyncio.sleep(3600)

    return reach


def from_environment() -> Checkpoint:
    """The failpoints ``MARGIN_CALL_FAILPOINTS`` names, or the ledger's no-op when it names none."""
    points = parse(os.environ.get(ENVIRONMENT, ""))
    return freezing_at(points) if points else no_checkpoint
