-- Warnings before the call (issue 13), and the record of each call that the
-- regulator's daily report reads (FINRA Rule 4220).

-- One row per warning level spent: a warning sent (notice_id), or a margin
-- call that came first (case_id: the call says more than any warning, and the
-- levels it passed are not warned again on the way back). A warning is sent
-- when the account fell below level x maintenance (a level of its policy, e.g.
-- 1.5 and 1.2) while still above maintenance. A row holds (rearmed_at IS NULL)
-- until the account is clearly back above its level (equity > rearm_above x
-- maintenance); only then may the level warn again, as the next episode. At
-- most one row per account and level holds at a time, so a scan that repeats
-- writes nothing twice.
CREATE TABLE margin_warnings (
    account_id         text NOT NULL REFERENCES accounts,
    level              numeric NOT NULL CHECK (level > 1 AND level < 'Infinity'),
    episode            integer NOT NULL CHECK (episode >= 1),
    currency           text NOT NULL REFERENCES assets,
    equity             numeric NOT NULL CHECK (equity > '-Infinity' AND equity < 'Infinity'),
    maintenance_margin numeric NOT NULL CHECK (maintenance_margin >= 0 AND maintenance_margin < 'Infinity'),
    distance_to_call   numeric NOT NULL CHECK (distance_to_call > '-Infinity' AND distance_to_call < 'Infinity'),
    rearm_above        numeric NOT NULL CHECK (rearm_above < 'Infinity'),
    notice_id          text UNIQUE,
    case_id            text REFERENCES margin_call_cases,
    warned_at          timestamptz NOT NULL DEFAULT now(),
    rearmed_at         timestamptz,
    PRIMARY KEY (account_id, level, episode),
    -- A warning sent, or a level spent by a call: one or the other.
    CHECK ((notice_id IS NULL) <> (case_id IS NULL)),
    -- A warning is sent above maintenance and below its level: never with or after the call.
    CHECK (notice_id IS NULL OR (equity >= maintenance_margin AND equity < level * maintenance_margin)),
    CHECK (distance_to_call = equity - maintenance_margin),
    CHECK (rearm_above >= level)
);
CREATE UNIQUE INDEX margin_warnings_holding ON margin_warnings (account_id, level) WHERE rearmed_at IS NULL;
CREATE INDEX margin_warnings_by_time ON margin_warnings (account_id, warned_at);

-- A warning's notice has no case: the outbox delivers it like any other, and
-- only a warning may come without one.
ALTER TABLE notice_outbox ALTER COLUMN case_id DROP NOT NULL;
ALTER TABLE notice_outbox ADD CONSTRAINT notice_outbox_case_or_warning
    CHECK (case_id IS NOT NULL OR (notice_id LIKE 'warning:%' AND body->>'kind' = 'margin_call.warning'));

-- The call itself, written in the transaction that opens the case on an account
-- in breach: the shortfall the case read, the deposit it asked for (the
-- shortfall rounded up to the currency's unit) and when it was due. A case
-- that opens on a healthy account (closed CURED at once, no notice) made no
-- call and has no row. How the call was met is read from the case's close.
CREATE TABLE margin_calls (
    case_id       text PRIMARY KEY REFERENCES margin_call_cases,
    account_id    text NOT NULL REFERENCES accounts,
    currency      text NOT NULL REFERENCES assets,
    called_at     timestamptz NOT NULL,
    shortfall     numeric NOT NULL CHECK (shortfall > 0 AND shortfall < 'Infinity'),
    deposit_asked numeric NOT NULL CHECK (deposit_asked >= shortfall AND deposit_asked < 'Infinity'),
    due_at        timestamptz NOT NULL CHECK (due_at > called_at),
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX margin_calls_by_day ON margin_calls (called_at);

-- Money credited to a trader's collateral (deposits, collateral arriving), by
-- account and time: how a call was met reads what came in during its case.
CREATE INDEX transfers_credited ON transfers (credit_account, created_at)
    WHERE kind IN ('deposit', 'collateral_in');
