-- Marks carry the time the exchange stands behind them (as_of), and an
-- instrument can be halted by an operator: no case liquidates on a mark older
-- than its policy allows, nor sells a halted instrument, and the breach scan
-- opens no case from either. The as_of column is added the same idempotent
-- way by 0004 (the public marks feed), so either migration may come first.
ALTER TABLE mark_prices ADD COLUMN IF NOT EXISTS as_of timestamptz NOT NULL DEFAULT now();

ALTER TABLE instruments
    ADD COLUMN IF NOT EXISTS halted      boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS halt_reason text,
    ADD COLUMN IF NOT EXISTS halted_by   text,
    ADD COLUMN IF NOT EXISTS halted_at   timestamptz;

-- Every halt and resume, who and why: the instrument row holds the current
-- state, this table the history an auditor asks for.
CREATE TABLE IF NOT EXISTS instrument_halts (
    event_id   bigserial PRIMARY KEY,
    instrument text NOT NULL REFERENCES instruments,
    action     text NOT NULL CHECK (action IN ('halt', 'resume')),
    operator   text NOT NULL CHECK (length(operator) BETWEEN 1 AND 500),
    reason     text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS instrument_halts_by_instrument ON instrument_halts (instrument, event_id);
