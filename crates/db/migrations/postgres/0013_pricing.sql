-- pricing: regions with their countries and tax rates, price lists per customer group,
-- promotions with their uses, shipping options; what carts and orders keep of them.
-- Amounts are integer minor units; rates are decimal strings of percent (up to 4 decimals),
-- also kept as an integer of ten-thousandths of a percent (rate_e4) for exact arithmetic.

ALTER TABLE variants ADD COLUMN weight_g BIGINT CHECK (weight_g IS NULL OR weight_g >= 0);
ALTER TABLE variants ADD COLUMN tax_class TEXT NOT NULL DEFAULT 'standard';

CREATE TABLE regions (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    currency      TEXT NOT NULL,
    tax_inclusive BOOLEAN NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

-- A country belongs to at most one region: the primary key refuses a second claim.
CREATE TABLE region_countries (
    country   TEXT PRIMARY KEY,
    region_id TEXT NOT NULL REFERENCES regions(id) ON DELETE CASCADE
);
CREATE INDEX region_countries_region ON region_countries(region_id);

CREATE TABLE tax_rates (
    id         TEXT PRIMARY KEY,
    region_id  TEXT NOT NULL REFERENCES regions(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    rate       TEXT NOT NULL,
    rate_e4    BIGINT NOT NULL CHECK (rate_e4 >= 0 AND rate_e4 <= 1000000),
    tax_class  TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    UNIQUE (region_id, tax_class)
);

CREATE TABLE price_lists (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    starts_at  TIMESTAMPTZ,
    ends_at    TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE price_list_groups (
    price_list_id TEXT NOT NULL REFERENCES price_lists(id) ON DELETE CASCADE,
    group_id      TEXT NOT NULL REFERENCES customer_groups(id) ON DELETE CASCADE,
    PRIMARY KEY (price_list_id, group_id)
);
CREATE INDEX price_list_groups_group ON price_list_groups(group_id);

CREATE TABLE price_list_prices (
    price_list_id TEXT NOT NULL REFERENCES price_lists(id) ON DELETE CASCADE,
    variant_id    TEXT NOT NULL REFERENCES variants(id) ON DELETE CASCADE,
    currency      TEXT NOT NULL,
    amount        BIGINT NOT NULL CHECK (amount >= 0 AND amount <= 1000000000000),
    PRIMARY KEY (price_list_id, variant_id, currency)
);
CREATE INDEX price_list_prices_variant ON price_list_prices(variant_id, currency);

-- type: percentage (value_e4: ten-thousandths of a percent), fixed (amount, currency),
-- free_shipping. used counts the uses of orders not failed or cancelled; it is raised in the
-- checkout's own write, only while it is below usage_limit.
CREATE TABLE promotions (
    id                    TEXT PRIMARY KEY,
    code                  TEXT NOT NULL UNIQUE,
    type                  TEXT NOT NULL CHECK (type IN ('percentage', 'fixed', 'free_shipping')),
    value_e4              BIGINT,
    amount                BIGINT CHECK (amount IS NULL OR amount >= 0),
    currency              TEXT,
    usage_limit           BIGINT CHECK (usage_limit IS NULL OR usage_limit >= 0),
    per_customer_limit    BIGINT CHECK (per_customer_limit IS NULL OR per_customer_limit >= 0),
    starts_at             TIMESTAMPTZ,
    ends_at               TIMESTAMPTZ,
    min_subtotal_amount   BIGINT,
    min_subtotal_currency TEXT,
    used                  BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0),
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    CHECK (usage_limit IS NULL OR used <= usage_limit)
);

-- One row per order that used a promotion: per-customer limits count these (a signed-in
-- customer's by customer_id, a guest's by the keyed hash of the e-mail).
CREATE TABLE promotion_uses (
    promotion_id TEXT NOT NULL REFERENCES promotions(id) ON DELETE CASCADE,
    order_id     TEXT NOT NULL,
    customer_id  TEXT,
    email_index  TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (promotion_id, order_id)
);
CREATE INDEX promotion_uses_customer ON promotion_uses(promotion_id, customer_id);
CREATE INDEX promotion_uses_email ON promotion_uses(promotion_id, email_index);

CREATE TABLE shipping_options (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    region_id         TEXT NOT NULL REFERENCES regions(id) ON DELETE CASCADE,
    currency          TEXT NOT NULL,
    price             BIGINT NOT NULL CHECK (price >= 0),
    free_over         BIGINT CHECK (free_over IS NULL OR free_over >= 0),
    carrier_quote_url TEXT,
    carrier_timeout_ms BIGINT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX shipping_options_region ON shipping_options(region_id);

-- Carts: the region, the shopper's e-mail and address (sealed under the cart's own data key,
-- like orders' personal data; the country in clear picks the region), the promotion code and
-- the chosen shipping method with the price quoted for it (the price shown is the price
-- charged).
ALTER TABLE carts ADD COLUMN region_id TEXT;
ALTER TABLE carts ADD COLUMN key_id TEXT;
ALTER TABLE carts ADD COLUMN personal TEXT;
ALTER TABLE carts ADD COLUMN country TEXT;
ALTER TABLE carts ADD COLUMN promotion_code TEXT;
ALTER TABLE carts ADD COLUMN shipping_option_id TEXT;
ALTER TABLE carts ADD COLUMN shipping_amount BIGINT;
ALTER TABLE carts ADD COLUMN shipping_estimated BOOLEAN;
-- The price-list price a line was added at shows the variant's base price beside it.
ALTER TABLE cart_items ADD COLUMN original_price BIGINT;

ALTER TABLE orders ADD COLUMN discount_total BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN region_id TEXT;
ALTER TABLE orders ADD COLUMN tax_inclusive BOOLEAN NOT NULL DEFAULT FALSE;
-- JSON: the promotions applied ([{id, code, type, amount}]) and the shipping method
-- ({option_id, name, price, estimated}).
ALTER TABLE orders ADD COLUMN promotions TEXT;
ALTER TABLE orders ADD COLUMN shipping_method TEXT;
ALTER TABLE order_lines ADD COLUMN discount_total BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_lines ADD COLUMN tax_total BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_lines ADD COLUMN original_price BIGINT;
