"""The README runs as written: its Python snippet and its walkthrough, against the test stack.

A README nobody runs rots quietly (the one before this test had a bare
``await``, an undefined name and a token the API refuses). So this test reads
README.md and does what a reader would:

- every command line of the ``sh`` and ``console`` blocks under "## Walkthrough",
  each in bash from the repository root, except the bring-up (``make up``,
  ``margin-call up``): the test stack is already up;
- every ``python`` block in the README, as written, as a process of its own.

Nothing in the text is rewritten. Only the addresses differ from a reader's
machine, and only through variables the README documents
(``MARGIN_CALL_TEMPORAL_ADDRESS``, ``MARGIN_CALL_DATABASE_URL``,
``TEMPORAL_ADDRESS``); the virtualenv's ``bin`` is put on ``PATH``, as the
README's ``source .venv/bin/activate`` does. A reader looks at a command's
output before typing the next one; the test likewise waits, after each
command, until no case it seeded is still being opened.

The ledger of a fresh stack is empty (the README says so), so the accounts
the README names are seeded here first: each holds 1 BTCUSDT long from 49,900,
marked at 49,500, with 550 USDT of collateral, 48 USDT short of maintenance.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from temporalio.service import RPCError, RPCStatusCode

from tests.helpers import ENTRY, MARK, CaseStack
from worker.market import Trader, move_market, onboard
from workflows.client import MarginCallClient
from workflows.contract import CaseState

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# The accounts the README's walkthrough and snippet use; each must end its case CURED.
README_ACCOUNTS = ("acct-42", "acct-44", "acct-7")
COLLATERAL = Decimal("550")
# How the README brings the stack up; here the test stack stands in for it.
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


def reader_env(stack: CaseStack) -> dict[str, str]:
    """The reader's environment with the test stack's addresses, through the README's own variables."""
    address = stack.client.service_client.config.target_host
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "MARGIN_CALL_TEMPORAL_ADDRESS": address,
        "MARGIN_CALL_DATABASE_URL": stack.database_url,
        "TEMPORAL_ADDRESS": address,
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


async def seed(stack: CaseStack) -> None:
    for account in README_ACCOUNTS:
        await onboard(stack.pool, Trader(account, COLLATERAL, {"BTCUSDT": (Decimal(1), ENTRY)}))
    async with stack.pool.acquire() as conn:
        await move_market(conn, {"BTCUSDT": MARK})


async def until_opened(cases: MarginCallClient, timeout: float = 30) -> None:
    """Wait until no README account's running case is still being opened, as a reader would."""
    deadline = asyncio.get_running_loop().time() + timeout
    for account in README_ACCOUNTS:
        while True:
            try:
                described = await cases.handle(account).describe()
                if described.close_time is not None:
                    break
                if (await cases.status(account)).state not in OPENING:
                    break
            except RPCError as error:
                if error.status == RPCStatusCode.NOT_FOUND:
                    break  # no case for this account yet
                # A query before the case's first task is answered is refused; ask again.
            assert asyncio.get_running_loop().time() < deadline, f"{account}'s case is still opening"
            await asyncio.sleep(0.2)


def test_the_readme_has_a_walkthrough_and_a_python_snippet() -> None:
    markdown = README.read_text()
    bring_up, to_run = walkthrough(markdown)
    assert bring_up, "the walkthrough must say how to bring the stack up (make up)"
    assert any(c.startswith("margin-call ") for c in to_run), to_run
    assert any(b.language == "python" for b in code_blocks(markdown))
    for variable in ("MARGIN_CALL_TEMPORAL_ADDRESS", "MARGIN_CALL_DATABASE_URL", "TEMPORAL_ADDRESS"):
        assert f"`{variable}`" in markdown, f"the README must document {variable}, which this test sets"
    for account in README_ACCOUNTS:
        assert account in markdown, f"{account} is seeded for the README, which no longer names it"


def test_links_stay_inside_the_repository() -> None:
    markdown = README.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", markdown):
        if target.startswith(("http://", "https://", "#")):
            continue
        assert (ROOT / target.split("#")[0]).exists(), (
            f"README links to {target}, which is not in the repository"
        )
    assert "../" not in markdown and "DESIGN.md" not in markdown


async def test_the_readme_runs_as_written(stack: CaseStack) -> None:
    markdown = README.read_text()
    await seed(stack)
    env = reader_env(stack)
    cases = MarginCallClient(stack.client)
    _, to_run = walkthrough(markdown)
    for command in to_run:
        code, out = await run(["bash", "-c", command], env)
        print(f"$ {command}\n{out}")  # shown when the test fails
        assert code == 0, f"README command failed (exit {code}):\n$ {command}\n{out}"
        await until_opened(cases)
    for index, block in enumerate(b for b in code_blocks(markdown) if b.language == "python"):
        code, out = await run([sys.executable, "-c", block.text], env)
        print(f"python block {index + 1}:\n{out}")
        assert code == 0, f"README python block {index + 1} failed (exit {code}):\n{out}"
    for account in README_ACCOUNTS:
        outcome = await asyncio.wait_for(cases.handle(account).result(), 60)
        assert outcome.state == CaseState.CURED, (account, outcome.status.timeline)
