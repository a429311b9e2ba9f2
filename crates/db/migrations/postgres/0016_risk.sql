-- risk: one row per scored checkout (`attempt`) and per declined payment (`decline`). Only
-- keyed hashes identify the shopper: of the e-mail (the orders' email_index), of the client
-- address and of the payment token. Rows older than two hours are pruned.
CREATE TABLE risk_signals (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    order_id     TEXT,
    email_index  TEXT NOT NULL,
    client_index TEXT,
    token_index  TEXT NOT NULL,
    currency     TEXT NOT NULL,
    amount       BIGINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX risk_signals_email ON risk_signals(email_index, created_at);
CREATE INDEX risk_signals_client ON risk_signals(client_index, created_at);
CREATE INDEX risk_signals_created ON risk_signals(created_at);
CREATE INDEX risk_signals_order ON risk_signals(order_id);

-- orders: the checkout's risk assessment, as JSON ({"score", "decision", "reasons"}); NULL for
-- orders placed before scoring, or with scoring off.
ALTER TABLE orders ADD COLUMN risk TEXT;
