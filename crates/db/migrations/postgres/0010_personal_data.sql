-- vault: one data key per subject whose personal data we keep (a customer, a guest's order),
-- wrapped by the master key, which never enters the database. Deleting a row is erasure:
-- every field sealed under that key becomes unreadable (crypto-shredding).
CREATE TABLE data_keys (
    id         TEXT PRIMARY KEY,
    wrapped    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

-- orders: the shopper's e-mail and addresses are sealed under the order's own data key
-- (`personal`), or the customer's when the order belongs to an account; staff find orders by
-- e-mail through its keyed hash. The clear `email` and `shipping_address` columns are no
-- longer written (empty strings), and older rows are sealed and emptied at start.
ALTER TABLE orders ADD COLUMN key_id TEXT;
ALTER TABLE orders ADD COLUMN email_index TEXT;
ALTER TABLE orders ADD COLUMN personal TEXT;
ALTER TABLE orders ADD COLUMN customer_id TEXT;
DROP INDEX orders_email;
CREATE INDEX orders_email_index ON orders(email_index, id);
CREATE INDEX orders_customer ON orders(customer_id, id);

-- carts: a cart created with a customer's token belongs to that customer.
ALTER TABLE carts ADD COLUMN customer_id TEXT;
