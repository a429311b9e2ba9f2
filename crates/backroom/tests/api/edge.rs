//! The HTTP edge: card numbers refused where a shopper's text can carry them (bodies and
//! headers) and accepted in product data; size limits as problems; security headers; CORS;
//! the cap on cart lines; names and addresses that read as they show.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::support::{ADMIN_TOKEN, Backend, Res, TestApp, checkout_body};

/// Counts rows of `sql` (a `SELECT COUNT(*)`).
async fn count(app: &TestApp, sql: &'static str) -> i64 {
    match app.db.pools() {
        backroom_db::Pools::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_one(reader).await.unwrap(),
        backroom_db::Pools::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

/// A published product with one EUR-priced variant; answers the variant's id.
async fn variant(app: &TestApp, handle: &str) -> String {
    let p = app.product(handle, &[&handle.to_uppercase()]).await;
    p["variants"][0]["id"].as_str().unwrap().to_owned()
}

fn field_of(problem: &Value) -> Vec<String> {
    problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

// About one barcode in ten passes the Luhn check. Catalog and stock bodies are product data:
// a barcode there is an identifier. The same digits in a shopper's text are refused.
both!(barcodes_are_product_data_but_not_shopper_text, |app: TestApp| async move {
    let product = app
        .admin_post(
            "/admin/products",
            json!({"title": "Cola 5449000000996", "handle": "cola", "status": "published",
                   "description": "EAN 5901 2341 2345 7, ISBN 978-0-306-40606-5",
                   "attributes": {"gtin": "5901234123457"},
                   "variants": [{"sku": "5901234123457", "title": "5901234123457",
                                 "options": {"ean": "5449000000996"},
                                 "prices": [{"amount": 199, "currency": "EUR"}]}]}),
        )
        .await
        .expect(201);
    assert_eq!(product["variants"][0]["sku"], "5901234123457");
    let (pid, vid) = (product["id"].as_str().unwrap(), product["variants"][0]["id"].as_str().unwrap());
    app.admin_patch(&format!("/admin/products/{pid}"), json!({"description": "5901234123457"})).await.expect(200);
    app.admin_patch(&format!("/admin/variants/{vid}"), json!({"sku": "15901234123539"})).await.expect(200);
    app.admin_post(&format!("/admin/products/{pid}/variants"), json!({"sku": "9780306406065"})).await.expect(201);
    app.admin_post("/admin/categories", json!({"name": "Shelf 5901234123457"})).await.expect(201);
    let loc = app.admin_post("/admin/stock-locations", json!({"name": "Bin 5901234123457"})).await.expect(201);
    app.admin_put(&format!("/admin/variants/{vid}/stock"), json!({"on_hand": 5, "location_id": loc["id"]}))
        .await
        .expect(200);
    // An API key's name is not product data.
    app.admin_post("/admin/api-keys", json!({"name": "till 5901234123457", "role": "viewer"}))
        .await
        .problem(422, "card_data_refused");

    // In a shopper's text the same digits are refused, in every spelling, and nothing is
    // kept under the key: the same key then works with a clean body.
    let cart = app.cart_with("EUR", &[(vid, 1)]).await;
    for line1 in [
        "Rua 5901234123457",
        "4111 1111 1111 1111",
        "4111.1111.1111.1111",
        "４１１１　１１１１　１１１１　１１１１",
        "４１１１－１１１１－１１１１－１１１１",
    ] {
        let mut body = checkout_body("tok_visa");
        body["shipping_address"]["line1"] = json!(line1);
        let req = app
            .client
            .post(app.url(&format!("/store/carts/{cart}/checkout")))
            .header("Idempotency-Key", "k-card")
            .json(&body);
        app.send(req).await.problem(422, "card_data_refused");
    }
    // `\u` escapes spell the digits without writing one.
    let escaped = checkout_body("tok_visa").to_string().replace("Rua Augusta 1", r"\u0034111111111111111");
    let req = app
        .client
        .post(app.url(&format!("/store/carts/{cart}/checkout")))
        .header("Idempotency-Key", "k-card")
        .header("content-type", "application/json")
        .body(escaped);
    app.send(req).await.problem(422, "card_data_refused");
    app.send(app.client.post(app.url("/store/carts")).json(&json!({"currency": "EUR", "note": "5901-2341-2345-7"})))
        .await
        .problem(422, "card_data_refused");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM idempotency_keys").await, 0);
    app.send(app.checkout_req(&cart, Some("k-card"), "tok_visa")).await.expect(201);
});

// Headers a shopper sets are logged (the request id), stored (the idempotency key) or echoed
// (the request id): one shaped like a card number is refused on any route, before any of that.
both!(card_shaped_headers_are_refused_on_every_route, |app: TestApp| async move {
    let v = variant(&app, "mug").await;
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    for key in ["4111111111111111", "4111 1111 1111 1111", "４１１１．１１１１．１１１１．１１１１", "5901234123457"]
    {
        let r = app.send(app.checkout_req(&cart, Some(key), "tok_visa")).await;
        assert!(r.headers.get("x-request-id").is_none(), "a refused request has no id to echo");
        r.problem(422, "card_data_refused");
    }
    assert_eq!(count(&app, "SELECT COUNT(*) FROM idempotency_keys").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders").await, 0);

    for (method, path) in [
        (Method::GET, "/store/products"),
        (Method::GET, "/healthz"),
        (Method::GET, "/admin/products"),
        (Method::GET, "/no/such/route"),
        (Method::DELETE, "/store/products"),
    ] {
        let req = app.client.request(method.clone(), app.url(path)).bearer_auth(ADMIN_TOKEN);
        let r = app.send(req.header("X-Request-Id", "5500-0000-0000-0004")).await;
        assert!(r.headers.get("x-request-id").is_none(), "{method} {path}: the id is echoed");
        r.problem(422, "card_data_refused");
    }
    // Ordinary ids and keys are untouched: the id is echoed, the checkout goes through.
    let r = app.send(app.client.get(app.url("/healthz")).header("X-Request-Id", "req-20260101-42")).await;
    assert_eq!(r.headers["x-request-id"], "req-20260101-42");
    r.expect(200);
    app.send(app.checkout_req(&cart, Some("order-2026-0001"), "tok_visa")).await.expect(201);
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_uris_are_problems() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let get = |path: &str| app.client.get(app.url(path));
    // One header line over 8 KiB.
    let r = app.send(get("/healthz").header("x-pad", "a".repeat(8 * 1024))).await;
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    r.problem(431, "request_header_fields_too_large");
    // Each under 8 KiB, over 16 KiB together.
    let mut req = get("/store/products");
    for i in 0..3 {
        req = req.header(format!("x-pad-{i}"), "b".repeat(6 * 1024));
    }
    app.send(req).await.problem(431, "request_header_fields_too_large");
    // Too many header lines, each small.
    let mut req = get("/healthz");
    for i in 0..150 {
        req = req.header(format!("x-n-{i}"), "1");
    }
    app.send(req).await.problem(431, "request_header_fields_too_large");
    // Far past every limit, still a problem document.
    app.send(get("/healthz").header("x-huge", "h".repeat(100 * 1024)))
        .await
        .problem(431, "request_header_fields_too_large");
    // Just under both limits.
    let r = app.send(get("/healthz").header("x-pad-1", "c".repeat(7000)).header("x-pad-2", "d".repeat(7000))).await;
    r.expect(200);
    // The URI.
    let r = app.send(get(&format!("/healthz?pad={}", "e".repeat(8 * 1024)))).await;
    r.problem(414, "uri_too_long");
    let r = app.send(get(&format!("/store/products/{}", "f".repeat(9000)))).await;
    r.problem(414, "uri_too_long");
    app.send(get(&format!("/healthz?pad={}", "g".repeat(7 * 1024)))).await.expect(200);
}

both!(answers_say_nosniff_and_private_ones_no_store, |app: TestApp| async move {
    let v = variant(&app, "cap").await;
    let no_store = |r: &Res, what: &str| {
        assert_eq!(r.headers["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(r.headers.get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"), "{what}");
    };
    let public = |r: &Res, what: &str| {
        assert_eq!(r.headers["x-content-type-options"], "nosniff", "{what}");
        assert_ne!(r.headers.get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"), "{what}");
    };
    public(&app.get("/healthz").await, "healthz");
    public(&app.get("/openapi.json").await, "openapi");
    public(&app.get("/store/products").await, "store products");
    public(&app.get("/store/products/nope").await, "store 404");
    public(&app.get("/no/such/route").await, "unknown route");
    let cart = app.send(app.client.post(app.url("/store/carts")).json(&json!({"currency": "EUR"}))).await;
    no_store(&cart, "new cart");
    let id = cart.body["id"].as_str().unwrap().to_owned();
    no_store(&app.get(&format!("/store/carts/{id}")).await, "cart");
    no_store(&app.get("/store/carts/cart_nope").await, "cart 404");
    let items = app.client.post(app.url(&format!("/store/carts/{id}/items")));
    no_store(&app.send(items.json(&json!({"variant_id": v, "quantity": 1}))).await, "add item");
    let order = app.send(app.checkout_req(&id, Some("k-1"), "tok_visa")).await;
    no_store(&order, "checkout");
    let order_id = order.body["id"].as_str().unwrap().to_owned();
    no_store(&app.admin_get(&format!("/admin/orders/{order_id}")).await, "admin order");
    no_store(&app.admin_get("/admin/products").await, "admin list");
    no_store(&app.send(app.client.get(app.url("/admin/products"))).await, "admin 401");
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_listed_origins_only() {
    const SHOP: &str = "https://shop.example";
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.cors_origins = vec![SHOP.into()]).await;
    let preflight = |origin: &str| {
        app.client
            .request(Method::OPTIONS, app.url("/store/carts/cart_x/checkout"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,idempotency-key")
    };
    let r = app.send(preflight(SHOP)).await;
    assert_eq!(r.status, 204, "{:?}", r.headers);
    let h = |name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_lowercase()).unwrap_or_default();
    assert_eq!(h("access-control-allow-origin"), SHOP);
    for m in ["get", "post", "put", "patch", "delete"] {
        assert!(h("access-control-allow-methods").contains(m), "{m}: {}", h("access-control-allow-methods"));
    }
    for name in ["content-type", "authorization", "idempotency-key", "x-request-id"] {
        assert!(h("access-control-allow-headers").contains(name), "{name}");
    }
    assert_eq!(h("x-content-type-options"), "nosniff");

    // Any other origin: no CORS header at all, and the preflight is an ordinary OPTIONS (405).
    let r = app.send(preflight("https://evil.example")).await;
    assert!(r.headers.keys().all(|k| !k.as_str().starts_with("access-control-")), "{:?}", r.headers);
    r.problem(405, "method_not_allowed");

    // Real requests from the storefront may read the answer and the headers it needs.
    let cart = app
        .send(app.client.post(app.url("/store/carts")).header("origin", SHOP).json(&json!({"currency": "EUR"})))
        .await;
    assert_eq!(cart.headers["access-control-allow-origin"], SHOP);
    let exposed = cart.headers["access-control-expose-headers"].to_str().unwrap().to_lowercase();
    for name in ["idempotency-replayed", "retry-after", "x-request-id", "location"] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }
    cart.expect(201);
    let r = app.send(app.client.get(app.url("/store/carts/cart_nope")).header("origin", SHOP)).await;
    assert_eq!(r.headers["access-control-allow-origin"], SHOP, "a problem is readable too");
    r.problem(404, "not_found");
    let r = app.send(app.client.get(app.url("/store/products")).header("origin", "https://evil.example")).await;
    assert!(r.headers.get("access-control-allow-origin").is_none());
    assert!(r.headers.get_all("vary").iter().any(|v| v.to_str().unwrap().contains("origin")));
    r.expect(200);

    // Without BACKROOM_CORS_ORIGINS no origin is allowed.
    let plain = TestApp::spawn(Backend::Sqlite).await;
    let r = plain
        .send(
            plain
                .client
                .request(Method::OPTIONS, plain.url("/store/carts"))
                .header("origin", SHOP)
                .header("access-control-request-method", "POST"),
        )
        .await;
    assert!(r.headers.keys().all(|k| !k.as_str().starts_with("access-control-")), "{:?}", r.headers);
    r.problem(405, "method_not_allowed");
}

both!(a_cart_holds_at_most_100_lines, |app: TestApp| async move {
    let variants: Vec<Value> =
        (0..101).map(|i| json!({"sku": format!("MANY-{i}"), "prices": [{"amount": 100, "currency": "EUR"}]})).collect();
    let p = app
        .admin_post("/admin/products", json!({"title": "Many", "status": "published", "variants": variants}))
        .await
        .expect(201);
    let ids: Vec<String> =
        p["variants"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_owned()).collect();
    let lines: Vec<(&str, i64)> = ids[..100].iter().map(|id| (id.as_str(), 1)).collect();
    let cart = app.cart_with("EUR", &lines).await;
    let items = app.url(&format!("/store/carts/{cart}/items"));
    let r = app.send(app.client.post(&items).json(&json!({"variant_id": ids[100], "quantity": 1}))).await;
    r.problem(422, "cart_too_many_lines");
    let c = app.get(&format!("/store/carts/{cart}")).await.expect(200);
    assert_eq!(c["items"].as_array().unwrap().len(), 100, "nothing written");
    // A line already in the cart can still grow.
    let c = app.send(app.client.post(&items).json(&json!({"variant_id": ids[0], "quantity": 2}))).await.expect(200);
    assert_eq!(c["items"].as_array().unwrap().len(), 100);
    // Room again after a line goes.
    let item = c["items"][5]["id"].as_str().unwrap().to_owned();
    app.send(app.client.delete(app.url(&format!("/store/carts/{cart}/items/{item}")))).await.expect(200);
    app.send(app.client.post(&items).json(&json!({"variant_id": ids[100], "quantity": 1}))).await.expect(200);
});

both!(names_and_addresses_read_as_they_show, |app: TestApp| async move {
    let refused = [
        ("\u{200B}\u{200D}", "visible"),
        ("Invoice\u{202E}fdp.exe", "bidirectional"),
        ("Shirt\u{2066}x\u{2069}", "bidirectional"),
        ("tab\there", "control"),
    ];
    for (bad, why) in refused {
        let r = app.admin_post("/admin/products", json!({"title": bad, "handle": "p"})).await;
        let r = r.problem(422, "validation_failed");
        assert_eq!(field_of(&r), ["title"], "{bad:?}");
        assert!(r["errors"][0]["message"].as_str().unwrap().contains(why), "{r}");
        let r = app
            .admin_post(
                "/admin/products",
                json!({"title": "Fine", "handle": "fine", "variants": [{"sku": "F-1", "title": bad}]}),
            )
            .await
            .problem(422, "validation_failed");
        assert_eq!(field_of(&r), ["variants[0].title"], "{bad:?}");
        let r = app.admin_post("/admin/categories", json!({"name": bad, "handle": "c"})).await;
        assert_eq!(field_of(&r.problem(422, "validation_failed")), ["name"], "{bad:?}");
        let r = app.admin_post("/admin/stock-locations", json!({"name": bad})).await;
        assert_eq!(field_of(&r.problem(422, "validation_failed")), ["name"], "{bad:?}");
        let r = app.admin_post("/admin/api-keys", json!({"name": bad, "role": "viewer"})).await;
        assert_eq!(field_of(&r.problem(422, "validation_failed")), ["name"], "{bad:?}");
    }
    assert_eq!(app.product_count().await, 0);
    // Invisible characters inside visible text stay allowed.
    app.admin_post("/admin/products", json!({"title": "👩\u{200D}💻 Studio", "handle": "studio"})).await.expect(201);

    let v = variant(&app, "sock").await;
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    let mut body = checkout_body("tok_visa");
    body["shipping_address"]["name"] = json!("Ana\u{202E}avliS");
    body["shipping_address"]["line1"] = json!("\u{FEFF}\u{200B}");
    body["shipping_address"]["city"] = json!("Lis\u{7}boa");
    let req = app.client.post(app.url(&format!("/store/carts/{cart}/checkout"))).header("Idempotency-Key", "k-1");
    let r = app.send(req.json(&body)).await.problem(422, "validation_failed");
    let mut fields = field_of(&r);
    fields.sort();
    assert_eq!(fields, ["shipping_address.city", "shipping_address.line1", "shipping_address.name"]);
    app.send(app.checkout_req(&cart, Some("k-1"), "tok_visa")).await.expect(201);
});
