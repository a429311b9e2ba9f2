use std::time::Duration;

use serde_json::{Value, json};

use crate::both;
use crate::support::{TestApp, checkout_body};

async fn captures(app: &TestApp, attempt_id: &str) -> i64 {
    backroom_payments::TestProvider::new(app.db.clone()).captures(attempt_id).await.unwrap()
}

async fn captured_total(app: &TestApp) -> i64 {
    let sql = "SELECT COUNT(*) FROM test_provider_charges WHERE status = 'captured'";
    match app.db.pools() {
        backroom_db::Pools::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_one(reader).await.unwrap(),
        backroom_db::Pools::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

both!(checkout_places_an_order_and_allocates_stock, |app: TestApp| async move {
    let p = app.product("tee", &["TEE-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 3).await;
    let cart = app.cart_with("EUR", &[(&v, 2)]).await;
    let order = app.send(app.checkout_req(&cart, Some("k-1"), "tok_visa")).await.expect(201);
    assert!(order["id"].as_str().unwrap().starts_with("ord_"));
    assert_eq!(order["status"], "placed");
    assert_eq!(order["number"], "#1001");
    assert_eq!(order["cart_id"], cart.as_str());
    assert_eq!(order["email"], "ana@example.com");
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["items"][0]["quantity"], 2);
    assert_eq!(order["items"][0]["unit_price"], json!({"amount": 4900, "currency": "EUR"}));
    assert_eq!(order["total"], json!({"amount": 9800, "currency": "EUR"}));
    assert_eq!(order["tax_total"], json!({"amount": 0, "currency": "EUR"}));
    assert_eq!(order["payment"]["provider"], "test");
    assert_eq!(order["payment"]["status"], "captured");
    let pay = order["payment"]["id"].as_str().unwrap();
    assert!(pay.starts_with("pay_"));
    assert_eq!(captures(&app, pay).await, 1);

    let stock = app.admin_get(&format!("/admin/variants/{v}/stock")).await.expect(200);
    assert_eq!(
        (
            stock["on_hand"].as_i64(),
            stock["reserved"].as_i64(),
            stock["allocated"].as_i64(),
            stock["available"].as_i64()
        ),
        (Some(3), Some(0), Some(2), Some(1))
    );
    assert_eq!(app.get(&format!("/store/carts/{cart}")).await.expect(200)["status"], "completed");

    // Another key on the same cart: already checked out.
    app.send(app.checkout_req(&cart, Some("k-2"), "tok_visa")).await.problem(409, "cart_completed");
    // The cart cannot change any more.
    app.send(
        app.client.post(app.url(&format!("/store/carts/{cart}/items"))).json(&json!({"variant_id": v, "quantity": 1})),
    )
    .await
    .problem(409, "cart_completed");

    // Admin views: newest first, filter by status, history and provider reference.
    let second = app.cart_with("EUR", &[(&v, 1)]).await;
    let o2 = app.send(app.checkout_req(&second, Some("k-3"), "tok_visa")).await.expect(201);
    assert_eq!(o2["number"], "#1002");
    let list = app.admin_get("/admin/orders").await.expect(200);
    let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [o2["id"].as_str().unwrap(), order["id"].as_str().unwrap()]);
    assert_eq!(
        app.admin_get("/admin/orders?status=placed&limit=1").await.expect(200)["items"].as_array().unwrap().len(),
        1
    );
    assert_eq!(app.admin_get("/admin/orders?status=canceled").await.expect(200)["items"], json!([]));
    app.admin_get("/admin/orders?status=bogus").await.problem(422, "validation_failed");
    let full = app.admin_get(&format!("/admin/orders/{}", order["id"].as_str().unwrap())).await.expect(200);
    let history: Vec<&str> =
        full["history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(history, ["pending_payment", "placed"]);
    assert!(full["payment"]["reference"].as_str().unwrap().starts_with("ch_"));
    assert_eq!(full["shipping_address"]["city"], "Lisboa");
    app.admin_get("/admin/orders/ord_nope").await.problem(404, "not_found");
    app.send(app.client.get(app.url("/admin/orders"))).await.problem(401, "unauthenticated");

    // The outbox has an order.placed per order and stock.changed events.
    let placed = backroom_db::outbox::list(&app.db, "order.placed").await.unwrap();
    assert_eq!(placed.len(), 2);
    assert!(placed[0].payload.contains(order["id"].as_str().unwrap()));
    let for_orders = backroom_db::outbox::list(&app.db, "stock.changed").await.unwrap();
    assert_eq!(for_orders.iter().filter(|e| e.payload.contains("ord_")).count(), 2);
});

both!(checkout_input_and_keys_are_checked, |app: TestApp| async move {
    let p = app.product("cap", &["CAP-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    app.send(app.checkout_req(&cart, None, "tok_visa")).await.problem(400, "idempotency_key_required");
    app.send(app.checkout_req(&cart, Some(&"k".repeat(256)), "tok_visa"))
        .await
        .problem(400, "idempotency_key_required");
    let url = app.url(&format!("/store/carts/{cart}/checkout"));
    for (body, field) in [
        (
            json!({"email": "not-an-email", "shipping_address": checkout_body("x")["shipping_address"], "payment": {"provider": "test", "token": "tok_visa"}}),
            "email",
        ),
        (
            json!({"email": "a@b.co", "shipping_address": {"name": "A", "line1": "L", "city": "C", "postal_code": "1", "country": "Portugal"}, "payment": {"provider": "test", "token": "tok_visa"}}),
            "shipping_address.country",
        ),
        (
            json!({"email": "a@b.co", "shipping_address": {"name": "", "line1": "L", "city": "C", "postal_code": "1", "country": "PT"}, "payment": {"provider": "test", "token": "tok_visa"}}),
            "shipping_address.name",
        ),
        (json!({"email": "a@b.co", "shipping_address": checkout_body("x")["shipping_address"]}), "payment"),
    ] {
        let r = app
            .send(app.client.post(&url).header("Idempotency-Key", "bad-input").json(&body))
            .await
            .problem(422, "validation_failed");
        assert!(
            r["errors"].as_array().unwrap().iter().any(|e| e["field"].as_str().unwrap().starts_with(field)),
            "{field}: {r}"
        );
    }
    // Refusals of the shape are not stored: the key still works with a good body.
    app.send(app.client.post(&url).header("Idempotency-Key", "bad-input").json(&checkout_body("tok_visa")))
        .await
        .expect(201);

    let empty = app.cart_with("EUR", &[]).await;
    app.send(app.checkout_req(&empty, Some("e-1"), "tok_visa")).await.problem(422, "validation_failed");
    app.send(app.checkout_req("cart_nope", Some("n-1"), "tok_visa")).await.problem(404, "not_found");
});

both!(card_numbers_are_refused_everywhere, |app: TestApp| async move {
    let p = app.product("sock", &["SOCK-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    for token in ["4111111111111111", "4111 1111 1111 1111", "5500-0000-0000-0004"] {
        let r = app.send(app.checkout_req(&cart, Some("pci"), token)).await.problem(422, "card_data_refused");
        assert!(!r.to_string().contains("1111"), "the number is not echoed");
    }
    // Catalog bodies are product data, where a barcode may pass Luhn (see `edge.rs`); an API
    // key's name is not.
    let r = app.admin_post("/admin/api-keys", json!({"name": "call me 4242424242424242", "role": "viewer"})).await;
    r.problem(422, "card_data_refused");
    assert_eq!(app.admin_get("/admin/orders").await.expect(200)["items"], json!([]));
    // Nothing reached a table.
    let sql = "SELECT COUNT(*) FROM idempotency_keys";
    let n: i64 = match app.db.pools() {
        backroom_db::Pools::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_one(reader).await.unwrap(),
        backroom_db::Pools::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    };
    assert_eq!(n, 0);
});

both!(k_units_many_buyers_exactly_k_orders, |app: TestApp| async move {
    const K: i64 = 10;
    const BUYERS: usize = 60;
    let p = app.product("hot", &["HOT-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, K).await;
    let mut carts = Vec::new();
    for _ in 0..BUYERS {
        carts.push(app.cart_with("EUR", &[(&v, 1)]).await);
    }
    let mut tasks = Vec::new();
    for (i, cart) in carts.iter().enumerate() {
        let req = app.checkout_req(cart, Some(&format!("buyer-{i}")), "tok_visa");
        tasks.push(tokio::spawn(async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body)
        }));
    }
    let (mut placed, mut sold_out) = (0, 0);
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            201 => placed += 1,
            409 => {
                assert_eq!(body["code"], "insufficient_stock", "{body}");
                assert_eq!(body["items"][0]["requested"], 1);
                sold_out += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(placed, K);
    assert_eq!(sold_out, BUYERS as i64 - K);
    let stock = app.admin_get(&format!("/admin/variants/{v}/stock")).await.expect(200);
    assert_eq!(stock["available"], 0);
    assert_eq!(stock["reserved"].as_i64().unwrap() + stock["allocated"].as_i64().unwrap(), K);
    assert_eq!(stock["allocated"], K);
    assert_eq!(captured_total(&app).await, K, "one capture per order");
    let placed_orders = app.admin_get("/admin/orders?status=placed&limit=100").await.expect(200);
    assert_eq!(placed_orders["items"].as_array().unwrap().len() as i64, K);
});

both!(one_key_twenty_requests_one_order_one_capture, |app: TestApp| async move {
    let p = app.product("idem", &["IDEM-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 100).await;
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let req = app.checkout_req(&cart, Some("same-key"), "tok_visa");
        tasks.push(tokio::spawn(async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let replayed = r.headers().get("idempotency-replayed").is_some();
            (status, replayed, r.bytes().await.unwrap().to_vec())
        }));
    }
    let mut created = Vec::new();
    for t in tasks {
        let (status, replayed, body) = t.await.unwrap();
        match status {
            201 => created.push((replayed, body)),
            409 => {
                let b: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(b["code"], "idempotency_key_in_use", "{b}");
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&body)),
        }
    }
    assert!(created.iter().filter(|(replayed, _)| !replayed).count() == 1, "exactly one request ran the checkout");
    let first = created.iter().find(|(r, _)| !r).unwrap().1.clone();
    for (_, body) in &created {
        assert_eq!(body, &first, "replays are byte-identical");
    }
    let (status, headers, body) = app.send_raw(app.checkout_req(&cart, Some("same-key"), "tok_visa")).await;
    assert_eq!(status, 201);
    assert_eq!(headers.get("idempotency-replayed").unwrap(), "true");
    assert_eq!(body, first);

    let order: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(captures(&app, order["payment"]["id"].as_str().unwrap()).await, 1);
    assert_eq!(captured_total(&app).await, 1);
    assert_eq!(app.admin_get("/admin/orders").await.expect(200)["items"].as_array().unwrap().len(), 1);
    let stock = app.admin_get(&format!("/admin/variants/{v}/stock")).await.expect(200);
    assert_eq!(stock["allocated"], 1);

    // Same key, different body.
    let mut body = checkout_body("tok_visa");
    body["email"] = json!("other@example.com");
    app.send(
        app.client
            .post(app.url(&format!("/store/carts/{cart}/checkout")))
            .header("Idempotency-Key", "same-key")
            .json(&body),
    )
    .await
    .problem(422, "idempotency_key_reused");
    // The same key on another cart is another key (keys are scoped per cart).
    let other = app.cart_with("EUR", &[(&v, 1)]).await;
    app.send(app.checkout_req(&other, Some("same-key"), "tok_visa")).await.expect(201);
});

both!(a_decline_releases_stock_and_the_cart_can_be_paid_again, |app: TestApp| async move {
    let p = app.product("bag", &["BAG-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 1).await;
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    for (key, token, reason) in
        [("d-1", "tok_declined", "card_declined"), ("d-2", "tok_insufficient_funds", "insufficient_funds")]
    {
        let r = app.send(app.checkout_req(&cart, Some(key), token)).await.problem(402, "payment_declined");
        assert_eq!(r["reason"], reason);
        let stock = app.admin_get(&format!("/admin/variants/{v}/stock")).await.expect(200);
        assert_eq!(
            (stock["available"].as_i64(), stock["reserved"].as_i64()),
            (Some(1), Some(0)),
            "released after {token}"
        );
        assert_eq!(app.get(&format!("/store/carts/{cart}")).await.expect(200)["status"], "open");
        // The decline is replayed for its key.
        let (status, headers, _) = app.send_raw(app.checkout_req(&cart, Some(key), token)).await;
        assert_eq!((status, headers.get("idempotency-replayed").is_some()), (402, true));
    }
    let order = app.send(app.checkout_req(&cart, Some("d-3"), "tok_visa")).await.expect(201);
    assert_eq!(order["status"], "placed");
    let failed = app.admin_get("/admin/orders?status=canceled").await.expect(200);
    assert_eq!(failed["items"].as_array().unwrap().len(), 2);
    assert_eq!(failed["items"][0]["payment"]["status"], "declined");
    assert_eq!(captured_total(&app).await, 1);
    assert_eq!(backroom_db::outbox::list(&app.db, "order.payment_failed").await.unwrap().len(), 2);
});

both!(a_lost_payment_answer_is_recovered_with_one_capture, |app: TestApp| async move {
    let p = app.product("lamp", &["LAMP-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 2).await;
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    let pending = app.send(app.checkout_req(&cart, Some("t-1"), "tok_timeout")).await.expect(202);
    assert_eq!(pending["status"], "pending_payment");
    let id = pending["id"].as_str().unwrap().to_owned();
    let mut order = Value::Null;
    for _ in 0..50 {
        order = app.admin_get(&format!("/admin/orders/{id}")).await.expect(200);
        if order["status"] == "placed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(order["status"], "placed", "recovery placed the order: {order}");
    assert_eq!(order["payment"]["status"], "captured");
    assert_eq!(captures(&app, order["payment"]["id"].as_str().unwrap()).await, 1);
    let stock = app.admin_get(&format!("/admin/variants/{v}/stock")).await.expect(200);
    assert_eq!((stock["reserved"].as_i64(), stock["allocated"].as_i64()), (Some(0), Some(1)));
    assert_eq!(app.get(&format!("/store/carts/{cart}")).await.expect(200)["status"], "completed");
    // The key now answers with the settled order.
    let again = app.send(app.checkout_req(&cart, Some("t-1"), "tok_timeout")).await.expect(201);
    assert_eq!(again["status"], "placed");
});

both!(a_changed_price_is_reported_and_never_charged, |app: TestApp| async move {
    let p = app.product("vase", &["VASE-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    let cart = app.cart_with("EUR", &[(&v, 2)]).await;
    app.admin_patch(&format!("/admin/variants/{v}"), json!({"prices": [{"amount": 5500, "currency": "EUR"}]}))
        .await
        .expect(200);
    let r = app.send(app.checkout_req(&cart, Some("p-1"), "tok_visa")).await.problem(409, "price_changed");
    assert_eq!(r["items"][0]["old_unit_price"], json!({"amount": 4900, "currency": "EUR"}));
    assert_eq!(r["items"][0]["new_unit_price"], json!({"amount": 5500, "currency": "EUR"}));
    assert_eq!(captured_total(&app).await, 0);
    assert_eq!(app.admin_get("/admin/orders").await.expect(200)["items"], json!([]));
    let c = app.get(&format!("/store/carts/{cart}")).await.expect(200);
    assert_eq!(c["total"], json!({"amount": 11000, "currency": "EUR"}), "the cart shows the new price");
    let order = app.send(app.checkout_req(&cart, Some("p-2"), "tok_visa")).await.expect(201);
    assert_eq!(order["total"], json!({"amount": 11000, "currency": "EUR"}));
});

both!(untracked_and_backorder_variants_can_be_sold, |app: TestApp| async move {
    let p = app.product("print", &["PRINT-1", "PRINT-2"]).await;
    let untracked = p["variants"][0]["id"].as_str().unwrap().to_owned();
    let back = p["variants"][1]["id"].as_str().unwrap().to_owned();
    app.admin_patch(&format!("/admin/variants/{back}"), json!({"allow_backorder": true})).await.expect(200);
    app.stock(&back, 1).await;
    let cart = app.cart_with("EUR", &[(&untracked, 5), (&back, 3)]).await;
    app.send(app.checkout_req(&cart, Some("b-1"), "tok_visa")).await.expect(201);
    let stock = app.admin_get(&format!("/admin/variants/{back}/stock")).await.expect(200);
    assert_eq!((stock["allocated"].as_i64(), stock["available"].as_i64()), (Some(3), Some(-2)));
});

both!(the_worker_delivers_the_outbox, |app: TestApp| async move {
    let p = app.product("ob", &["OB-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    app.send(app.checkout_req(&cart, Some("o-1"), "tok_visa")).await.expect(201);
    let mut view = Value::Null;
    for _ in 0..50 {
        view = app.admin_get("/admin/outbox").await.expect(200);
        if view["pending"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(view["pending"], 0, "{view}");
    assert_eq!(view["dead"], 0);
    assert_eq!(view["dead_events"], json!([]));
    // The outbox is operations: an editor (catalog work) does not see it.
    let editor = app.admin_post("/admin/api-keys", json!({"name": "e", "role": "editor"})).await.expect(201);
    app.as_key(editor["token"].as_str().unwrap(), reqwest::Method::GET, "/admin/outbox", None)
        .await
        .problem(403, "forbidden");
});
