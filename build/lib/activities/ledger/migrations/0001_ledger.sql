-- The ledger: double-entry transfers between ledger accounts, positions at mark
-- prices, liquidation fills and the margin call case records.
-- Money is numeric; every CHECK refuses NaN and infinities ('NaN' sorts above
-- 'Infinity' in PostgreSQL, so "< 'Infinity'" excludes both).

CREATE TABLE assets (
    asset      text PRIMARY KEY CHECK (asset ~ '^[A-Z0-9]{2,12}$'),
    decimals   integer NOT NULL CHECK (decimals BETWEEN 0 AND 18),
    price      numeric NOT NULL CHECK (price > 0 AND price < 'Infinity'),
    haircut    numeric NOT NULL DEFAULT 0 CHECK (haircut >= 0 AND haircut < 1)
);
COMMENT ON TABLE assets IS 'Collateral assets: price in the settlement currency and haircut';

CREATE TABLE accounts (
    account_id          text PRIMARY KEY CHECK (length(account_id) BETWEEN 1 AND 128),
    settlement_currency text NOT NULL REFERENCES assets,
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- Every balance is a ledger account: a trader's collateral per asset, the
-- insurance fund (which also receives liquidation fees), the market the
-- liquidation engine trades against, the outside world deposits come from, and
-- the loss nobody covered (left for auto-deleveraging).
CREATE TABLE ledger_accounts (
    ledger_account text PRIMARY KEY,
    kind           text NOT NULL
                   CHECK (kind IN ('collateral', 'insurance_fund', 'fees', 'market', 'external', 'uncovered_loss')),
    asset          text NOT NULL REFERENCES assets,
    account_id     text REFERENCES accounts,
    balance        numeric NOT NULL DEFAULT 0 CHECK (balance > '-Infinity' AND balance < 'Infinity'),
    CHECK ((kind = 'collateral') = (account_id IS NOT NULL)),
    CHECK (kind <> 'insurance_fund' OR balance >= 0)
);
CREATE UNIQUE INDEX ledger_accounts_collateral ON ledger_accounts (account_id, asset) WHERE kind = 'collateral';

CREATE TABLE transfers (
    transfer_id    text PRIMARY KEY CHECK (length(transfer_id) BETWEEN 1 AND 300),
    debit_account  text NOT NULL REFERENCES ledger_accounts,
    credit_account text NOT NULL REFERENCES ledger_accounts,
    asset          text NOT NULL REFERENCES assets,
    amount         numeric NOT NULL CHECK (amount > 0 AND amount < 'Infinity'),
    kind           text NOT NULL,
    case_id        text,
    reference      text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (debit_account <> credit_account)
);
CREATE INDEX transfers_case ON transfers (case_id) WHERE case_id IS NOT NULL;

-- Post one transfer: insert it, and if it is new move the balances in the same
-- transaction. Returns 'posted', 'duplicate' (same body seen before) or
-- 'conflict' (same id, another body); the caller turns 'conflict' into an error.
CREATE FUNCTION post_transfer(
    p_id text, p_debit text, p_credit text, p_asset text, p_amount numeric,
    p_kind text, p_case_id text, p_reference text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    inserted integer;
    existing transfers%ROWTYPE;
BEGIN
    INSERT INTO transfers (transfer_id, debit_account, credit_account, asset, amount, kind, case_id, reference)
    VALUES (p_id, p_debit, p_credit, p_asset, p_amount, p_kind, p_case_id, p_reference)
    ON CONFLICT (transfer_id) DO NOTHING;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    IF inserted = 1 THEN
        UPDATE ledger_accounts SET balance = balance - p_amount
         WHERE ledger_account = p_debit AND asset = p_asset;
        IF NOT FOUND THEN RAISE EXCEPTION 'debit account % does not hold %', p_debit, p_asset; END IF;
        UPDATE ledger_accounts SET balance = balance + p_amount
         WHERE ledger_account = p_credit AND asset = p_asset;
        IF NOT FOUND THEN RAISE EXCEPTION 'credit account % does not hold %', p_credit, p_asset; END IF;
        RETURN 'posted';
    END IF;
    SELECT * INTO existing FROM transfers WHERE transfer_id = p_id;
    IF existing.debit_account = p_debit AND existing.credit_account = p_credit
       AND existing.asset = p_asset AND existing.amount = p_amount AND existing.kind = p_kind
       AND existing.case_id IS NOT DISTINCT FROM p_case_id
       AND existing.reference IS NOT DISTINCT FROM p_reference THEN
        RETURN 'duplicate';
    END IF;
    RETURN 'conflict';
END;
$$;

CREATE TABLE instruments (
    instrument    text PRIMARY KEY CHECK (length(instrument) BETWEEN 1 AND 64),
    quote_asset   text NOT NULL REFERENCES assets,
    quantity_step numeric NOT NULL DEFAULT 0.00000001 CHECK (quantity_step > 0 AND quantity_step < 'Infinity')
);

-- Tier tables: only floors and rates are stored; the cumulative maintenance
-- amounts are derived (view below), never typed in.
CREATE TABLE instrument_tiers (
    instrument       text NOT NULL REFERENCES instruments,
    notional_floor   numeric NOT NULL CHECK (notional_floor >= 0 AND notional_floor < 'Infinity'),
    maintenance_rate numeric NOT NULL CHECK (maintenance_rate >= 0 AND maintenance_rate < 1),
    initial_rate     numeric NOT NULL CHECK (initial_rate >= maintenance_rate AND initial_rate <= 1),
    PRIMARY KEY (instrument, notional_floor)
);

CREATE VIEW instrument_tier_bands AS
SELECT instrument, notional_floor, next_floor, maintenance_rate, initial_rate,
       sum(notional_floor * (maintenance_rate - coalesce(previous_mmr, 0)))
           OVER (PARTITION BY instrument ORDER BY notional_floor) AS maintenance_cum,
       sum(notional_floor * (initial_rate - coalesce(previous_imr, 0)))
           OVER (PARTITION BY instrument ORDER BY notional_floor) AS initial_cum
  FROM (SELECT t.*,
               lag(maintenance_rate) OVER w AS previous_mmr,
               lag(initial_rate) OVER w AS previous_imr,
               lead(notional_floor) OVER w AS next_floor
          FROM instrument_tiers t
        WINDOW w AS (PARTITION BY instrument ORDER BY notional_floor)) banded;

CREATE TABLE mark_prices (
    instrument text PRIMARY KEY REFERENCES instruments,
    price      numeric NOT NULL CHECK (price > 0 AND price < 'Infinity'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE positions (
    account_id  text NOT NULL REFERENCES accounts,
    instrument  text NOT NULL REFERENCES instruments,
    quantity    numeric NOT NULL CHECK (quantity > '-Infinity' AND quantity < 'Infinity'),
    entry_price numeric NOT NULL CHECK (entry_price > 0 AND entry_price < 'Infinity'),
    PRIMARY KEY (account_id, instrument)
);
CREATE INDEX positions_open ON positions (instrument) WHERE quantity <> 0;

CREATE TABLE deposits (
    deposit_id  text PRIMARY KEY CHECK (length(deposit_id) BETWEEN 1 AND 128),
    account_id  text NOT NULL REFERENCES accounts,
    asset       text NOT NULL REFERENCES assets,
    amount      numeric NOT NULL CHECK (amount > 0 AND amount < 'Infinity'),
    transfer_id text NOT NULL UNIQUE REFERENCES transfers,
    credited_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE margin_call_cases (
    case_id    text PRIMARY KEY,
    account_id text NOT NULL REFERENCES accounts,
    call_id    text NOT NULL,
    state      text NOT NULL,
    opened_at  timestamptz NOT NULL,
    closed_at  timestamptz,
    outcome    jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX margin_call_cases_account ON margin_call_cases (account_id);

-- The audit trail of a case: staff actions with operator and reason, stages, close.
CREATE TABLE case_events (
    case_id  text NOT NULL REFERENCES margin_call_cases,
    event_id text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    kind     text NOT NULL,
    operator text,
    reason   text,
    detail   jsonb,
    PRIMARY KEY (case_id, event_id)
);

CREATE TABLE liquidation_stages (
    case_id     text NOT NULL REFERENCES margin_call_cases,
    stage       integer NOT NULL CHECK (stage >= 1),
    account_id  text NOT NULL REFERENCES accounts,
    plan        jsonb NOT NULL,
    result      jsonb NOT NULL,
    executed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, stage)
);

CREATE TABLE liquidation_fills (
    case_id      text NOT NULL,
    stage        integer NOT NULL,
    instrument   text NOT NULL REFERENCES instruments,
    account_id   text NOT NULL REFERENCES accounts,
    side         text NOT NULL CHECK (side IN ('sell', 'buy')),
    quantity     numeric NOT NULL CHECK (quantity > 0 AND quantity < 'Infinity'),
    mark_price   numeric NOT NULL CHECK (mark_price > 0 AND mark_price < 'Infinity'),
    fill_price   numeric NOT NULL CHECK (fill_price > 0 AND fill_price < 'Infinity'),
    notional     numeric NOT NULL CHECK (notional > 0 AND notional < 'Infinity'),
    realised_pnl numeric NOT NULL CHECK (realised_pnl > '-Infinity' AND realised_pnl < 'Infinity'),
    fee          numeric NOT NULL CHECK (fee >= 0 AND fee < 'Infinity'),
    PRIMARY KEY (case_id, stage, instrument),
    FOREIGN KEY (case_id, stage) REFERENCES liquidation_stages
);

CREATE TABLE bankruptcy_settlements (
    case_id          text PRIMARY KEY REFERENCES margin_call_cases,
    account_id       text NOT NULL REFERENCES accounts,
    deficit          numeric NOT NULL CHECK (deficit >= 0 AND deficit < 'Infinity'),
    covered_by_fund  numeric NOT NULL CHECK (covered_by_fund >= 0 AND covered_by_fund < 'Infinity'),
    uncovered_loss   numeric NOT NULL CHECK (uncovered_loss >= 0 AND uncovered_loss < 'Infinity'),
    settled_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (covered_by_fund + uncovered_loss = deficit)
);
