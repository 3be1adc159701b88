"""A person reading a case in the Web UI (or ``temporal workflow show``) understands it without our code."""

from __future__ import annotations

from datetime import timedelta

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.converter import DataConverter

from tests.helpers import CaseStack, account_with, fast_policy, finish
from workflows.client import MarginCallClient
from workflows.contract import CaseState

NAMED = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    EventType.EVENT_TYPE_TIMER_STARTED,
    EventType.EVENT_TYPE_MARKER_RECORDED,  # the ledger calls, run as local activities
}


def is_version_marker(event: HistoryEvent) -> bool:
    """A ``workflow.patched`` marker: a note about the code's version, not a step of the case."""
    return event.marker_recorded_event_attributes.marker_name == "core_patch"


async def test_every_activity_and_timer_is_named_in_words(stack: CaseStack) -> None:
    api = MarginCallClient(stack.client)
    account = await account_with(stack, "story", "550")
    policy = fast_policy(
        deadline=timedelta(seconds=2),
        reminders_before_deadline=[timedelta(seconds=1)],
        pause_between_stages=timedelta(milliseconds=300),
    )
    handle = await api.open_case(account, "s-1", policy)
    outcome = await finish(handle, "story")
    assert outcome.state in (CaseState.RESTORED, CaseState.CLOSED_OUT)
    found = [
        c
        async for c in stack.client.list_workflows(
            f"MarginCallState='{outcome.state.value}' AND AccountId='{account}'"
        )
    ]
    assert [c.id for c in found] == [handle.id]

    convert = DataConverter.default.payload_converter
    description = await handle.describe()
    summary = await description.static_summary()
    assert summary and account in summary
    summaries: list[str] = []
    async for event in handle.fetch_history_events():
        if event.event_type in NAMED and not is_version_marker(event):
            assert event.user_metadata.HasField("summary"), event
            summaries.append(convert.from_payload(event.user_metadata.summary, str))
    story = "\n".join(summaries)
    for words in (
        "Open the case and read the account",
        "Notify the trader: margin_call.opened",
        "deposit deadline",
        "Liquidation stage 1: sell",
        "Record the outcome",
    ):
        assert words in story, story
