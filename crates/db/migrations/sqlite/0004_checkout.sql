-- cart: carts and their lines. `checking_out` locks a cart while its checkout runs.
CREATE TABLE carts (
    id         TEXT PRIMARY KEY,
    currency   TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('open', 'checking_out', 'completed')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE cart_items (
    id         TEXT PRIMARY KEY,
    cart_id    TEXT NOT NULL REFERENCES carts(id) ON DELETE CASCADE,
    variant_id TEXT NOT NULL,
    sku        TEXT NOT NULL,
    title      TEXT NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    unit_price BIGINT NOT NULL CHECK (unit_price >= 0),
    created_at TEXT NOT NULL,
    UNIQUE (cart_id, variant_id)
);

-- orders (OMS): the order with a snapshot of its lines and totals, and its history.
CREATE TABLE orders (
    id               TEXT PRIMARY KEY,
    number           BIGINT NOT NULL UNIQUE,
    cart_id          TEXT NOT NULL,
    email            TEXT NOT NULL,
    currency         TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending_payment', 'placed', 'payment_failed', 'cancelled')),
    subtotal         BIGINT NOT NULL,
    tax_total        BIGINT NOT NULL,
    shipping_total   BIGINT NOT NULL,
    total            BIGINT NOT NULL,
    shipping_address TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX orders_status_id ON orders(status, id);
CREATE INDEX orders_cart ON orders(cart_id);

CREATE TABLE order_lines (
    order_id   TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    position   BIGINT NOT NULL,
    variant_id TEXT NOT NULL,
    sku        TEXT NOT NULL,
    title      TEXT NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity > 0),
    unit_price BIGINT NOT NULL,
    total      BIGINT NOT NULL,
    PRIMARY KEY (order_id, position)
);

CREATE TABLE order_history (
    id         TEXT PRIMARY KEY,
    order_id   TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    status     TEXT NOT NULL,
    note       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX order_history_order ON order_history(order_id, id);

-- payments: one attempt per checkout; the provider call carries the attempt id as its
-- idempotency key.
CREATE TABLE payment_attempts (
    id             TEXT PRIMARY KEY,
    order_id       TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    provider       TEXT NOT NULL,
    amount         BIGINT NOT NULL,
    currency       TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'unknown', 'captured', 'declined', 'voided')),
    reference      TEXT,
    decline_reason TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX payment_attempts_status ON payment_attempts(status, created_at);
CREATE UNIQUE INDEX payment_attempts_order ON payment_attempts(order_id);

-- The built-in test provider's own ledger, as an outside provider would keep it.
CREATE TABLE test_provider_charges (
    idempotency_key TEXT PRIMARY KEY,
    token           TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('captured', 'declined', 'voided')),
    reason          TEXT,
    reference       TEXT NOT NULL,
    created_at      TEXT NOT NULL
);

-- inventory: reservations held by orders until payment settles them.
CREATE TABLE stock_reservations (
    id          TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL,
    variant_id  TEXT NOT NULL,
    location_id TEXT NOT NULL,
    quantity    BIGINT NOT NULL CHECK (quantity > 0),
    status      TEXT NOT NULL CHECK (status IN ('reserved', 'allocated', 'released')),
    expires_at  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX stock_reservations_order ON stock_reservations(order_id);

-- checkout: Idempotency-Key records, scoped per cart, pruned after 24 h.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    order_id     TEXT,
    outcome      TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
CREATE INDEX idempotency_keys_order ON idempotency_keys(order_id);
