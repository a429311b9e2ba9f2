-- orders: `GET /admin/orders?updated_since=` lists by (updated_at, id) for systems that poll.
CREATE INDEX orders_updated ON orders(updated_at, id);

-- jobs: background work started through the API (`POST /admin/imports/products`), kept so
-- that `GET /admin/jobs/{id}` answers across restarts. `errors` is a JSON array of
-- {"row", "message"}; a job still `running` when the process starts was interrupted and is
-- marked `failed`.
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    processed   INTEGER NOT NULL DEFAULT 0,
    total       INTEGER NOT NULL DEFAULT 0,
    errors      TEXT NOT NULL DEFAULT '[]',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX jobs_running ON jobs(status) WHERE status = 'running';
