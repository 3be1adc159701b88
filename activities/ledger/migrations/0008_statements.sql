-- A case's statement (issue 13): what each step of a case saw, recorded as it
-- happened, so that every figure a statement shows can be recomputed from the
-- inputs it lists. Cases opened before this migration have no such rows: their
-- statement says which inputs were not recorded, and invents none.

-- The account as the case opened on it (positions with marks, their as_of and
-- tier tables; collateral with prices and haircuts; the figures), and the
-- policy it ran under. Written in the open_case transaction, once per case: a
-- retried open_case returns this snapshot, so the statement and the case saw
-- the same thing.
CREATE TABLE case_openings (
    case_id        text PRIMARY KEY REFERENCES margin_call_cases,
    snapshot       jsonb NOT NULL,
    policy_name    text NOT NULL CHECK (length(policy_name) BETWEEN 1 AND 64),
    -- The version of the named policy in the worker's book (NULL: the book did not name it).
    policy_version integer CHECK (policy_version >= 1),
    -- The case's policy as it ran, overrides included (NULL: the opening carried none).
    policy         jsonb,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);

-- The account as the ledger showed it when the case's outcome was written
-- (in the close_case transaction, once per case).
CREATE TABLE case_closings (
    case_id     text PRIMARY KEY REFERENCES margin_call_cases,
    snapshot    jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- The account each stage checked the breach on and sold from (its prices are
-- the ones the stage filled at); NULL for stages booked before this migration.
ALTER TABLE liquidation_stages ADD COLUMN IF NOT EXISTS snapshot_before jsonb;

-- What a settlement worked from: the account before the sale of its other
-- collateral, the settlement currency's price, the insurance fund's balance
-- before it paid, and the fee rate; NULL for settlements before this migration.
ALTER TABLE bankruptcy_settlements ADD COLUMN IF NOT EXISTS inputs jsonb;

-- Each notice the case sent itself (the deliver_notice activity): when the
-- case sent it, each attempt, and whether the notification service took it.
-- Notices a closed case still owed are in notice_outbox. No foreign key: a
-- journal row is a record of a delivery, and never fails one.
CREATE TABLE notice_deliveries (
    notice_id        text PRIMARY KEY,
    case_id          text NOT NULL,
    kind             text NOT NULL,
    sent_at          timestamptz NOT NULL,
    attempts         integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    first_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    outcome          text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'refused', 'unconfigured', 'error')),
    status_code      integer,
    detail           text
);
CREATE INDEX notice_deliveries_by_case ON notice_deliveries (case_id);
