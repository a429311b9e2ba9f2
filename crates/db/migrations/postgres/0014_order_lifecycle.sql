-- Orders after the sale (issue 14): the order's status set becomes pending_payment, placed,
-- on_hold, completed, canceled (payment_failed and cancelled rows become canceled); orders
-- gain payment_status, fulfillment_status, refunded_total and refunds_held (the refunds not
-- failed, the figure a new refund is checked against); lines gain an id and unit counters;
-- fulfilments, shipments, refunds and returns get tables of their own.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
UPDATE orders SET status = 'canceled' WHERE status IN ('payment_failed', 'cancelled');
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('pending_payment', 'placed', 'on_hold', 'completed', 'canceled'));
ALTER TABLE orders ADD COLUMN payment_status TEXT NOT NULL DEFAULT 'pending'
    CHECK (payment_status IN ('pending', 'authorized', 'captured', 'partially_refunded', 'refunded', 'voided'));
ALTER TABLE orders ADD COLUMN fulfillment_status TEXT NOT NULL DEFAULT 'not_fulfilled'
    CHECK (fulfillment_status IN ('not_fulfilled', 'partially_fulfilled', 'fulfilled', 'partially_shipped', 'shipped', 'delivered'));
ALTER TABLE orders ADD COLUMN refunded_total BIGINT NOT NULL DEFAULT 0 CHECK (refunded_total >= 0);
ALTER TABLE orders ADD COLUMN refunds_held BIGINT NOT NULL DEFAULT 0 CHECK (refunds_held >= 0);
UPDATE orders SET payment_status = CASE status WHEN 'placed' THEN 'captured' WHEN 'pending_payment' THEN 'pending' ELSE 'voided' END;
UPDATE order_history SET status = 'canceled' WHERE status IN ('payment_failed', 'cancelled');

-- Lines: an id (`item_…`, unique within its order) and how many units left stock, went out
-- in a shipment, arrived, came back.
ALTER TABLE order_lines ADD COLUMN id TEXT;
UPDATE order_lines SET id = 'item_' || order_id || '_' || position;
CREATE UNIQUE INDEX order_lines_id ON order_lines(order_id, id);
ALTER TABLE order_lines ADD COLUMN fulfilled_quantity BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_lines ADD COLUMN shipped_quantity BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_lines ADD COLUMN delivered_quantity BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_lines ADD COLUMN returned_quantity BIGINT NOT NULL DEFAULT 0;

CREATE TABLE order_fulfillments (
    id           TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    location_id  TEXT,
    status       TEXT NOT NULL CHECK (status IN ('fulfilled', 'shipped', 'delivered')),
    created_at   TIMESTAMPTZ NOT NULL,
    shipped_at   TIMESTAMPTZ,
    delivered_at TIMESTAMPTZ
);
CREATE INDEX order_fulfillments_order ON order_fulfillments(order_id, id);

-- One row per line and stock location a fulfilment took units from (location `''`: the
-- variant's stock is not tracked).
CREATE TABLE order_fulfillment_items (
    fulfillment_id TEXT NOT NULL REFERENCES order_fulfillments(id) ON DELETE CASCADE,
    order_id       TEXT NOT NULL,
    item_id        TEXT NOT NULL,
    variant_id     TEXT NOT NULL,
    location_id    TEXT NOT NULL,
    quantity       BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (fulfillment_id, item_id, location_id)
);
CREATE INDEX order_fulfillment_items_order ON order_fulfillment_items(order_id, item_id);

CREATE TABLE order_shipments (
    id              TEXT PRIMARY KEY,
    fulfillment_id  TEXT NOT NULL REFERENCES order_fulfillments(id) ON DELETE CASCADE,
    order_id        TEXT NOT NULL,
    carrier         TEXT NOT NULL,
    tracking_number TEXT NOT NULL,
    tracking_url    TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX order_shipments_fulfillment ON order_shipments(fulfillment_id, id);

-- Refunds: `pending` from the moment they are reserved (before the provider is asked) until
-- the provider's answer is recorded; a `failed` one frees its amount.
CREATE TABLE order_refunds (
    id                 TEXT PRIMARY KEY,
    order_id           TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    attempt_id         TEXT NOT NULL,
    amount             BIGINT NOT NULL CHECK (amount > 0),
    currency           TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    reason             TEXT NOT NULL,
    note               TEXT,
    idempotency_key    TEXT,
    request_hash       TEXT,
    provider_reference TEXT,
    failure_reason     TEXT,
    return_id          TEXT,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX order_refunds_key ON order_refunds(order_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX order_refunds_reference ON order_refunds(attempt_id, provider_reference)
    WHERE provider_reference IS NOT NULL;
CREATE INDEX order_refunds_order ON order_refunds(order_id, id);
CREATE INDEX order_refunds_pending ON order_refunds(status, created_at);

CREATE TABLE order_returns (
    id         TEXT PRIMARY KEY,
    order_id   TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    restocked  BOOLEAN NOT NULL,
    refund_id  TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX order_returns_order ON order_returns(order_id, id);

CREATE TABLE order_return_items (
    return_id TEXT NOT NULL REFERENCES order_returns(id) ON DELETE CASCADE,
    item_id   TEXT NOT NULL,
    quantity  BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (return_id, item_id)
);

-- Stock: how many allocated units of a reservation have left stock (fulfilled).
ALTER TABLE stock_reservations ADD COLUMN fulfilled BIGINT NOT NULL DEFAULT 0;

-- The test provider: authorise-only charges, and a ledger of refunds per charge.
ALTER TABLE test_provider_charges DROP CONSTRAINT test_provider_charges_status_check;
ALTER TABLE test_provider_charges ADD CONSTRAINT test_provider_charges_status_check
    CHECK (status IN ('authorized', 'captured', 'declined', 'voided', 'refunded'));

CREATE TABLE test_provider_refunds (
    idempotency_key TEXT PRIMARY KEY,
    charge_key      TEXT NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    reference       TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX test_provider_refunds_charge ON test_provider_refunds(charge_key);
