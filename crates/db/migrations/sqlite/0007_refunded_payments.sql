-- A charge can be refunded at the provider (its dashboard, or a refund before the order was
-- placed): attempts and the test provider's ledger can say so. SQLite cannot alter a CHECK
-- constraint, so both tables are rebuilt (no other table references them).
CREATE TABLE payment_attempts_new (
    id             TEXT PRIMARY KEY,
    order_id       TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    provider       TEXT NOT NULL,
    amount         BIGINT NOT NULL,
    currency       TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'unknown', 'captured', 'declined', 'voided', 'refunded')),
    reference      TEXT,
    decline_reason TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
INSERT INTO payment_attempts_new SELECT id, order_id, provider, amount, currency, status, reference,
    decline_reason, created_at, updated_at FROM payment_attempts;
DROP TABLE payment_attempts;
ALTER TABLE payment_attempts_new RENAME TO payment_attempts;
CREATE INDEX payment_attempts_status ON payment_attempts(status, created_at);
CREATE UNIQUE INDEX payment_attempts_order ON payment_attempts(order_id);

CREATE TABLE test_provider_charges_new (
    idempotency_key TEXT PRIMARY KEY,
    token           TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('captured', 'declined', 'voided', 'refunded')),
    reason          TEXT,
    reference       TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
INSERT INTO test_provider_charges_new SELECT idempotency_key, token, amount, currency, status, reason,
    reference, created_at FROM test_provider_charges;
DROP TABLE test_provider_charges;
ALTER TABLE test_provider_charges_new RENAME TO test_provider_charges;
