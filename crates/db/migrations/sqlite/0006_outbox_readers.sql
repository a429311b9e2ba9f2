-- Readers of the outbox by topic (tests, the admin view).
CREATE INDEX outbox_topic ON outbox(topic, id);
