"""The ceiling workflow: the least a workflow can be, one trivial activity.

Its own module, importing only temporalio, because the workflow sandbox
re-imports a workflow's module on every run.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="ceiling_activity")
async def ceiling_activity(n: int) -> int:
    return n


@workflow.defn(name="CeilingWorkflow")
class CeilingWorkflow:
    """The least a workflow can be: one trivial activity. The engine's ceiling on this machine."""

    @workflow.run
    async def run(self, n: int) -> int:
        result: int = await workflow.execute_activity(
            "ceiling_activity", n, start_to_close_timeout=timedelta(seconds=60)
        )
        return result
