"""The feeds through ``LedgerFeeds``: marks only forward, trades' position math, idempotency, bad records in a batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from activities.ledger import LedgerActivities, LedgerFeeds
from tests.helpers import open_case
from workflows.contract import RecordStatus

D = Decimal
T0 = datetime(2030, 1, 1, tzinfo=UTC)  # after the venue's listing marks (as_of = now())


def at(seconds: int) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


async def trader(feeds: LedgerFeeds, account: str, collateral: str = "10000") -> None:
    answer = await feeds.reference(
        [{"kind": "account", "account_id": account, "settlement_currency": "USDT"}], operator="ops"
    )
    assert answer.refused == 0, answer
    funded = await feeds.movements(
        [
            {
                "movement_id": f"fund-{account}",
                "account_id": account,
                "kind": "collateral_in",
                "asset": "USDT",
                "amount": collateral,
            }
        ]
    )
    assert funded.applied == 1, funded


def trade(
    trade_id: str, account: str, side: str, quantity: str, price: str, fee: str = "0"
) -> dict[str, Any]:
    return {
        "trade_id": trade_id,
        "account_id": account,
        "instrument": "BTCUSDT",
        "side": side,
        "quantity": quantity,
        "price": price,
        "fee": fee,
    }


async def position(pool: asyncpg.Pool, account: str) -> tuple[Decimal, Decimal]:
    row = await pool.fetchrow(
        "SELECT quantity, entry_price FROM positions WHERE account_id = $1 AND instrument = 'BTCUSDT'",
        account,
    )
    return row["quantity"], row["entry_price"]


async def collateral(pool: asyncpg.Pool, account: str) -> Decimal:
    value: Decimal = await pool.fetchval(
        "SELECT balance FROM ledger_accounts WHERE ledger_account = $1", f"collateral:{account}:USDT"
    )
    return value


async def counts(pool: asyncpg.Pool) -> tuple[int, int, int]:
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM transfers) t, (SELECT count(*) FROM trades) tr,"
        " (SELECT count(*) FROM withdrawals) w"
    )
    return row["t"], row["tr"], row["w"]


async def test_marks_only_move_forward_and_stale_ones_are_reported(venue: asyncpg.Pool) -> None:
    feeds = LedgerFeeds(venue)
    first = await feeds.marks(
        [
            {"instrument": "BTCUSDT", "price": "51000", "as_of": at(10)},
            {"instrument": "ETHUSDT", "price": "3100", "as_of": at(10)},
            {"asset": "USDT", "price": "1", "as_of": at(10)},
        ]
    )
    assert (first.applied, first.refused, first.ignored) == (3, 0, 0), first
    answer = await feeds.marks(
        [
            {"instrument": "BTCUSDT", "price": "40000", "as_of": at(5)},  # older: ignored
            {"instrument": "ETHUSDT", "price": "3100", "as_of": at(10)},  # the same again
            {"instrument": "SOLUSDT", "price": "140", "as_of": at(20)},
            {"instrument": "SOLUSDT", "price": "130", "as_of": at(15)},  # superseded in the batch
            {"instrument": "NOPE", "price": "1", "as_of": at(20)},
            {"instrument": "BTCUSDT", "price": "-1", "as_of": at(30)},
        ]
    )
    statuses = [(r.index, r.status, r.detail and r.detail.split(":")[0]) for r in answer.records]
    assert statuses == [
        (0, RecordStatus.IGNORED, "as_of"),
        (1, RecordStatus.DUPLICATE, None),
        (2, RecordStatus.APPLIED, None),
        (3, RecordStatus.IGNORED, "as_of"),
        (4, RecordStatus.REFUSED, "instrument"),
        (5, RecordStatus.REFUSED, "price"),
    ]
    marks = {
        r["instrument"]: r["price"] for r in await venue.fetch("SELECT instrument, price FROM mark_prices")
    }
    assert marks["BTCUSDT"] == D("51000") and marks["SOLUSDT"] == D("140") and "NOPE" not in marks


async def test_trades_open_add_reduce_and_flip_with_realised_pnl_and_fees(venue: asyncpg.Pool) -> None:
    feeds = LedgerFeeds(venue)
    await trader(feeds, "t-math")
    answer = await feeds.trades([trade("m1", "t-math", "buy", "1", "50000", "5")])
    assert answer.applied == 1, answer
    assert await position(venue, "t-math") == (D(1), D(50000))
    await feeds.trades([trade("m2", "t-math", "buy", "1", "52000")])
    assert await position(venue, "t-math") == (D(2), D(51000))  # average entry
    await feeds.trades([trade("m3", "t-math", "sell", "0.5", "53000", "1")])
    assert await position(venue, "t-math") == (D("1.5"), D(51000))  # reduce keeps the entry
    # Realised 0.5 * (53000 - 51000) = 1000; fees 5 + 1.
    assert await collateral(venue, "t-math") == D(10000) + D(1000) - D(6)
    await feeds.trades([trade("m4", "t-math", "sell", "2.5", "50000")])
    # Flip: closes 1.5 at a loss of 1.5 * 1000 = 1500, opens 1 short at 50000.
    assert await position(venue, "t-math") == (D(-1), D(50000))
    assert await collateral(venue, "t-math") == D(10000) + D(1000) - D(6) - D(1500)
    await feeds.trades([trade("m5", "t-math", "buy", "1", "49000")])  # a short closed at a profit
    assert (await position(venue, "t-math"))[0] == 0
    assert await collateral(venue, "t-math") == D(10000) + D(1000) - D(6) - D(1500) + D(1000)
    fees = await venue.fetchval("SELECT balance FROM ledger_accounts WHERE ledger_account = 'fees:USDT'")
    assert fees == D(6)


async def test_trade_ids_are_idempotent_and_conflicts_name_the_trade_id(venue: asyncpg.Pool) -> None:
    feeds = LedgerFeeds(venue)
    await trader(feeds, "t-idem")
    first = await feeds.trades([trade("i1", "t-idem", "buy", "1", "50000", "2")])
    assert first.applied == 1
    before = await counts(venue)
    again = await feeds.trades([trade("i1", "t-idem", "buy", "1.0", "50000.00", "2")])
    assert again.duplicate == 1 and again.applied == 0
    conflict = await feeds.trades([trade("i1", "t-idem", "buy", "2", "50000", "2")])
    assert conflict.refused == 1 and conflict.records[0].detail.startswith("trade_id:")  # type: ignore[union-attr]
    assert await counts(venue) == before
    assert await position(venue, "t-idem") == (D(1), D(50000))


async def test_a_bad_record_is_named_and_the_rest_of_the_batch_applies(venue: asyncpg.Pool) -> None:
    feeds = LedgerFeeds(venue)
    await trader(feeds, "t-batch")
    before = await counts(venue)
    answer = await feeds.trades(
        [
            trade("b1", "t-batch", "buy", "1", "50000"),
            trade("b2", "t-batch", "buy", "1", "50000", "0.0000001"),  # finer than USDT's unit
            {**trade("b3", "t-batch", "buy", "1", "50000"), "quantity": 1.5},  # a float
            trade("b4", "nobody", "buy", "1", "50000"),
            {**trade("b5", "t-batch", "buy", "1", "50000"), "surprise": "x"},
            trade("b6", "t-batch", "sell", "1", "51000"),
        ]
    )
    refused = {r.index: (r.key, r.detail.split(":")[0]) for r in answer.records if r.detail}
    assert refused == {
        1: ("b2", "fee"),
        2: ("b3", "quantity"),
        3: ("b4", "account_id"),
        4: ("b5", "surprise"),
    }
    assert (answer.applied, answer.refused) == (2, 4)
    after = await counts(venue)
    assert after[1] == before[1] + 2  # b1 and b6 only
    assert (await position(venue, "t-batch"))[0] == 0
    assert await collateral(venue, "t-batch") == D(11000)


async def test_movements_are_idempotent_by_id_and_conflicts_name_it(venue: asyncpg.Pool) -> None:
    feeds = LedgerFeeds(venue)
    await trader(feeds, "t-move", "100")
    funding = {
        "movement_id": "f1",
        "account_id": "t-move",
        "kind": "funding",
        "asset": "USDT",
        "amount": "-2.5",
    }
    assert (await feeds.movements([funding])).applied == 1
    assert (await feeds.movements([funding])).duplicate == 1
    conflict = await feeds.movements([{**funding, "amount": "-3"}])
    assert conflict.refused == 1 and conflict.records[0].detail.startswith("movement_id:")  # type: ignore[union-attr]
    out = await feeds.movements([{**funding, "movement_id": "f2", "kind": "collateral_in", "amount": "-1"}])
    assert out.refused == 1 and out.records[0].detail.startswith("amount:")  # type: ignore[union-attr]
    assert await collateral(venue, "t-move") == D("97.5")


@pytest.mark.parametrize("guard", ["open case", "initial margin"])
async def test_withdrawals_are_refused_during_a_case_and_below_initial_margin(
    venue: asyncpg.Pool, guard: str
) -> None:
    feeds = LedgerFeeds(venue)
    await trader(feeds, "t-wd", "1000")
    # 1 BTC at 50000: initial margin 50000 * 0.01 - 100 (the tier's cum) = 400, equity 1000.
    await feeds.trades([trade("w-open", "t-wd", "buy", "1", "50000")])
    if guard == "open case":
        await open_case(LedgerActivities(venue), "t-wd", "t-wd/c1")
        amount, field = "1", "account_id"
    else:
        amount, field = "600.000001", "amount"
    before = await counts(venue)
    withdrawal = {"withdrawal_id": "wd1", "account_id": "t-wd", "asset": "USDT", "amount": amount}
    answer = await feeds.withdrawals([withdrawal])
    assert answer.refused == 1 and answer.records[0].detail.startswith(f"{field}:"), answer  # type: ignore[union-attr]
    assert await counts(venue) == before and await collateral(venue, "t-wd") == D(1000)
    if guard == "open case":
        await venue.execute("UPDATE margin_call_cases SET closed_at = now(), state = 'CURED', outcome = '{}'")
    ok = await feeds.withdrawals([{**withdrawal, "withdrawal_id": "wd2", "amount": "600"}])
    assert ok.applied == 1, ok
    assert (await feeds.withdrawals([{**withdrawal, "withdrawal_id": "wd2", "amount": "600"}])).duplicate == 1
    conflict = await feeds.withdrawals([{**withdrawal, "withdrawal_id": "wd2", "amount": "400"}])
    assert conflict.records[0].detail.startswith("withdrawal_id:")  # type: ignore[union-attr]
    assert await collateral(venue, "t-wd") == D(400)  # equity exactly at initial margin is allowed


async def test_reconciliation_lists_every_difference_and_writes_nothing(venue: asyncpg.Pool) -> None:
    feeds = LedgerFeeds(venue)
    await trader(feeds, "t-rec", "1000")
    await feeds.trades([trade("r1", "t-rec", "buy", "1", "50000")])
    before = await counts(venue)
    same = await feeds.reconcile(
        {
            "account_id": "t-rec",
            "positions": [{"instrument": "BTCUSDT", "quantity": "1", "entry_price": "50000"}],
            "collateral": [{"asset": "USDT", "amount": "1000"}],
        }
    )
    assert same.agrees
    differs = await feeds.reconcile(
        {
            "account_id": "t-rec",
            "positions": [
                {"instrument": "BTCUSDT", "quantity": "0.9", "entry_price": "49000"},
                {"instrument": "ETHUSDT", "quantity": "2"},
            ],
            "collateral": [{"asset": "USDT", "amount": "999"}],
        }
    )
    assert [(d.field, d.ledger, d.exchange) for d in differs.differences] == [
        ("positions.BTCUSDT.quantity", D(1), D("0.9")),
        ("positions.BTCUSDT.entry_price", D(50000), D(49000)),
        ("positions.ETHUSDT.quantity", D(0), D(2)),
        ("collateral.USDT", D(1000), D(999)),
    ]
    assert await counts(venue) == before


async def test_reference_changes_are_audited_and_fixed_fields_refused(venue: asyncpg.Pool) -> None:
    feeds = LedgerFeeds(venue)
    tier = {"notional_floor": "0", "maintenance_rate": "0.01", "initial_rate": "0.02"}
    answer = await feeds.reference(
        [
            {"kind": "asset", "asset": "BTC", "decimals": 8, "price": "50000", "haircut": "0.05"},
            {"kind": "instrument", "instrument": "XRPUSDT", "quote_asset": "USDT", "tiers": [tier]},
            {
                "kind": "instrument",
                "instrument": "XRPUSDT",
                "quote_asset": "USDT",
                "tiers": [tier],
                "mark_price": "0.5",
            },
            {"kind": "asset", "asset": "USDT", "decimals": 2, "price": "1"},
            {"kind": "account", "account_id": "t-ref", "settlement_currency": "USDT", "policy_name": "vip"},
            {"kind": "account", "account_id": "t-ref", "settlement_currency": "BTC"},
            {"kind": "asset", "asset": "BTC", "decimals": 8, "price": "50000", "haircut": "0.1"},
            {"kind": "nonsense"},
        ],
        operator="dana",
    )
    status = [(r.status, r.detail and r.detail.split(":")[0]) for r in answer.records]
    assert status == [
        (RecordStatus.APPLIED, None),
        (RecordStatus.REFUSED, "mark_price"),
        (RecordStatus.APPLIED, None),
        (RecordStatus.REFUSED, "decimals"),
        (RecordStatus.APPLIED, None),
        (RecordStatus.REFUSED, "settlement_currency"),
        (RecordStatus.APPLIED, None),
        (RecordStatus.REFUSED, "kind"),
    ]
    audit = await venue.fetch(
        "SELECT kind, key, old, new, changed_by FROM reference_changes ORDER BY change_id"
    )
    assert [(r["kind"], r["key"], r["changed_by"]) for r in audit] == [
        ("asset", "BTC", "dana"),
        ("instrument", "XRPUSDT", "dana"),
        ("account", "t-ref", "dana"),
        ("asset", "BTC", "dana"),
    ]
    assert '"0.05"' in audit[3]["old"] and '"0.1"' in audit[3]["new"]
    again = await feeds.reference(
        [{"kind": "asset", "asset": "BTC", "decimals": 8, "price": "50000", "haircut": "0.1"}],
        operator="dana",
    )
    assert again.duplicate == 1
    assert await venue.fetchval("SELECT policy_name FROM accounts WHERE account_id = 't-ref'") == "vip"
