-- Liquidation orders sent to an exchange's order gateway (the `http` venue).
-- One row per order, keyed by its client order id, written before the order
-- is sent: a retry after a crash finds it and resends the same order (the
-- gateway answers a seen id with that order's result). `booked` turns true in
-- the one transaction that books the order's fills (position, PnL, fee), so
-- booking twice is a no-op. `attempt` moves on only after a rejection.
CREATE TABLE venue_orders (
    client_order_id  text PRIMARY KEY,
    case_id          text NOT NULL,
    stage            integer NOT NULL CHECK (stage >= 1),
    instrument       text NOT NULL REFERENCES instruments,
    attempt          integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    account_id       text NOT NULL REFERENCES accounts,
    side             text NOT NULL CHECK (side IN ('sell', 'buy')),
    quantity         numeric NOT NULL CHECK (quantity > 0 AND quantity < 'Infinity'),
    "limit"          numeric NOT NULL CHECK ("limit" > 0 AND "limit" < 'Infinity'),
    mark_price       numeric NOT NULL CHECK (mark_price > 0 AND mark_price < 'Infinity'),
    status           text NOT NULL DEFAULT 'new'
                     CHECK (status IN ('new', 'filled', 'partially_filled', 'cancelled', 'rejected')),
    filled_quantity  numeric NOT NULL DEFAULT 0 CHECK (filled_quantity >= 0 AND filled_quantity <= quantity),
    average_price    numeric CHECK (average_price > 0 AND average_price < 'Infinity'),
    fee              numeric NOT NULL DEFAULT 0 CHECK (fee >= 0 AND fee < 'Infinity'),
    reason           text,
    booked           boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (case_id, stage, instrument, attempt),
    -- Only a final answer is booked; an order with fills has their price.
    CHECK (NOT booked OR status <> 'new'),
    CHECK (filled_quantity = 0 OR average_price IS NOT NULL)
);
CREATE INDEX venue_orders_by_case ON venue_orders (case_id, stage);
-- Orders out (unbooked) of an account: no stage sells at the mark while one exists, and the next
-- stage through the venue resends them first, whichever case wrote them.
CREATE INDEX venue_orders_out ON venue_orders (account_id) WHERE NOT booked;
