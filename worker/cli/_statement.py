"""``margin-call cases statement``: a case's statement from the ledger, as text or ``--json``."""

from __future__ import annotations

from worker.cli import _output
from worker.cli._resources import ledger_pool
from worker.config import Settings
from worker.statement import render_text
from workflows.domain.message import CaseId, Identifier, Message


class StatementAsked(Message):
    account_id: Identifier
    case_id: CaseId | None = None


async def statement(settings: Settings, account_id: str, case_id: str | None, as_json: bool) -> int:
    """The statement of the account's latest case, or of ``case_id``; refused (exit 2) before connecting if malformed."""
    from activities.ledger import case_statement

    StatementAsked(account_id=account_id, case_id=case_id)
    async with ledger_pool(settings) as pool:
        found = await case_statement(pool, account_id, case_id)
    _output.emit(found.model_dump(mode="json"), as_json, render_text(found).rstrip("\n"))
    return 0
