"""Failpoints: named places where a fault test can freeze a worker before killing it.

``MARGIN_CALL_FAILPOINTS="stage.after_commit=/tmp/marker"`` makes the process,
on reaching that point, create the marker file (so the test knows where it is)
and stall until it is killed. Unset (always, in production) it costs a dict
lookup.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


def _parse(text: str) -> dict[str, Path]:
    points = {}
    for entry in filter(None, text.split(";")):
        name, _, marker = entry.partition("=")
        points[name.strip()] = Path(marker.strip())
    return points


_POINTS = _parse(os.environ.get("MARGIN_CALL_FAILPOINTS", ""))


async def reach(name: str) -> None:
    marker = _POINTS.get(name)
    if marker is None:
        return
    marker.touch()
    await asyncio.sleep(3600)
