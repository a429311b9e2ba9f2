-- catalog: a product's images in display order (the first is its thumbnail).
CREATE TABLE product_images (
    product_id TEXT NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    position   BIGINT NOT NULL,
    url        TEXT NOT NULL,
    alt        TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (product_id, position)
);

-- orders: each line keeps what its product showed at checkout (NULL on older orders).
ALTER TABLE order_lines ADD COLUMN product_id TEXT;
ALTER TABLE order_lines ADD COLUMN product_title TEXT;
ALTER TABLE order_lines ADD COLUMN product_handle TEXT;
ALTER TABLE order_lines ADD COLUMN thumbnail TEXT;

-- orders: staff find a shopper's orders by e-mail, compared case-insensitively.
CREATE INDEX orders_email ON orders(lower(email), id);
