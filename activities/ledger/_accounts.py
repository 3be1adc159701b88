"""The ledger's vocabulary: kinds of ledger account, their names, kinds of transfer, a posting.

Domain only (no SQL, no I/O): the storage modules and the reference-data writes
build every name through these functions, so an account's name is spelt in one
place. Every balance is a ledger account named ``<kind>:<asset>`` (one per asset
for the exchange's own accounts) or ``collateral:<account>:<asset>`` (a
trader's collateral in one asset). The database's CHECK on
``ledger_accounts.kind`` lists the same kinds (and ``fees``, which nothing
books to: liquidation fees go to the insurance fund).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

# Kinds of ledger account.
COLLATERAL: Final = "collateral"
"""A trader's collateral in one asset; a negative balance is what the trader owes."""
INSURANCE_FUND: Final = "insurance_fund"
"""Receives liquidation fees and covers bankrupt traders' deficits; never below zero."""
MARKET: Final = "market"
"""The other side of every liquidation fill and collateral sale."""
EXTERNAL: Final = "external"
"""The world outside the exchange: deposits come from it, the fund's seed capital too."""
UNCOVERED_LOSS: Final = "uncovered_loss"
"""What the insurance fund could not cover, left for auto-deleveraging."""

SYSTEM_KINDS: Final = (INSURANCE_FUND, MARKET, EXTERNAL, UNCOVERED_LOSS)
"""The exchange's own accounts, one of each per asset, created with the asset."""

# Kinds of transfer (``transfers.kind``): what moved the money, for the audit and the reports.
DEPOSIT: Final = "deposit"
REALISED_PNL: Final = "realised_pnl"
LIQUIDATION_FEE: Final = "liquidation_fee"
COLLATERAL_SALE: Final = "collateral_sale"
INSURANCE_FUND_COVER: Final = "insurance_fund_cover"
UNCOVERED_LOSS_BOOKED: Final = "uncovered_loss"
INSURANCE_FUND_SEED: Final = "insurance_fund_seed"
# The feeds' transfers (``LedgerFeeds``): each kind its own, so reports and the audit can tell them apart.
TRADE_PNL: Final = "trade_pnl"
"""PnL a trade realised, between the market and the trader's collateral in the quote asset."""
TRADING_FEE: Final = "trading_fee"
"""A trade's fee, from the trader's collateral to the exchange's fees account."""
FUNDING: Final = "funding"
COLLATERAL_IN: Final = "collateral_in"
WITHDRAWAL: Final = "withdrawal"
FEES: Final = "fees"
"""The exchange's trading-fee revenue, one per asset (created with the first fee)."""


def collateral_account(account_id: str, asset: str) -> str:
    """The ledger account holding ``account_id``'s collateral in ``asset``."""
    return f"{COLLATERAL}:{account_id}:{asset}"


def system_account(kind: str, asset: str) -> str:
    """The exchange's own account of ``kind`` (one of ``SYSTEM_KINDS``) in ``asset``."""
    if kind not in SYSTEM_KINDS:
        raise ValueError(f"kind: {kind!r} is not one of the exchange's accounts {SYSTEM_KINDS}")
    return f"{kind}:{asset}"


def insurance_fund_account(asset: str) -> str:
    """The insurance fund in ``asset`` (``insurance_fund:USDT``)."""
    return system_account(INSURANCE_FUND, asset)


def market_account(asset: str) -> str:
    return system_account(MARKET, asset)


def external_account(asset: str) -> str:
    return system_account(EXTERNAL, asset)


def uncovered_loss_account(asset: str) -> str:
    return system_account(UNCOVERED_LOSS, asset)


def fees_account(asset: str) -> str:
    """The exchange's trading-fee revenue in ``asset`` (``fees:USDT``); not a system kind, made on demand."""
    return f"{FEES}:{asset}"


@dataclass(frozen=True)
class Posting:
    """One double-entry transfer to book: ``amount`` of ``asset`` from ``debit`` to ``credit``.

    ``transfer_id`` is the idempotency key: booking the same posting twice
    books it once, booking another body under the same id is refused.
    """

    transfer_id: str
    debit: str
    credit: str
    asset: str
    amount: Decimal
    kind: str
    case_id: str | None = None
    reference: str | None = None
