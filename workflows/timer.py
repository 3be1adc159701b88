"""``DeadlineTimer``: the one timer a case keeps for its deposit deadline or its next reminder.

Pulled out of the workflow as samples-python's ``updatable_timer`` pulls out
``UpdatableTimer``: the case says when it next wants to wake (``wake_at``), the
timer keeps at most one Temporal timer for that instant, and the case reads
``rang``. Unlike ``UpdatableTimer.sleep`` the timer does not block: the case
waits for the timer *or* a deposit, the risk monitor or staff in one
``wait_condition``, so the timer runs in its own task and only raises a flag.

Why not a new timer per wake-up: a deposit that does not cure wakes the case,
and a cancelled-and-restarted timer costs history events for nothing. Only a
new instant (an extension, or the next reminder after one fired) replaces the
timer. Deterministic: it uses only ``workflow.sleep`` and ``workflow.now``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow


class DeadlineTimer:
    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._at: datetime | None = None
        self.rang = False

    def wake_at(self, at: datetime | None, label: str) -> None:
        """Wake at ``at`` (None: never); ``label`` names the timer in the Web UI.

        The same instant again keeps the running timer; another one cancels it
        (a history event) and starts a new one.
        """
        if at == self._at and not self.rang:
            return
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._at, self.rang, self._task = at, False, None
        if at is not None:
            self._task = asyncio.create_task(self._ring_at(at, label))

    def stop(self) -> None:
        """No more wake-ups (liquidation has started): a timer still running is cancelled."""
        self.wake_at(None, "")

    async def _ring_at(self, at: datetime, label: str) -> None:
        await workflow.sleep(max(at - workflow.now(), timedelta(milliseconds=1)), summary=label)
        self.rang = True
