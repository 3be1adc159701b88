"""What the routes work with: the case client, the ledger's pool, the tokens and the operator's policies."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from worker.api._auth import Scopes
from workflows.client import MarginCallClient
from workflows.domain.policies import PolicyBook


@dataclass(frozen=True)
class Services:
    cases: MarginCallClient
    pool: asyncpg.Pool
    scopes: Scopes
    policies: PolicyBook
