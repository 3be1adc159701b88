"""The demo's operator: brings the stack up with the demo's policy, lets the exchange crash, audits the end.

The stack is the one ``margin-call up --sample-exchange`` runs (PostgreSQL,
Temporal, the webhook receiver, the worker sending liquidation orders to the
venue simulator, the risk monitor, the HTTP API), on a fresh data directory;
the exchange's side (``worker.demo.crash``) is given only the API's address and
token and the simulator's address.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from datetime import timedelta
from decimal import Decimal

from worker.config import Settings
from worker.demo.crash import play
from worker.demo.records import keep_records
from worker.demo.summary import audit
from worker.exchange.api import ApiClient
from worker.exchange.market import Market
from worker.stack import embedded_stack, fresh_data_dir
from workflows.domain.liquidation import LiquidationPolicy
from workflows.domain.policies import CasePolicy

POLICY = CasePolicy(
    deadline=timedelta(seconds=20),
    reminders_before_deadline=[timedelta(seconds=10)],
    pause_between_stages=timedelta(seconds=2),
    max_stages=4,
    notice_delivery_window=timedelta(seconds=15),
    # Orders may fill up to 0.1 % below the mark (never below the bankruptcy price).
    liquidation=LiquidationPolicy(fraction_per_stage=Decimal("0.25"), slippage=Decimal("0.001")),
)


def _say(line: str) -> None:
    print(line, flush=True)


async def run_demo(
    settings: Settings,
    *,
    temporal_port: int = 7233,
    receiver_port: int = 8377,
    api_port: int = 8080,
    venue_port: int = 8378,
    temporal_ui: bool = True,
) -> int:
    demo_dir = settings.data_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    # The demo is its own operator: its own data, its policy, a development token with every scope.
    settings = dataclasses.replace(settings, data_dir=demo_dir, api_tokens={})
    _say(
        "Starting the embedded stack (PostgreSQL, Temporal dev server, webhook receiver, venue simulator,"
        " worker, risk monitor, HTTP API)..."
    )
    async with (
        fresh_data_dir(demo_dir),
        embedded_stack(
            settings,
            temporal_port=temporal_port,
            receiver_port=receiver_port,
            api_port=api_port,
            venue_port=venue_port,
            temporal_ui=temporal_ui,
            policy=POLICY,
            monitor_interval=1.0,
        ) as stack,
    ):
        _say(stack.describe())
        _say(
            f"Case policy: deadline {POLICY.deadline.seconds} s, reminder 10 s before, stages of 25 %"
            f" {POLICY.pause_between_stages.seconds} s apart, hard threshold at"
            f" {POLICY.hard_threshold * 100:.0f} % of maintenance, orders at most"
            f" {POLICY.liquidation.slippage * 100:.1f} % below the mark."
        )
        assert stack.api_url and stack.api_token and stack.venue_url and stack.venue
        simulator = stack.venue

        def hook(market: Market | None) -> None:
            # The exchange's market maker requotes a book whose mark moved before an order matches.
            simulator.before_match = market.follow if market else None

        finished = await play(stack.api_url, stack.api_token, stack.venue_url, _say, on_market=hook)
        ok = await audit(stack, _say) and finished
        async with ApiClient.connect(stack.api_url, stack.api_token) as api:
            records = await keep_records(api, demo_dir / "records", _say)
        ok = ok and not records.problems
        _say(
            "\nThe cases stay on record. To work with them in the staff console (the list, each case's"
            " timeline and statement, the staff actions), run\n"
            f"  MARGIN_CALL_DATA_DIR={demo_dir} .venv/bin/margin-call up\n"
            f"and open {stack.api_url}/console/ (sign in with the API token it prints)"
            + (f"; the Temporal Web UI is at {stack.web_ui}" if stack.web_ui else "")
            + "."
        )
        if records.statements:
            _say("Each outcome's case in the console:")
            for outcome, (account, _) in records.statements.items():
                _say(f"  {outcome:<11} {stack.api_url}/console/cases/{account}")
    return 0 if ok else 1


def main(settings: Settings) -> int:
    try:
        return asyncio.run(run_demo(settings))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
