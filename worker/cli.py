"""``margin-call``: the command line of the case manager (see DESIGN.md for the contract)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="margin-call", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("risk", help="portfolio JSON on stdin -> margin figures JSON on stdout")

    db = commands.add_parser("db", help="ledger database administration")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    db_commands.add_parser("migrate", help="apply the SQL migrations (safe to run twice)")
    return parser


async def _db_migrate() -> int:
    import asyncpg

    from activities.database import resolve_database_url
    from activities.migrate import migrate

    url, embedded = await resolve_database_url()
    try:
        conn = await asyncpg.connect(url)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
    finally:
        if embedded is not None:
            await embedded.stop()
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "risk":
        from worker import risk_command

        return risk_command.run()
    if args.command == "db" and args.db_command == "migrate":
        return asyncio.run(_db_migrate())
    return 2


if __name__ == "__main__":
    sys.exit(main())
