-- The auto-deleveraging ranking of a bankruptcy whose loss the insurance fund
-- could not cover (issue 13): per instrument the bankrupt account was
-- liquidated in, the accounts holding the opposite side in profit, ranked as
-- Binance ranks them: score = PnL ratio x effective leverage, where
-- PnL ratio = unrealised PnL / |quantity x entry price| and
-- effective leverage = |quantity x mark| / the account's equity.
-- Written once per case, right after the settlement that booked the
-- uncovered loss; the header row marks the ranking done (even when nobody
-- holds the opposite side in profit).
CREATE TABLE adl_rankings (
    case_id        text PRIMARY KEY REFERENCES bankruptcy_settlements,
    account_id     text NOT NULL REFERENCES accounts,
    currency       text NOT NULL REFERENCES assets,
    uncovered_loss numeric NOT NULL CHECK (uncovered_loss > 0 AND uncovered_loss < 'Infinity'),
    formula        text NOT NULL,
    ranked_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE adl_ranking_entries (
    case_id            text NOT NULL REFERENCES adl_rankings,
    instrument         text NOT NULL REFERENCES instruments,
    rank               integer NOT NULL CHECK (rank >= 1),
    account_id         text NOT NULL REFERENCES accounts,
    side               text NOT NULL CHECK (side IN ('long', 'short')),
    quantity           numeric NOT NULL CHECK (quantity <> 0 AND quantity > '-Infinity' AND quantity < 'Infinity'),
    entry_price        numeric NOT NULL CHECK (entry_price > 0 AND entry_price < 'Infinity'),
    mark_price         numeric NOT NULL CHECK (mark_price > 0 AND mark_price < 'Infinity'),
    unrealised_pnl     numeric NOT NULL CHECK (unrealised_pnl > 0 AND unrealised_pnl < 'Infinity'),
    equity             numeric NOT NULL CHECK (equity > 0 AND equity < 'Infinity'),
    pnl_ratio          numeric NOT NULL CHECK (pnl_ratio > 0 AND pnl_ratio < 'Infinity'),
    effective_leverage numeric NOT NULL CHECK (effective_leverage > 0 AND effective_leverage < 'Infinity'),
    score              numeric NOT NULL CHECK (score > 0 AND score < 'Infinity'),
    PRIMARY KEY (case_id, instrument, rank),
    UNIQUE (case_id, instrument, account_id)
);
