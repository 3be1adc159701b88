"""The staff console in a real browser: Debian's Chromium, driven by Playwright, against the API on loopback.

The cases are real (started on the test stack's Temporal dev server, worker
and ledger); what the console does to them is checked through the client.
Screenshots of the list, a case page and its statement go to build/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from playwright.async_api import Browser, Page, Request, Route, async_playwright

from activities.ledger import PostgresDeposits
from tests.helpers import (
    TEST_POLICIES,
    TOKENS,
    CaseStack,
    account_with,
    fast_policy,
    free_port,
    until,
    wait_state,
)
from worker.api import create_app
from worker.api._auth import Scopes
from worker.api._services import Services
from worker.console import Sessions, console_routes
from worker.console._sessions import COOKIE
from worker.serving import serving
from workflows.client import MarginCallClient
from workflows.contract import CaseState, CaseStatus, Deposit, Waiver

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = os.environ.get("MARGIN_CALL_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TEMPORAL_UI = "http://127.0.0.1:8233"
READ = "read-token-0123456789"  # cases:read only
ALL = "all-token-0123456789"  # cases:read and cases:act
ACT_ONLY = "act-token-0123456789"  # cases:act without cases:read
D = Decimal


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's (apt-get install -y chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def app(stack: CaseStack) -> FastAPI:
    return create_app(
        MarginCallClient(stack.client), stack.pool, TOKENS, TEST_POLICIES, temporal_ui_url=TEMPORAL_UI
    )


@pytest_asyncio.fixture(loop_scope="session")
async def console(app: FastAPI) -> AsyncIterator[str]:
    """The API's base URL, serving the console on loopback."""
    port = free_port()
    async with serving(app, port):
        yield f"http://127.0.0.1:{port}"


class Offline:
    """Every request a page makes; any that leaves this machine is refused and kept here for the test to fail on."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.outside: list[str] = []

    async def route(self, route: Route, request: Request) -> None:
        self.requests.append(request.url)
        if urlsplit(request.url).hostname != "127.0.0.1":
            self.outside.append(request.url)
            await route.abort()
            return
        await route.continue_()


async def new_page(browser: Browser, offline: Offline | None = None) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.route("**/*", (offline or Offline()).route)
    return await context.new_page()


async def sign_in(browser: Browser, base: str, token: str, path: str = "/console/") -> Page:
    page = await new_page(browser)
    await page.goto(base + path)
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_load_state()
    assert "/console/login" not in page.url, await page.inner_text("main")
    return page


async def open_case(stack: CaseStack, name: str, collateral: str) -> str:
    """A breached account with its case awaiting a deposit (deadline ten minutes out)."""
    account = await account_with(stack, name, collateral)
    cases = MarginCallClient(stack.client)
    await cases.open_case(account, "console-1", fast_policy(deadline=timedelta(minutes=10)))
    await wait_state(cases.handle(account), CaseState.AWAITING_DEPOSIT)
    return account


async def listed(page: Page, base: str, query: str, *accounts: str) -> list[str]:
    """The list's accounts for ``query``, once visibility shows every one of ``accounts``."""

    async def rows() -> tuple[list[str]] | None:
        await page.goto(f"{base}/console/?{query}")
        shown: list[str] = await page.eval_on_selector_all(
            "#cases tbody tr[data-account]", "rs => rs.map(r => r.dataset.account)"
        )
        return (shown,) if all(a in shown for a in accounts) else None

    (found,) = await until(rows, timeout=30, every=0.5)
    assert isinstance(found, list)
    return found


async def status(stack: CaseStack, account: str) -> CaseStatus:
    return await MarginCallClient(stack.client).status(account)


async def test_no_session_is_sent_to_sign_in_and_a_wrong_token_is_named(
    browser: Browser, console: str
) -> None:
    page = await new_page(browser)
    await page.goto(console + "/console/cases/acct-x?x=1")
    assert urlsplit(page.url).path == "/console/login"
    await page.fill("#token", "not-a-token-at-all-0000")
    await page.click("button[type=submit]")
    assert await page.inner_text("#error") == "token: missing or wrong token"
    await page.fill("#token", ACT_ONLY)
    await page.click("button[type=submit]")
    assert await page.inner_text("#error") == "token: this token lacks the cases:read scope"
    cookie = await page.context.cookies()
    assert not cookie, cookie  # nothing handed out for a refused token
    # A good token lands on the page asked for, behind an HttpOnly, SameSite=Strict session cookie.
    await page.fill("#token", READ)
    await page.click("button[type=submit]")
    await page.wait_for_load_state()
    assert urlsplit(page.url).path == "/console/cases/acct-x" and urlsplit(page.url).query == "x=1"
    assert await page.inner_text("#error") == "account_id: no such account"
    (session,) = await page.context.cookies()
    assert session["httpOnly"] and session["sameSite"] == "Strict" and READ not in session["value"]


async def test_the_list_shows_real_cases_filters_and_sorts(
    browser: Browser, console: str, stack: CaseStack
) -> None:
    small = await open_case(stack, "console-small", "550")  # 48 short of maintenance
    large = await open_case(stack, "console-large", "500")  # 98 short
    waived = await open_case(stack, "console-waived", "550")
    await MarginCallClient(stack.client).waive(waived, Waiver(operator="dana", reason="goodwill"))

    page = await sign_in(browser, console, READ)
    awaiting = "state=AWAITING_DEPOSIT&sort=shortfall&order=asc"
    shown = await listed(page, console, awaiting, small, large)
    assert shown.index(small) < shown.index(large), shown
    row = page.locator(f"#cases tr[data-account='{small}']")
    assert await row.locator(".state-awaiting_deposit").inner_text() == "AWAITING_DEPOSIT"
    assert "48.00" in await row.inner_text()
    assert waived not in shown  # filtered by state on the server
    # The column header sorts the other way.
    await page.click("a.sort[data-column=shortfall]")
    shown = await page.eval_on_selector_all(
        "#cases tbody tr[data-account]", "rs => rs.map(r => r.dataset.account)"
    )
    assert shown.index(large) < shown.index(small), shown

    # The filter form: by account, then by an outcome, which reads as its own word and colour.
    await page.fill("#account", waived)
    await page.select_option("#state", "")
    await page.click(".filters button[type=submit]")
    assert await listed(page, console, f"account={waived}", waived) == [waived]
    outcome = page.locator(f"#cases tr[data-account='{waived}'] .state-waived")
    assert await outcome.inner_text() == "WAIVED"
    assert await listed(page, console, f"state=WAIVED&account={waived}", waived) == [waived]
    assert await listed(page, console, f"state=CURED&account={waived}") == []
    assert await page.inner_text("#cases tbody") == "No case matches."
    # The whole list (every state, the outcomes among them), as staff first see it.
    await listed(page, console, "", small, large, waived)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "console-list.png"))

    await page.goto(console + "/console/?state=NOPE")
    assert (await page.inner_text("#error")).startswith("state: unknown state")
    await page.goto(console + "/console/?sort=colour")
    assert (await page.inner_text("#error")).startswith("sort: one of account")


async def test_a_case_page_and_an_extension_through_it(
    browser: Browser, console: str, stack: CaseStack
) -> None:
    account = await open_case(stack, "console-extend", "550")
    before = (await status(stack, account)).deadline
    assert before is not None
    page = await sign_in(browser, console, ALL, f"/console/cases/{account}")
    assert await page.inner_text("h1 .state") == "AWAITING_DEPOSIT"
    assert "opened: equity 150.00, maintenance 198.00" in await page.inner_text("#timeline tbody")
    assert "48.00" in await page.inner_text("#shortfall")
    link = await page.get_attribute("#temporal-link", "href")
    assert link is not None and link.startswith(
        f"{TEMPORAL_UI}/namespaces/default/workflows/margin-call-{account}/"
    )
    # The statement of the case shown opens in the console's own session (the API's page wants a
    # bearer token, which this browser does not hold).
    case_id = f"{account}/console-1"
    statement = f"/console/statement/{account}?{urlencode({'case_id': case_id})}"
    assert await page.get_attribute("#statement-link", "href") == statement
    await page.click("#statement-link")
    await page.wait_for_load_state()
    assert urlsplit(page.url).path == f"/console/statement/{account}"
    assert await page.inner_text("h1") == f"Account {account} · case {case_id}"
    shown = await page.inner_text("body")
    assert "with equity of 150.00 USDT" in shown and "still open" in shown
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "console-statement.png"), full_page=True)
    await page.go_back()

    # Bad forms name the field and send nothing to the case.
    await page.fill("#extend-by", "600")
    await page.fill("#extend-reason", "wire in transit")
    await page.click("#extend-form button[type=submit]")
    assert await page.inner_text("#error") == "operator: missing required field"
    assert await page.input_value("#extend-by") == "600"  # what staff typed is kept
    await page.fill("#extend-operator", "alice")
    await page.fill("#extend-new_deadline", "2030-01-01T00:00:00")
    await page.click("#extend-form button[type=submit]")
    assert (
        await page.inner_text("#error")
        == "new_deadline: give a new deadline or a number of seconds (by), not both"
    )
    await page.fill("#extend-by", "")
    await page.click("#extend-form button[type=submit]")
    assert (await page.inner_text("#error")).startswith("new_deadline: Input should have timezone info")
    await page.fill("#extend-new_deadline", "")
    await page.fill("#extend-by", "ten minutes")
    await page.click("#extend-form button[type=submit]")
    assert await page.inner_text("#error") == "by: a whole number of seconds from 1 to 2592000"
    assert (await status(stack, account)).deadline == before

    # A good one takes effect on the workflow, once, however often the form is sent.
    await page.fill("#extend-by", "600")
    sent = {
        name: await page.get_attribute(f"#extend-form input[name={name}]", "value") or ""
        for name in ("csrf", "form_id")
    }
    await page.click("#extend-form button[type=submit]")
    assert await page.inner_text("#done") == "Deadline extended."
    assert (await status(stack, account)).deadline == before + timedelta(seconds=600)
    assert "alice" in await page.inner_text("#timeline")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "console-case.png"), full_page=True)
    again = {**sent, "by": "600", "operator": "alice", "reason": "wire in transit"}
    repeat = await page.request.post(f"{console}/console/cases/{account}/extend", form=again)
    assert repeat.ok and "the action was taken once" in await repeat.text()
    assert (await status(stack, account)).deadline == before + timedelta(seconds=600)

    # The case's own refusal, in its words: a deadline not later than the current one.
    current = (await status(stack, account)).deadline
    assert current is not None
    await page.fill("#extend-operator", "alice")
    await page.fill("#extend-reason", "typo")
    await page.fill("#extend-new_deadline", current.isoformat())
    await page.click("#extend-form button[type=submit]")
    assert (await page.inner_text("#error")).startswith("new_deadline: ")
    assert (await status(stack, account)).deadline == current


async def test_a_waive_through_the_page_and_a_running_case_refreshes(
    browser: Browser, console: str, stack: CaseStack
) -> None:
    cured = await open_case(stack, "console-cure", "550")
    page = await sign_in(browser, console, ALL, f"/console/cases/{cured}")
    # Money arrives while staff watch: the page shows the outcome without anyone reloading it.
    deposit = Deposit(account_id=cured, deposit_id=f"{cured}-w1", amount=D("250"), currency="USDT")
    await MarginCallClient(stack.client).report_deposit(PostgresDeposits(stack.pool), deposit)
    await page.wait_for_selector("h1 .state-cured", timeout=20_000)
    assert await page.inner_text("#no-stages") == "No stage: nothing was sold."

    waived = await open_case(stack, "console-waive", "550")
    await page.goto(f"{console}/console/cases/{waived}")
    await page.fill("#waive-operator", "erin")
    await page.fill("#waive-reason", "goodwill after an exchange outage")
    await page.fill("#waive-for", "3600")
    await page.click("#waive-form button[type=submit]")
    assert await page.inner_text("#done") == "Case waived."
    outcome = await MarginCallClient(stack.client).handle(waived).result()
    assert outcome.state == CaseState.WAIVED
    assert any("erin" in entry.what for entry in outcome.status.timeline)
    assert await page.inner_text("h1 .state-waived") == "WAIVED"
    assert "The case is closed: there is nothing to act on." in await page.inner_text("#actions")
    assert await page.query_selector("form.action") is None


async def test_a_read_only_token_cannot_act_and_forms_need_the_session(
    browser: Browser, console: str, stack: CaseStack
) -> None:
    account = await open_case(stack, "console-read", "550")
    page = await sign_in(browser, console, READ, f"/console/cases/{account}")
    assert (await page.inner_text("#read-only")).startswith("Your token has no cases:act scope")
    assert await page.query_selector("form.action") is None
    csrf = await page.get_attribute("form.logout input[name=csrf]", "value") or ""
    form = {"csrf": csrf, "form_id": "x", "operator": "mallory", "reason": "because"}
    refused = await page.request.post(f"{console}/console/cases/{account}/waive", form=form)
    assert (
        refused.status == 403
        and "authorization: this token lacks the cases:act scope" in await refused.text()
    )

    # A session that may act still needs its own CSRF token in the form.
    actor = await sign_in(browser, console, ALL, f"/console/cases/{account}")
    form_id = await actor.get_attribute("#waive-form input[name=form_id]", "value") or ""
    for wrong in ({"csrf": csrf}, {}):
        forged = await actor.request.post(
            f"{console}/console/cases/{account}/waive",
            form={**wrong, "form_id": form_id, "operator": "mallory", "reason": "because"},
        )
        assert forged.status == 403 and "csrf: this form is not from your session" in await forged.text()
    # Without a session at all: sent to sign in again, nothing done.
    stranger = await new_page(browser)
    signed_out = await stranger.request.post(f"{console}/console/cases/{account}/force", form=form)
    assert signed_out.status == 401
    assert (await status(stack, account)).state == CaseState.AWAITING_DEPOSIT


async def test_the_statement_is_read_under_a_session_that_may_read_cases(
    browser: Browser, console: str, stack: CaseStack
) -> None:
    account = await open_case(stack, "console-stmt", "550")
    other = await open_case(stack, "console-stmt-other", "550")
    path = f"/console/statement/{account}?{urlencode({'case_id': f'{account}/console-1'})}"

    # No session: sent to sign in, and back to the statement once signed in with a read-only token.
    stranger = await new_page(browser)
    away = await stranger.request.get(console + path, max_redirects=0)
    assert away.status == 303
    assert away.headers["location"] == f"/console/login?{urlencode({'next': path})}"
    assert f"case {account}/console-1" not in await away.text()
    page = await sign_in(browser, console, READ, path)
    assert await page.inner_text("h1") == f"Account {account} · case {account}/console-1"
    shown = await page.request.get(console + path)
    assert shown.ok and shown.headers["content-security-policy"].startswith("default-src 'none'")
    assert shown.headers["cache-control"] == "no-store"

    # The API's statement stays bearer-only: the console's session cookie opens nothing there.
    (cookie,) = await page.context.cookies()
    api = await page.request.get(
        f"{console}/v1/cases/{account}/statement.html",
        headers={"Cookie": f"{cookie['name']}={cookie['value']}"},
    )
    assert api.status == 401

    # Unknown account or case, a case of another account, a malformed case id: the console's own
    # error page naming the field, never the statement.
    for query, code, words in (
        ("/console/statement/no-such-account", 404, "account_id: no such account"),
        (
            f"/console/statement/{account}?case_id={account}/nope",
            404,
            "case_id: the account has no such case",
        ),
        (
            f"/console/statement/{account}?case_id={other}/console-1",
            404,
            "case_id: the account has no such case",
        ),
        (f"/console/statement/{account}?case_id=x", 422, "case_id: String should have at least 3 characters"),
        (f"/console/statement/{'a' * 129}", 404, "account_id: no such account"),
    ):
        await page.goto(console + query)
        refused = await page.request.get(console + query)
        assert refused.status == code, (query, refused.status)
        assert await page.inner_text("#error") == words, query
        assert await page.query_selector("main") is not None  # the console's page, not a traceback


async def test_a_session_without_cases_read_is_refused_the_statement(stack: CaseStack) -> None:
    """Sign-in refuses such a token, so the session is made here: the route checks the scope itself too."""
    account = await open_case(stack, "console-stmt-act", "550")
    sessions = Sessions()
    services = Services(
        cases=MarginCallClient(stack.client), pool=stack.pool, scopes=Scopes(TOKENS), policies=TEST_POLICIES
    )
    app = FastAPI()
    app.include_router(console_routes(services, None, sessions))
    acting, _ = sessions.open(frozenset({"cases:act"}))
    reading, _ = sessions.open(frozenset({"cases:read"}))
    port = free_port()
    async with serving(app, port), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        path = f"/console/statement/{account}"
        refused = await http.get(path, headers={"Cookie": f"{COOKIE}={acting}"})
        assert refused.status_code == 403
        assert "authorization: this token lacks the cases:read scope" in refused.text
        assert f"case {account}/console-1" not in refused.text
        read = await http.get(path, headers={"Cookie": f"{COOKIE}={reading}"})
        assert read.status_code == 200 and f"case {account}/console-1" in read.text


async def test_docs_and_console_load_nothing_from_outside(browser: Browser, console: str) -> None:
    """/docs renders Swagger UI from the API's own files; no request leaves the machine."""
    offline = Offline()
    page = await new_page(browser, offline)
    await page.goto(console + "/docs")
    await page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "Margin call case manager" in await page.inner_text(".swagger-ui .info .title")
    await page.wait_for_selector("[data-path='/v1/deposits']")
    assert any(url.endswith("/docs/assets/swagger-ui-bundle.js") for url in offline.requests)
    await page.goto(console + "/console/login")
    assert (
        await page.eval_on_selector("body", "b => getComputedStyle(b).backgroundColor")
        == "rgb(246, 247, 249)"
    )
    assert not offline.outside, offline.outside
    html = await (await page.request.get(console + "/docs")).text()
    linked = re.findall(r"""(?:src|href|url)\s*[=:]\s*["']([^"']+)""", html)
    assert linked and all(url.startswith("/") and not url.startswith("//") for url in linked), linked
    assert (await page.request.get(console + "/redoc")).status == 404
