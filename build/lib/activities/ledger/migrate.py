"""Apply the SQL files under ``migrations/`` in order, once each.

An advisory lock makes concurrent runs (two workers starting at once) safe, and
each file runs in its own transaction together with its row in
``schema_migrations``, so a failed file leaves nothing half applied.
"""

from __future__ import annotations

from importlib import resources

import asyncpg

_LOCK_KEY = 0x6D617267696E  # "margin"


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every migration shipped with the package, in order."""
    folder = resources.files("activities.ledger") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Bring the schema up to date; returns the versions applied now."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied_now.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
