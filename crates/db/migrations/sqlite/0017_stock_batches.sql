-- inventory: the answers of `POST /admin/stock/batch` by Idempotency-Key, so an ERP that sends
-- a batch again (a retry after a lost answer) changes nothing and gets the first answer.
-- Kept 24 hours.
CREATE TABLE stock_batch_keys (
    key          TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    answer       TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX stock_batch_keys_created ON stock_batch_keys(created_at);
