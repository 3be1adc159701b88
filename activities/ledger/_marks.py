"""The mark feed: instrument marks and collateral prices, each moving only forward in ``as_of``.

A batch is applied in one statement per kind (``unnest`` of the valid
records), so thousands of marks cost one round trip. The ``ON CONFLICT ... WHERE
as_of < EXCLUDED.as_of`` clause is evaluated on the locked row, so two feeds
racing each other still leave the newest mark. A mark not newer than the one
held is ``ignored`` (reported, never applied); the same mark again (same
moment, same price) is a ``duplicate``. Within one batch only the newest mark
per instrument is offered; the others are answered ``ignored``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from activities.ledger._batches import done, refused, validate
from workflows.contract._feeds import AssetPrice, Mark, RecordResult, RecordStatus

_MARKS_SQL = """
INSERT INTO mark_prices (instrument, price, as_of, updated_at)
SELECT m.instrument, m.price, m.as_of, now()
  FROM unnest($1::text[], $2::numeric[], $3::timestamptz[]) AS m(instrument, price, as_of)
ON CONFLICT (instrument) DO UPDATE
   SET price = EXCLUDED.price, as_of = EXCLUDED.as_of, updated_at = now()
 WHERE mark_prices.as_of < EXCLUDED.as_of
RETURNING instrument
"""

_ASSETS_SQL = """
UPDATE assets s SET price = p.price, price_as_of = p.as_of
  FROM unnest($1::text[], $2::numeric[], $3::timestamptz[]) AS p(asset, price, as_of)
 WHERE s.asset = p.asset AND s.price_as_of < p.as_of
RETURNING s.asset
"""


def _is_asset_price(record: Mark | AssetPrice | Mapping[str, Any]) -> bool:
    return isinstance(record, AssetPrice) or (isinstance(record, Mapping) and "asset" in record)


def _newest(items: list[tuple[int, Any]], key: str) -> tuple[dict[str, tuple[int, Any]], list[RecordResult]]:
    """The newest record per key; the others are answered ignored (superseded in the same batch)."""
    newest: dict[str, tuple[int, Any]] = {}
    results: list[RecordResult] = []
    for index, item in items:
        name = getattr(item, key)
        held = newest.get(name)
        if held is None or item.as_of > held[1].as_of:
            if held is not None:
                results.append(
                    done(held[0], name, RecordStatus.IGNORED, "as_of: a newer mark is in this batch")
                )
            newest[name] = (index, item)
        else:
            results.append(done(index, name, RecordStatus.IGNORED, "as_of: a newer mark is in this batch"))
    return newest, results


async def _apply(
    conn: asyncpg.Connection,
    newest: dict[str, tuple[int, Any]],
    table: str,
    key: str,
    as_of_column: str,
    sql: str,
) -> list[RecordResult]:
    results: list[RecordResult] = []
    if not newest:
        return results
    names = list(newest)
    held = {
        r["name"]: (r["price"], r["as_of"])
        for r in await conn.fetch(
            f"SELECT {key} AS name, p.price, p.{as_of_column} AS as_of"
            f" FROM {table} p WHERE {key} = any($1::text[])",
            names,
        )
    }
    known = names if table == "assets" else await _listed(conn, names)
    offered = [name for name in names if name in known]
    for name in names:
        if name not in known:
            index = newest[name][0]
            thing = "asset" if table == "assets" else "instrument"
            results.append(refused(index, name, f"{thing}: {name!r} is not listed"))
    applied = {
        r[0]
        for r in await conn.fetch(
            sql,
            offered,
            [newest[n][1].price for n in offered],
            [newest[n][1].as_of for n in offered],
        )
    }
    for name in offered:
        index, item = newest[name]
        if name in applied:
            results.append(done(index, name, RecordStatus.APPLIED))
            continue
        price, as_of = held.get(name, (None, None))
        if as_of == item.as_of and price == item.price:
            results.append(done(index, name, RecordStatus.DUPLICATE))
        elif name in held:
            results.append(
                done(index, name, RecordStatus.IGNORED, f"as_of: not newer than the mark of {_iso(as_of)}")
            )
        else:
            results.append(
                refused(index, name, f"{'asset' if table == 'assets' else 'instrument'}: not listed")
            )
    return results


async def _listed(conn: asyncpg.Connection, names: list[str]) -> set[str]:
    rows = await conn.fetch("SELECT instrument FROM instruments WHERE instrument = any($1::text[])", names)
    return {r[0] for r in rows}


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else "?"


async def apply_marks(
    pool: asyncpg.Pool, records: Sequence[Mark | AssetPrice | Mapping[str, Any]]
) -> list[RecordResult]:
    """Apply a batch of marks (``{instrument, price, as_of}``) and asset prices (``{asset, price, as_of}``)."""
    assets_in = [(i, r) for i, r in enumerate(records) if _is_asset_price(r)]
    marks_in = [(i, r) for i, r in enumerate(records) if not _is_asset_price(r)]
    marks, results = validate(Mark, [r for _, r in marks_in])
    prices, asset_results = validate(AssetPrice, [r for _, r in assets_in])
    # validate() numbered each kind from 0: put the batch's own indexes back.
    marks = [(marks_in[i][0], m) for i, m in marks]
    prices = [(assets_in[i][0], p) for i, p in prices]
    results = [r.model_copy(update={"index": marks_in[r.index][0]}) for r in results]
    results += [r.model_copy(update={"index": assets_in[r.index][0]}) for r in asset_results]
    newest_marks, superseded = _newest(marks, "instrument")
    newest_prices, superseded_prices = _newest(prices, "asset")
    results += superseded + superseded_prices
    async with pool.acquire() as conn, conn.transaction():
        results += await _apply(conn, newest_marks, "mark_prices", "instrument", "as_of", _MARKS_SQL)
        existing_assets = {
            r[0]
            for r in await conn.fetch(
                "SELECT asset FROM assets WHERE asset = any($1::text[])", list(newest_prices)
            )
        }
        for name in [n for n in newest_prices if n not in existing_assets]:
            results.append(refused(newest_prices.pop(name)[0], name, f"asset: {name!r} is not listed"))
        results += await _apply(conn, newest_prices, "assets", "asset", "price_as_of", _ASSETS_SQL)
    return results
