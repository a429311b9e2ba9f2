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

-- orders may be held for review (`on_hold`), their payment authorised and not captured
-- (`authorized`, in the attempts and in the test provider's ledger). Each CHECK is replaced
-- only when it lacks the new value, so a list another migration widened already stays as it is.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT * FROM (VALUES
        ('orders', 'orders_status_check', 'on_hold',
         '''pending_payment'', ''placed'', ''payment_failed'', ''cancelled'', ''on_hold'''),
        ('payment_attempts', 'payment_attempts_status_check', 'authorized',
         '''pending'', ''unknown'', ''captured'', ''declined'', ''voided'', ''refunded'', ''authorized'''),
        ('test_provider_charges', 'test_provider_charges_status_check', 'authorized',
         '''captured'', ''declined'', ''voided'', ''refunded'', ''authorized''')
    ) AS t(tbl, name, needs, allowed)
    LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_constraint
             WHERE conname = c.name AND conrelid = c.tbl::regclass
               AND pg_get_constraintdef(oid) LIKE '%''' || c.needs || '''%'
        ) THEN
            EXECUTE format('ALTER TABLE %I DROP CONSTRAINT IF EXISTS %I', c.tbl, c.name);
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (status IN (%s))', c.tbl, c.name, c.allowed);
        END IF;
    END LOOP;
END
$$;
