-- customers: shoppers' accounts. Every personal field (e-mail, names, phone, each address) is
-- stored only sealed under the customer's own data key (key_id, in the vault's data_keys);
-- e-mail look-ups go through email_index, a keyed hash. Erasure destroys the key and clears
-- email_index, the sealed fields and the password hash, keeping the row for the orders that
-- name it.
CREATE TABLE customers (
    id            TEXT PRIMARY KEY,
    key_id        TEXT NOT NULL,
    email_index   TEXT,
    email         TEXT,
    first_name    TEXT,
    last_name     TEXT,
    phone         TEXT,
    -- argon2id, as a PHC string.
    password_hash TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    erased_at     TEXT
);
-- One live customer per e-mail (erased customers have none; NULLs never clash).
CREATE UNIQUE INDEX customers_email_index ON customers(email_index);

-- A signed-in customer's sessions: only the SHA-256 of each token is stored.
CREATE TABLE customer_sessions (
    token_hash  TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX customer_sessions_customer ON customer_sessions(customer_id);

-- Address book: each address's fields sealed together under the customer's key.
CREATE TABLE customer_addresses (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    sealed      TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX customer_addresses_customer ON customer_addresses(customer_id, id);

CREATE TABLE customer_groups (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE customer_group_members (
    group_id    TEXT NOT NULL REFERENCES customer_groups(id) ON DELETE CASCADE,
    customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (group_id, customer_id)
);
CREATE INDEX customer_group_members_customer ON customer_group_members(customer_id);
