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
    created_at   TEXT NOT NULL
);
CREATE INDEX risk_signals_email ON risk_signals(email_index, created_at);
CREATE INDEX risk_signals_client ON risk_signals(client_index, created_at);
CREATE INDEX risk_signals_created ON risk_signals(created_at);
CREATE INDEX risk_signals_order ON risk_signals(order_id);

-- orders: the checkout's risk assessment, as JSON ({"score", "decision", "reasons"}); NULL for
-- orders placed before scoring, or with scoring off.
ALTER TABLE orders ADD COLUMN risk TEXT;

-- orders may be held for review (`on_hold`), their payment authorised and not captured
-- (`authorized`, in the attempts and in the test provider's ledger). SQLite cannot alter a CHECK
-- constraint: rather than rebuild these tables (which would drop any column a migration added
-- meanwhile, and cascade-delete order lines), the stored definitions get the new values, as
-- SQLite documents for widening a constraint (lang_altertable.html, "Making Other Kinds Of
-- Table Schema Changes"). Only the IN lists change; existing rows stay valid. A definition
-- that no longer ends its list as 0004/0007 wrote it is left alone. `RESET` reloads this
-- connection's schema; the CREATE TABLE above bumped the schema cookie, so every other
-- connection reloads it too.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
   SET sql = replace(sql, '''payment_failed'', ''cancelled'')', '''payment_failed'', ''cancelled'', ''on_hold'')')
 WHERE type = 'table' AND name = 'orders';
UPDATE sqlite_master
   SET sql = replace(sql, '''voided'', ''refunded'')', '''voided'', ''refunded'', ''authorized'')')
 WHERE type = 'table' AND name IN ('payment_attempts', 'test_provider_charges');
PRAGMA writable_schema = RESET;
