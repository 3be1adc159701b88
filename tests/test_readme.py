"""The README runs as written: its Python snippet and its walkthrough, against the stack ``up`` starts.

A README nobody runs rots quietly (the one before this test had a bare
``await``, an undefined name and a token the API refuses). So this test reads
README.md and does what a reader would:

- the walkthrough's bring-up (``margin-call up --sample-exchange``) is parsed
  with the CLI's own parser and brought up through the function ``up`` calls,
  on free ports and a scratch data directory, over a fresh ledger database:
  the sample exchange is loaded through the API as it is for a reader;
- every other command line of the ``sh`` and ``console`` blocks under
  "## Walkthrough", each in bash from the repository root;
- every ``python`` block in the README, as written, as a process of its own.

Nothing in the text is rewritten. Only the addresses differ from a reader's
machine, and only through variables the README documents
(``MARGIN_CALL_TEMPORAL_ADDRESS``, ``MARGIN_CALL_DATABASE_URL``,
``TEMPORAL_ADDRESS``); the virtualenv's ``bin`` is put on ``PATH``, as the
README's ``source .venv/bin/activate`` does. A reader looks at a command's
output before typing the next one; the test likewise waits, after each
command, for a scan of the risk monitor that began after it, and until no case
of the README's accounts is still being opened or waits for its first stage.
Then it checks the story the README tells: no case before the crash, four
after it, a stage of ``acct-9`` filled by the venue simulator, the deposits
curing the others.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest_asyncio
from temporalio.service import RPCError, RPCStatusCode

from tests.helpers import failed_workflow_tasks, free_port
from worker.cli._parser import build_parser
from worker.cli._services import up_stack
from worker.config import load_settings
from worker.monitor import TickReport
from worker.stack import Stack
from workflows.client import MarginCallClient
from workflows.contract import CaseState

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# The sample exchange's accounts the README's walkthrough and snippet use.
README_ACCOUNTS = ("acct-42", "acct-44", "acct-7", "acct-9")
CURED_BY_THE_README = ("acct-42", "acct-44", "acct-7")
# How the README brings the stack up; the test brings it up the same way on free ports.
BRING_UP = re.compile(r"^(make up|(\S*/)?margin-call up)(\s|$)")
OPENING = frozenset({CaseState.OPEN, CaseState.NOTIFIED})
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    language: str
    section: str
    text: str


def code_blocks(markdown: str) -> list[Block]:
    """Fenced blocks with their language and the ``## `` section they sit in."""
    blocks: list[Block] = []
    for match in FENCE.finditer(markdown):
        headings = re.findall(r"^## +(.+)$", markdown[: match.start()], re.MULTILINE)
        section = headings[-1].strip() if headings else ""
        blocks.append(Block(match.group(1), section, match.group(2)))
    return blocks


def commands(block: Block) -> list[str]:
    """The block's command lines, continuation lines joined; a console block's are the ``$ `` lines."""
    lines: list[str] = []
    pending = ""
    for raw in block.text.splitlines():
        line = raw.rstrip()
        if block.language == "console" and not pending:
            if not line.startswith("$ "):
                continue  # output
            line = line[2:]
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, f"a command ends in a line continuation: {pending!r}"
    return lines


def walkthrough(markdown: str) -> tuple[list[str], list[str]]:
    """(bring-up commands, the commands to run), in README order."""
    bring_up: list[str] = []
    run: list[str] = []
    for block in code_blocks(markdown):
        if block.section != "Walkthrough" or block.language not in ("sh", "console"):
            continue
        for command in commands(block):
            (bring_up if BRING_UP.match(command.strip()) else run).append(command)
    return bring_up, run


def reader_env(stack: Stack) -> dict[str, str]:
    """The reader's environment with the stack's addresses, through the README's own variables."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "MARGIN_CALL_TEMPORAL_ADDRESS": stack.temporal_address,
        "MARGIN_CALL_DATABASE_URL": stack.database_url,
        "TEMPORAL_ADDRESS": stack.temporal_address,
    }


async def run(argv: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode()


def bring_up_arguments(command: str) -> list[str]:
    """The ``margin-call`` arguments of the README's bring-up line (``up ...``)."""
    words = shlex.split(command.split(" #")[0])
    assert Path(words[0]).name == "margin-call", f"bring the stack up with margin-call up ...: {command!r}"
    return words[1:]


@pytest_asyncio.fixture(loop_scope="session")
async def readme_stack(ledger_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """The stack as the README's bring-up starts it, on free ports, over an empty ledger database."""
    bring_up, _ = walkthrough(README.read_text())
    assert len(bring_up) == 1, bring_up
    args = build_parser().parse_args(bring_up_arguments(bring_up[0]))
    settings = load_settings(
        {
            "MARGIN_CALL_DATA_DIR": str(tmp_path / "data"),
            "MARGIN_CALL_DATABASE_URL": ledger_url,
            "MARGIN_CALL_WORKFLOW_SANDBOX": "on",
        }
    )
    venue_port = free_port() if args.sample_exchange else None
    async with up_stack(
        settings, free_port(), free_port(), free_port(), venue_port, temporal_ui=False
    ) as stack:
        yield stack
        wedged = await failed_workflow_tasks(stack.client)
    assert not wedged, f"workflow tasks failed (a wedged case): {wedged}"


def count_scans(stack: Stack) -> Callable[[], list[float]]:
    """The start times of the risk monitor's completed scans, from now on."""
    started: list[float] = []
    scan = stack.monitor.tick

    async def counted() -> TickReport:
        began = time.monotonic()
        report = await scan()
        started.append(began)
        return report

    stack.monitor.tick = counted  # type: ignore[method-assign]
    return lambda: started


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def settled(cases: MarginCallClient, scans: Callable[[], list[float]], since: float) -> None:
    """A scan began after ``since`` and no README case is being opened or waits for its first stage."""

    async def scanned() -> bool:
        return any(began > since for began in scans())

    await until(scanned, "the risk monitor did not scan")
    for account in README_ACCOUNTS:

        async def quiet(account: str = account) -> bool:
            try:
                described = await cases.handle(account).describe()
                if described.close_time is not None:
                    return True
                status = await cases.status(account)
            except RPCError as error:
                # No case yet, or a query before the case's first task was answered.
                return error.status == RPCStatusCode.NOT_FOUND
            return status.state not in OPENING and not (
                status.state == CaseState.LIQUIDATING and not status.stages
            )

        await until(quiet, f"{account}'s case is still opening or has no stage yet")


def test_the_readme_has_a_walkthrough_and_a_python_snippet() -> None:
    markdown = README.read_text()
    bring_up, to_run = walkthrough(markdown)
    assert bring_up, "the walkthrough must say how to bring the stack up (margin-call up)"
    args = build_parser().parse_args(bring_up_arguments(bring_up[0]))
    assert args.command == "up" and args.sample_exchange, "the walkthrough starts from the sample exchange"
    assert any("margin-call feed marks" in c for c in to_run), "the walkthrough crashes a price"
    assert any(b.language == "python" for b in code_blocks(markdown))
    for variable in ("MARGIN_CALL_TEMPORAL_ADDRESS", "MARGIN_CALL_DATABASE_URL", "TEMPORAL_ADDRESS"):
        assert f"`{variable}`" in markdown, f"the README must document {variable}, which this test sets"
    for account in README_ACCOUNTS:
        assert account in markdown, f"{account} is checked for the README, which no longer names it"


def test_links_stay_inside_the_repository() -> None:
    markdown = README.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", markdown):
        if target.startswith(("http://", "https://", "#")):
            continue
        assert (ROOT / target.split("#")[0]).exists(), (
            f"README links to {target}, which is not in the repository"
        )
    assert "../" not in markdown and "DESIGN.md" not in markdown


def outputs_of(ran: list[tuple[str, str]], command: str) -> list[str]:
    """The outputs of every run of ``command`` (its comment aside), in order."""
    return [out for line, out in ran if line.split(" #")[0].strip() == command]


async def test_the_readme_runs_as_written(readme_stack: Stack) -> None:
    stack = readme_stack
    markdown = README.read_text()
    env = reader_env(stack)
    cases = MarginCallClient(stack.client)
    scans = count_scans(stack)
    _, to_run = walkthrough(markdown)
    ran: list[tuple[str, str]] = []
    for command in to_run:
        code, out = await run(["bash", "-c", command], env)
        print(f"$ {command}\n{out}")  # shown when the test fails
        assert code == 0, f"README command failed (exit {code}):\n$ {command}\n{out}"
        ran.append((command, out))
        await settled(cases, scans, time.monotonic())
    for index, block in enumerate(b for b in code_blocks(markdown) if b.language == "python"):
        code, out = await run([sys.executable, "-c", block.text], env)
        print(f"python block {index + 1}:\n{out}")
        assert code == 0, f"README python block {index + 1} failed (exit {code}):\n{out}"

    # The story the README tells.
    listed = outputs_of(ran, "margin-call cases list")
    assert len(listed) == 2 and "0 case(s)" in listed[0] and "4 case(s)" in listed[1], listed
    [liquidation] = outputs_of(ran, "margin-call cases show acct-9")
    assert "LIQUIDATING" in liquidation and "stage 1 sold" in liquidation, liquidation
    [cure] = outputs_of(ran, "margin-call deposit acct-42 wire-991 250.00")
    assert "CURED" in cure, cure
    for account in CURED_BY_THE_README:
        outcome = await asyncio.wait_for(cases.handle(account).result(), 60)
        assert outcome.state == CaseState.CURED, (account, outcome.status.timeline)
    acct_9 = await cases.status("acct-9")
    assert acct_9.stages and acct_9.stages[0].fills, acct_9.timeline
    assert stack.venue is not None
    filled = [o for o in stack.venue.orders.values() if o.filled_quantity > 0]
    assert filled, "no liquidation order was filled by the venue simulator"
