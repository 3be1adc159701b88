"""Failpoints: named places where a fault test can freeze a worker before killing it.

``MARGIN_CALL_FAILPOINTS="stage.after_commit=/tmp/marker"`` makes the process,
on reaching that point, create the marker file (so the test knows where it is)
and stall until it is killed; a test in the same process can instead run a
hook there (``hooked``). Unset (always, in production) it costs two dict
lookups.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _parse(text: str) -> dict[str, Path]:
    points = {}
    for entry in filter(None, text.split(";")):
        name, _, marker = entry.partition("=")
        points[name.strip()] = Path(marker.strip())
    return points


_POINTS = _parse(os.environ.get("MARGIN_CALL_FAILPOINTS", ""))


_HOOKS: dict[str, Callable[[], Awaitable[None]]] = {}


@contextmanager
def hooked(name: str, hook: Callable[[], Awaitable[None]]) -> Iterator[None]:
    """Run ``hook`` when this process reaches ``name``: a test's way to act at that exact moment.

    In-process, for tests that drive an activity directly (for example, write
    a new mark between a stage's breach check and its fills).
    """
    _HOOKS[name] = hook
    try:
        yield
    finally:
        _HOOKS.pop(name, None)


async def reach(name: str) -> None:
    hook = _HOOKS.get(name)
    if hook is not None:
        await hook()
    marker = _POINTS.get(name)
    if marker is None:
        return
    marker.touch()
    await asyncio.sleep(3600)
