//! Examples of the main flows for the OpenAPI document, taken from a real session: create a
//! product with two variants and their prices, set its stock, create a cart, add a line, check
//! out with the test provider's `tok_visa`, read the order; and the problems those steps can
//! answer. One product, cart and order run through them all, so their ids agree.
//!
//! schemathesis sends the request examples to a real server, and a test checks every example
//! against its schema, so they must stay real.

use serde_json::{Value, json};

const PRODUCT: &str = "prod_01m8pss70x0we5nvm3m9jdrggy";
const VARIANT_M: &str = "var_01m8pss70zf5hqhsevhf7gnkye";
const VARIANT_L: &str = "var_01m8pss70zpjdsadk1bb6xhsk1";
const CART: &str = "cart_01m8pssanxxmrnf39amzeredc9";
const ITEM: &str = "item_01m8pssb02g6fpxnaa77ggw5ty";
const ORDER: &str = "ord_01m8pssb2qpdz467n1eyyh8g1c";
const CREATED: &str = "2025-06-02T09:30:12.029975Z";

fn eur(amount: i64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

/// `POST /admin/products`: a published product with two variants, priced in EUR (and USD).
pub fn new_product() -> Value {
    json!({
        "title": "Linen shirt",
        "handle": "linen-shirt",
        "description": "A light shirt of washed linen.",
        "status": "published",
        "attributes": {"brand": "Atlas", "material": "linen"},
        "variants": [
            {
                "sku": "LS-M-WHITE",
                "options": {"size": "M", "color": "White"},
                "prices": [{"amount": 4900, "currency": "EUR"}, {"amount": 5500, "currency": "USD"}],
                "weight_g": 300
            },
            {
                "sku": "LS-L-WHITE",
                "options": {"size": "L", "color": "White"},
                "prices": [{"amount": 4900, "currency": "EUR"}],
                "weight_g": 300
            }
        ]
    })
}

fn variant(id: &str, sku: &str, size: &str, position: i64, prices: Value) -> Value {
    json!({
        "id": id,
        "product_id": PRODUCT,
        "sku": sku,
        "title": format!("White / {size}"),
        "options": {"color": "White", "size": size},
        "prices": prices,
        "allow_backorder": false,
        "weight_g": 300,
        "tax_class": "standard",
        "position": position,
        "created_at": CREATED,
        "updated_at": CREATED
    })
}

/// The product [`new_product`] created.
pub fn product() -> Value {
    json!({
        "id": PRODUCT,
        "handle": "linen-shirt",
        "title": "Linen shirt",
        "description": "A light shirt of washed linen.",
        "status": "published",
        "attributes": {"brand": "Atlas", "material": "linen"},
        "categories": [],
        "images": [],
        "variants": [
            variant(VARIANT_M, "LS-M-WHITE", "M", 0, json!([eur(4900), {"amount": 5500, "currency": "USD"}])),
            variant(VARIANT_L, "LS-L-WHITE", "L", 1, json!([eur(4900)]))
        ],
        "created_at": CREATED,
        "updated_at": CREATED
    })
}

/// The product as shoppers see it: 23 of the M left to sell, the L's stock not tracked.
pub fn store_product() -> Value {
    let store_variant = |id: &str, sku: &str, size: &str, prices: Value, available: Value| {
        json!({
            "id": id,
            "sku": sku,
            "title": format!("White / {size}"),
            "options": {"color": "White", "size": size},
            "prices": prices,
            "available": available,
            "allow_backorder": false,
            "weight_g": 300,
            "tax_class": "standard"
        })
    };
    json!({
        "id": PRODUCT,
        "handle": "linen-shirt",
        "title": "Linen shirt",
        "description": "A light shirt of washed linen.",
        "attributes": {"brand": "Atlas", "material": "linen"},
        "categories": [],
        "images": [],
        "variants": [
            store_variant(VARIANT_M, "LS-M-WHITE", "M", json!([eur(4900), {"amount": 5500, "currency": "USD"}]), json!(23)),
            store_variant(VARIANT_L, "LS-L-WHITE", "L", json!([eur(4900)]), Value::Null)
        ],
        "created_at": CREATED,
        "updated_at": CREATED
    })
}

/// `PUT /admin/variants/{variant_id}/stock`: 25 counted at the default location.
pub fn set_stock() -> Value {
    json!({"on_hand": 25, "reason": "delivery"})
}

/// The level [`set_stock`] left.
pub fn stock_level() -> Value {
    json!({
        "variant_id": VARIANT_M,
        "location_id": "loc_default",
        "on_hand": 25,
        "reserved": 0,
        "allocated": 0,
        "available": 25
    })
}

/// `POST /store/carts`.
pub fn new_cart() -> Value {
    json!({"currency": "EUR"})
}

/// A cart with `lines` (and totals to match).
fn cart_with(items: Vec<Value>, subtotal: i64, updated_at: &str) -> Value {
    json!({
        "id": CART,
        "currency": "EUR",
        "items": items,
        "customer_id": null,
        "email": null,
        "shipping_address": null,
        "region_id": null,
        "tax_inclusive": false,
        "subtotal": eur(subtotal),
        "discount_total": eur(0),
        "tax_total": eur(0),
        "shipping_total": eur(0),
        "total": eur(subtotal),
        "promotions": [],
        "shipping_method": null,
        "status": "open",
        "created_at": "2025-06-02T09:31:40.773047Z",
        "updated_at": updated_at
    })
}

/// The cart [`new_cart`] created.
pub fn empty_cart() -> Value {
    cart_with(vec![], 0, "2025-06-02T09:31:40.773047Z")
}

/// `POST /store/carts/{id}/items`: two of the M.
pub fn add_item() -> Value {
    json!({"variant_id": VARIANT_M, "quantity": 2})
}

/// One line of two shirts, as a cart and an order show it.
fn line(with_id: bool) -> Value {
    let mut line = json!({
        "variant_id": VARIANT_M,
        "sku": "LS-M-WHITE",
        "title": "White / M",
        "product_id": PRODUCT,
        "product_title": "Linen shirt",
        "product_handle": "linen-shirt",
        "thumbnail": null,
        "quantity": 2,
        "unit_price": eur(4900),
        "total": eur(9800),
        "discount_total": eur(0),
        "tax_total": eur(0)
    });
    if with_id {
        line["id"] = json!(ITEM);
    }
    line
}

/// The cart after [`add_item`].
pub fn cart() -> Value {
    cart_with(vec![line(true)], 9800, "2025-06-02T09:31:52.098713Z")
}

/// `POST /store/carts/{id}/checkout`, paid with the test provider's `tok_visa`.
pub fn checkout() -> Value {
    json!({
        "email": "ada@example.com",
        "shipping_address": {
            "name": "Ada Lovelace",
            "line1": "Rua Augusta 100",
            "city": "Lisboa",
            "postal_code": "1100-053",
            "country": "PT"
        },
        "payment": {"provider": "test", "token": "tok_visa"}
    })
}

/// The order [`checkout`] placed, as the checkout answers it.
pub fn order() -> Value {
    json!({
        "id": ORDER,
        "number": "#1001",
        "status": "placed",
        "cart_id": CART,
        "email": "ada@example.com",
        "currency": "EUR",
        "items": [line(false)],
        "subtotal": eur(9800),
        "discount_total": eur(0),
        "tax_total": eur(0),
        "shipping_total": eur(0),
        "total": eur(9800),
        "region_id": null,
        "tax_inclusive": false,
        "promotions": [],
        "shipping_method": null,
        "shipping_address": {
            "name": "Ada Lovelace",
            "line1": "Rua Augusta 100",
            "city": "Lisboa",
            "postal_code": "1100-053",
            "country": "PT"
        },
        "payment": {
            "id": "pay_01m8pssb2q9fp0psb51mbjtmja",
            "provider": "test",
            "status": "captured",
            "reference": "ch_01m8pssb3c04h50mw93ksyqxe0"
        },
        "created_at": "2025-06-02T09:32:05.184411Z",
        "updated_at": "2025-06-02T09:32:05.206385Z",
        "risk": {"score": 0, "decision": "allow", "reasons": []}
    })
}

/// The same order as staff read it, with its history.
pub fn admin_order() -> Value {
    let mut order = order();
    order["history"] = json!([
        {"status": "pending_payment", "note": "order created; waiting for payment", "at": "2025-06-02T09:32:05.184411Z"},
        {"status": "placed", "note": "payment captured", "at": "2025-06-02T09:32:05.206385Z"}
    ]);
    order
}

/// A page of orders: [`admin_order`] alone.
pub fn order_page() -> Value {
    json!({"items": [admin_order()], "next_cursor": null})
}

/// A problem document with `code`, its status and title, and `extra` members.
fn problem(status: u16, code: &str, title: &str, detail: &str, extra: Value) -> Value {
    let mut p = json!({
        "type": format!("https://backroom.dev/problems/{code}"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code
    });
    if let (Some(p), Value::Object(extra)) = (p.as_object_mut(), extra) {
        p.extend(extra);
    }
    p
}

/// `409 insufficient_stock`: 102 asked (the 2 in the cart and 100 more), 25 there.
pub fn insufficient_stock() -> Value {
    problem(
        409,
        "insufficient_stock",
        "Insufficient stock",
        "some lines are not in stock in the quantity asked (see `items`); nothing was reserved",
        json!({"items": [{"variant_id": VARIANT_M, "requested": 102, "available": 25}]}),
    )
}

/// `402 payment_declined` (the test provider's `tok_declined`).
pub fn payment_declined() -> Value {
    problem(
        402,
        "payment_declined",
        "Payment declined",
        "the payment was declined; the cart is open for another try",
        json!({"reason": "card_declined", "order_id": "ord_01m8pssgrtv866rf7zz642ct10"}),
    )
}

/// `422 validation_failed` of a checkout, each refused field in `errors`.
pub fn validation_failed() -> Value {
    problem(
        422,
        "validation_failed",
        "Validation failed",
        "the request has invalid fields; see `errors`",
        json!({"errors": [
            {"field": "email", "message": "is not an email address"},
            {"field": "shipping_address.name", "message": "must be 1–200 characters"}
        ]}),
    )
}

/// `404 not_found` of a cart.
pub fn cart_not_found() -> Value {
    problem(404, "not_found", "Not found", "no such cart", Value::Null)
}
