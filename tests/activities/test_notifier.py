"""The notifier against a real HTTP receiver: signatures, and what each failure means."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.notifier import NotifierActivities
from worker.config import DEV_WEBHOOK_SECRET
from worker.receiver import Behaviour, WebhookReceiver
from workflows.contract import CaseState, Notice, NoticeKind


def notice(notice_id: str) -> Notice:
    return Notice(
        notice_id=notice_id,
        kind=NoticeKind.OPENED,
        case_id="acct/call",
        account_id="acct",
        state=CaseState.NOTIFIED,
        occurred_at=datetime.now(UTC),
        message="deposit 48 USDT",
    )


@pytest_asyncio.fixture(loop_scope="session")
async def hook(receiver: tuple[WebhookReceiver, str]) -> AsyncIterator[tuple[WebhookReceiver, str]]:
    receiver[0].behaviour = Behaviour()
    yield receiver
    receiver[0].behaviour = Behaviour()


async def deliver(url: str, item: Notice, secret: str = DEV_WEBHOOK_SECRET, timeout: float = 5.0) -> object:
    async with httpx.AsyncClient(timeout=timeout) as http:
        notifier = NotifierActivities(http, url, secret)
        return await ActivityEnvironment().run(notifier.deliver_notice, item)


async def test_signed_notice_is_verified_and_deduplicated_by_id(hook: tuple[WebhookReceiver, str]) -> None:
    receiver, url = hook
    first = await deliver(url, notice("n-1"))
    again = await deliver(url, notice("n-1"))
    assert first.delivered and again.delivered
    assert list(receiver.notices).count("n-1") == 1
    assert receiver.notices["n-1"]["message"] == "deposit 48 USDT"


async def test_wrong_secret_is_refused_for_good(hook: tuple[WebhookReceiver, str]) -> None:
    _, url = hook
    with pytest.raises(ApplicationError) as refused:
        await deliver(url, notice("n-2"), secret="whsec_" + "d3Jvbmctc2VjcmV0")
    assert refused.value.non_retryable and refused.value.type == "NoticeRefused"


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retried(hook: tuple[WebhookReceiver, str], status: int) -> None:
    receiver, url = hook
    receiver.behaviour = Behaviour(status=status)
    with pytest.raises(ApplicationError) as failed:
        await deliver(url, notice(f"n-{status}"))
    assert not failed.value.non_retryable and failed.value.type == "NotifierUnavailable"


async def test_429_retries_after_the_delay_the_receiver_asks(hook: tuple[WebhookReceiver, str]) -> None:
    receiver, url = hook
    receiver.behaviour = Behaviour(status=429, retry_after=7)
    with pytest.raises(ApplicationError) as failed:
        await deliver(url, notice("n-429"))
    assert not failed.value.non_retryable and failed.value.next_retry_delay == timedelta(seconds=7)


async def test_410_gone_is_not_retried(hook: tuple[WebhookReceiver, str]) -> None:
    receiver, url = hook
    receiver.behaviour = Behaviour(status=410)
    with pytest.raises(ApplicationError) as refused:
        await deliver(url, notice("n-410"))
    assert refused.value.non_retryable


async def test_a_hanging_receiver_times_out(hook: tuple[WebhookReceiver, str]) -> None:
    receiver, url = hook
    receiver.behaviour = Behaviour(delay_seconds=3)
    started = asyncio.get_running_loop().time()
    with pytest.raises(httpx.TimeoutException):
        await deliver(url, notice("n-hang"), timeout=0.5)
    assert asyncio.get_running_loop().time() - started < 2.5
