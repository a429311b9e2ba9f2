-- inventory: stock locations, stock levels per variant and location, the adjustments ledger.
CREATE TABLE stock_locations (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    is_default BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL
);
-- At most one default location.
CREATE UNIQUE INDEX stock_locations_one_default ON stock_locations(is_default) WHERE is_default;
INSERT INTO stock_locations (id, name, is_default, created_at)
VALUES ('loc_default', 'Default location', TRUE, '2026-01-01T00:00:00Z');

-- P1: reserved + allocated never exceeds on_hand unless the variant allows backorders;
-- the conditional UPDATEs in the inventory module keep that, the CHECKs catch bugs.
CREATE TABLE stock_levels (
    variant_id  TEXT NOT NULL REFERENCES variants(id) ON DELETE CASCADE,
    location_id TEXT NOT NULL REFERENCES stock_locations(id) ON DELETE RESTRICT,
    on_hand     BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved    BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    allocated   BIGINT NOT NULL DEFAULT 0 CHECK (allocated >= 0),
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (variant_id, location_id)
);

-- Every change of stock, with why and by whom. Kept when a variant is deleted.
CREATE TABLE stock_adjustments (
    id                TEXT PRIMARY KEY,
    variant_id        TEXT NOT NULL,
    location_id       TEXT NOT NULL,
    on_hand_delta     BIGINT NOT NULL,
    on_hand_after     BIGINT NOT NULL,
    reserved_delta    BIGINT NOT NULL DEFAULT 0,
    allocated_delta   BIGINT NOT NULL DEFAULT 0,
    reason            TEXT NOT NULL,
    actor             TEXT NOT NULL,
    created_at        TEXT NOT NULL
);
CREATE INDEX stock_adjustments_variant ON stock_adjustments(variant_id, id);
