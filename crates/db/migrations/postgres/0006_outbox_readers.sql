-- Readers of the outbox by topic (tests, the admin view).
CREATE INDEX outbox_topic ON outbox(topic, id);
-- Broadcast readers (each process's search index) follow the outbox by the id of the
-- transaction that wrote each event, since sequence ids can commit out of order.
ALTER TABLE outbox ADD COLUMN txid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX outbox_txid ON outbox(txid);
