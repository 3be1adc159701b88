-- Case ids are "<account>/<call>" and may reach 257 characters; transfer ids
-- built from them (liquidation:<case>:<stage>:<instrument>:pnl) must fit, or a
-- stage for a long account id could never be booked.
ALTER TABLE transfers DROP CONSTRAINT transfers_transfer_id_check;
ALTER TABLE transfers ADD CONSTRAINT transfers_transfer_id_check CHECK (length(transfer_id) BETWEEN 1 AND 1000);

-- Notices a closed case still owes the trader. The case completes at once
-- (a new breach may open a new case) and a dispatcher delivers these, signed
-- and retried, until each is delivered or its window has passed.
CREATE TABLE notice_outbox (
    notice_id       text PRIMARY KEY,
    case_id         text NOT NULL REFERENCES margin_call_cases,
    body            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    deliver_by      timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    failed_at       timestamptz,
    last_error      text
);
CREATE INDEX notice_outbox_due ON notice_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

-- A waive is a decision with a scope: the risk monitor opens no new case for
-- the account until "until" (or, with none, until the account is seen
-- healthy), unless the account falls past the hard threshold.
CREATE TABLE waivers (
    case_id    text PRIMARY KEY REFERENCES margin_call_cases,
    account_id text NOT NULL REFERENCES accounts,
    until      timestamptz,
    operator   text NOT NULL,
    reason     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    ended_at   timestamptz,
    ended_why  text
);
CREATE INDEX waivers_active ON waivers (account_id) WHERE ended_at IS NULL;

-- Collateral in other assets sold to cover a deficit before the insurance
-- fund paid anything: asset, amount, price, proceeds, fee.
ALTER TABLE bankruptcy_settlements ADD COLUMN collateral_sold jsonb NOT NULL DEFAULT '[]';
