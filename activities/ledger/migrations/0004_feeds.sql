-- The feeds an exchange tells the ledger what happened through (issue 12):
-- marks with the moment they were taken, trades, withdrawals, and the audit of
-- reference-data changes.

-- Marks only move forward: each carries the moment it was taken. (0006_halts
-- adds the same column the same idempotent way, so either order works.)
ALTER TABLE mark_prices ADD COLUMN IF NOT EXISTS as_of timestamptz NOT NULL DEFAULT now();
ALTER TABLE assets ADD COLUMN IF NOT EXISTS price_as_of timestamptz NOT NULL DEFAULT now();

-- The operator's policy name for the account's cases (NULL: the standard one).
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS policy_name text
    CHECK (policy_name IS NULL OR length(policy_name) BETWEEN 1 AND 64);

-- Exchange trading fees are the exchange's revenue, in an account of their own.
-- (The 'fees' kind was already allowed; nothing booked to it before.)

-- Every fill from the matching engine, once per trade id, with what it did.
CREATE TABLE trades (
    trade_id     text PRIMARY KEY CHECK (length(trade_id) BETWEEN 1 AND 128),
    account_id   text NOT NULL REFERENCES accounts,
    instrument   text NOT NULL REFERENCES instruments,
    side         text NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity     numeric NOT NULL CHECK (quantity > 0 AND quantity < 'Infinity'),
    price        numeric NOT NULL CHECK (price > 0 AND price < 'Infinity'),
    fee          numeric NOT NULL CHECK (fee >= 0 AND fee < 'Infinity'),
    realised_pnl numeric NOT NULL CHECK (realised_pnl > '-Infinity' AND realised_pnl < 'Infinity'),
    booked_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trades_account ON trades (account_id);

CREATE TABLE withdrawals (
    withdrawal_id text PRIMARY KEY CHECK (length(withdrawal_id) BETWEEN 1 AND 128),
    account_id    text NOT NULL REFERENCES accounts,
    asset         text NOT NULL REFERENCES assets,
    amount        numeric NOT NULL CHECK (amount > 0 AND amount < 'Infinity'),
    transfer_id   text NOT NULL UNIQUE REFERENCES transfers,
    withdrawn_at  timestamptz NOT NULL DEFAULT now()
);

-- What reference data changed, from what to what, when and by whom.
CREATE TABLE reference_changes (
    change_id  bigserial PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('asset', 'instrument', 'account')),
    key        text NOT NULL,
    old        jsonb,
    new        jsonb NOT NULL,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reference_changes_key ON reference_changes (kind, key, changed_at);
