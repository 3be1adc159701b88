"""The ledger: a double-entry book of every trader's collateral and the exchange's own accounts, in PostgreSQL.

Import from here; the private modules behind it are its layout, not its API.

Domain (pure, no SQL):
    ``_accounts``    kinds of ledger account and transfer, how accounts are named, a posting
    ``_pricing``     a stage's fills, PnL and fee, a bankruptcy's sales and cover, and their rounding

Storage (SQL):
    ``_store``       create ledger accounts, post a transfer, read a balance
    ``_snapshot``    one account at its marks (``load_margin_snapshot``), the breach scan
    ``_cases``       the case's row, audit trail, outcome, waivers and owed notices
    ``_stages``      booking a liquidation stage (with its checkpoints)
    ``_bankruptcy``  settling a bankrupt account
    ``_deposits``    crediting a deposit
    ``_reads``       what the API, CLI and demo ask of the books
    ``_batches``     a feed's batch: each record validated alone, applied in its own savepoint
    ``_marks``       marks and asset prices, only forward in ``as_of`` (one statement a batch)
    ``_trading``     what a fill does to a position (pure: average entry, reduce, flip)
    ``_trades``      booking a fill: position, realised PnL and fee, once per trade id
    ``_movements``   funding, collateral in, withdrawals (refused during a case or below initial margin)
    ``_reference_feed`` assets, instruments, accounts, each change audited
    ``_reconcile``   the exchange's view of an account against the ledger's
    ``_warnings``    warnings before the call: who is near a call, each warning once, re-arming
    ``_calls``       each margin call as made, and the day's calls for the regulator's record
    ``_inputs``      what each step of a case saw (opening, close, notices), for its statement
    ``_statement``   a case's statement, assembled from those records and the case's rows
    ``_adl``         the auto-deleveraging ranking of a loss the insurance fund could not cover

Adapters:
    ``LedgerActivities``  the case workflow's activities (``_activities``)
    ``PostgresDeposits``  the client's ``DepositLedger`` (``_deposits``)
    ``LedgerFeeds``       the feeds' in-process client: marks, trades, movements, withdrawals,
                          reference data, reconciliation (``_feeds``)
    ``LedgerWarnings``    the risk monitor's warnings (``_warnings``)

Public modules beside them: ``reference`` (the venue's reference-data writes),
``audit`` (is the ledger in balance, do the invariants hold), ``migrate`` (the
schema, from ``migrations/``).
"""

from __future__ import annotations

from activities.ledger._accounts import (
    COLLATERAL,
    COLLATERAL_IN,
    COLLATERAL_SALE,
    DEPOSIT,
    EXTERNAL,
    FUNDING,
    INSURANCE_FUND,
    INSURANCE_FUND_COVER,
    INSURANCE_FUND_SEED,
    LIQUIDATION_FEE,
    MARKET,
    REALISED_PNL,
    SYSTEM_KINDS,
    TRADE_PNL,
    TRADING_FEE,
    UNCOVERED_LOSS,
    UNCOVERED_LOSS_BOOKED,
    WITHDRAWAL,
    Posting,
    collateral_account,
    external_account,
    insurance_fund_account,
    market_account,
    system_account,
    uncovered_loss_account,
)
from activities.ledger._activities import LedgerActivities
from activities.ledger._calls import CallRecord, calls_on
from activities.ledger._deposits import PostgresDeposits, credit_deposit
from activities.ledger._feeds import LedgerFeeds
from activities.ledger._inputs import NoticeJournal
from activities.ledger._movements import WithdrawalRefused
from activities.ledger._pricing import DeficitCover, cover_deficit, fill_order, sell_collateral, stage_fee
from activities.ledger._reads import (
    CaseCounts,
    CasesSummary,
    Outcome,
    VenueBookings,
    account_exists,
    case_counts,
    cases_summary,
    closed_case_state,
    settlement_currency,
    venue_bookings,
)
from activities.ledger._snapshot import load_margin_snapshot
from activities.ledger._stages import (
    STAGE_AFTER_COMMIT,
    STAGE_CHECKED,
    STAGE_IN_TRANSACTION,
    Checkpoint,
    no_checkpoint,
)
from activities.ledger._statement import case_statement
from activities.ledger._store import (
    balance_of,
    ensure_collateral_account,
    ensure_system_accounts,
    post_transfer,
)
from activities.ledger._venue_stages import STAGE_ORDER_SENT
from activities.ledger._warnings import LedgerWarnings

__all__ = [
    "COLLATERAL",
    "COLLATERAL_IN",
    "COLLATERAL_SALE",
    "DEPOSIT",
    "EXTERNAL",
    "FUNDING",
    "INSURANCE_FUND",
    "INSURANCE_FUND_COVER",
    "INSURANCE_FUND_SEED",
    "LIQUIDATION_FEE",
    "MARKET",
    "REALISED_PNL",
    "STAGE_AFTER_COMMIT",
    "STAGE_CHECKED",
    "STAGE_IN_TRANSACTION",
    "STAGE_ORDER_SENT",
    "SYSTEM_KINDS",
    "TRADE_PNL",
    "TRADING_FEE",
    "UNCOVERED_LOSS",
    "UNCOVERED_LOSS_BOOKED",
    "WITHDRAWAL",
    "CallRecord",
    "CaseCounts",
    "CasesSummary",
    "Checkpoint",
    "DeficitCover",
    "LedgerActivities",
    "LedgerFeeds",
    "LedgerWarnings",
    "NoticeJournal",
    "Outcome",
    "PostgresDeposits",
    "Posting",
    "VenueBookings",
    "WithdrawalRefused",
    "account_exists",
    "balance_of",
    "calls_on",
    "case_counts",
    "case_statement",
    "cases_summary",
    "closed_case_state",
    "collateral_account",
    "cover_deficit",
    "credit_deposit",
    "ensure_collateral_account",
    "ensure_system_accounts",
    "external_account",
    "fill_order",
    "insurance_fund_account",
    "load_margin_snapshot",
    "market_account",
    "no_checkpoint",
    "post_transfer",
    "sell_collateral",
    "settlement_currency",
    "stage_fee",
    "system_account",
    "uncovered_loss_account",
    "venue_bookings",
]
