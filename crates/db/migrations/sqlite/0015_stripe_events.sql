-- Stripe webhook events already acted on (owned by the payments module's `stripe` provider).
-- A row is inserted, if absent, in the same transaction as the event's effect, so a
-- redelivered or concurrently duplicated event changes nothing.
CREATE TABLE stripe_events (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    received_at TEXT NOT NULL
);
