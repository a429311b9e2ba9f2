//! Risk scoring at checkout (docs/risk.md): blocks after too many declines per e-mail and per
//! client address, review holds, scoring off, the trusted country header.

use serde_json::{Value, json};

use crate::both;
use crate::support::{TestApp, checkout_body};

/// A scalar from the app's database (the test provider's ledger, the outbox).
async fn count(app: &TestApp, sql: &'static str) -> i64 {
    match app.db.pools() {
        backroom_db::Pools::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_one(reader).await.unwrap(),
        backroom_db::Pools::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

/// A checkout of `cart` under `key` by `email` paying with `token`, through the trusted proxy
/// for `client` when given (the app must trust 127.0.0.1), with extra headers.
fn checkout(
    app: &TestApp,
    cart: &str,
    key: &str,
    email: &str,
    token: &str,
    client: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    let mut body = checkout_body(token);
    body["email"] = json!(email);
    let mut req =
        app.client.post(app.url(&format!("/store/carts/{cart}/checkout"))).header("Idempotency-Key", key).json(&body);
    if let Some(ip) = client {
        req = req.header("x-forwarded-for", ip);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req
}

/// A product with `on_hand` units of one variant (EUR 49.00); answers the variant's id.
async fn variant(app: &TestApp, handle: &str, on_hand: i64) -> String {
    let p = app.product(handle, &[&format!("{handle}-1")]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, on_hand).await;
    v
}

async fn stock(app: &TestApp, v: &str) -> Value {
    app.admin_get(&format!("/admin/variants/{v}/stock")).await.expect(200)
}

fn trusting_the_proxy(s: &mut backroom::config::Settings) {
    s.trusted_proxies = backroom_api::client::TrustedProxies::parse("127.0.0.1, ::1").unwrap();
}

both!(declines_for_one_email_block_its_next_checkout, settings = trusting_the_proxy, |app: TestApp| async move {
    let v = variant(&app, "risky", 10).await;
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    // Five declines for one e-mail, each from another address (so only the e-mail counts).
    for i in 0..5 {
        let ip = format!("203.0.113.{i}");
        app.send(checkout(&app, &cart, &format!("d-{i}"), "mallory@example.com", "tok_declined", Some(&ip), &[]))
            .await
            .problem(402, "payment_declined");
    }
    let before = stock(&app, &v).await;
    // The sixth, with a good card from a fresh address: blocked, nothing reserved or charged.
    let blocked = checkout(&app, &cart, "b-1", "Mallory@Example.com ", "tok_visa", Some("198.51.100.7"), &[]);
    let body = app.send(blocked.try_clone().unwrap()).await.problem(403, "checkout_blocked");
    assert!(body.get("risk").is_none(), "the reasons are not told to the client: {body}");
    assert_eq!(stock(&app, &v).await, before);
    assert_eq!(before["available"], 10);
    assert_eq!(before["reserved"], 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM test_provider_charges").await, 5, "only the declines were asked");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM test_provider_charges WHERE status = 'captured'").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM orders WHERE status = 'placed'").await, 0);
    assert_eq!(app.get(&format!("/store/carts/{cart}")).await.expect(200)["status"], "open");
    // The refusal is the key's answer: a replay says it again.
    let again = app.send(blocked).await;
    assert_eq!(again.headers.get("idempotency-replayed").unwrap(), "true");
    again.problem(403, "checkout_blocked");
    // The attempt is a signal too, and another e-mail from that address is not held back.
    assert_eq!(count(&app, "SELECT COUNT(*) FROM risk_signals WHERE kind = 'attempt'").await, 6);
    let order = app
        .send(checkout(&app, &cart, "ok-1", "ana@example.com", "tok_visa", Some("198.51.100.7"), &[]))
        .await
        .expect(201);
    assert_eq!(order["status"], "placed");
    assert_eq!(order["risk"], json!({"score": 0, "decision": "allow", "reasons": []}));
    // Signals keep keyed hashes only: no e-mail, address or token in clear.
    let clear = count(
        &app,
        "SELECT COUNT(*) FROM risk_signals WHERE email_index LIKE '%@%' OR client_index LIKE '%.%' \
             OR token_index LIKE 'tok_%'",
    )
    .await;
    assert_eq!(clear, 0);
});

both!(
    declines_from_one_client_address_block_its_next_checkout,
    settings = trusting_the_proxy,
    |app: TestApp| async move {
        let v = variant(&app, "risky", 10).await;
        let cart = app.cart_with("EUR", &[(&v, 1)]).await;
        // One client behind the proxy, a new e-mail each time.
        for i in 0..5 {
            app.send(checkout(
                &app,
                &cart,
                &format!("d-{i}"),
                &format!("buyer{i}@example.com"),
                "tok_declined",
                Some("203.0.113.50"),
                &[],
            ))
            .await
            .problem(402, "payment_declined");
        }
        app.send(checkout(&app, &cart, "b", "fresh@example.com", "tok_visa", Some("203.0.113.50"), &[]))
            .await
            .problem(403, "checkout_blocked");
        assert_eq!(stock(&app, &v).await["available"], 10);
        // Another client is not held back.
        let order = app
            .send(checkout(&app, &cart, "ok", "fresh@example.com", "tok_visa", Some("203.0.113.51"), &[]))
            .await
            .expect(201);
        // One decline for this e-mail is not on record (they were other e-mails): a clean score.
        assert_eq!(order["risk"]["decision"], "allow");
    }
);

// The sixth checkout after five declines from one shopper (one e-mail, one address): the
// limit as docs/risk.md states it, with the default setting.
both!(five_declines_block_the_sixth_checkout, |app: TestApp| async move {
    let v = variant(&app, "risky", 10).await;
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    for i in 0..5 {
        app.send(app.checkout_req(&cart, Some(&format!("d-{i}")), "tok_declined"))
            .await
            .problem(402, "payment_declined");
    }
    app.send(app.checkout_req(&cart, Some("v"), "tok_visa")).await.problem(403, "checkout_blocked");
    assert_eq!(stock(&app, &v).await["available"], 10);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM test_provider_charges WHERE status = 'captured'").await, 0);
});

both!(
    an_order_above_the_review_limit_is_held_authorised_not_captured,
    settings = |s: &mut backroom::config::Settings| {
        s.risk.review_above = backroom_risk::parse_review_above("EUR:5000,USD:100000").unwrap();
    },
    |app: TestApp| async move {
        let v = variant(&app, "dear", 5).await;
        // 49.00: under the limit, placed.
        let small = app.cart_with("EUR", &[(&v, 1)]).await;
        let placed = app.send(app.checkout_req(&small, Some("s"), "tok_visa")).await.expect(201);
        assert_eq!(placed["status"], "placed");
        // 98.00: above it, held.
        let cart = app.cart_with("EUR", &[(&v, 2)]).await;
        let req = app.checkout_req(&cart, Some("h"), "tok_visa");
        let order = app.send(req.try_clone().unwrap()).await.expect(201);
        assert_eq!(order["status"], "on_hold");
        assert_eq!(order["payment"]["status"], "authorized");
        assert_eq!(order["risk"], json!({"score": 30, "decision": "review", "reasons": ["amount_above_review"]}));
        let pay = order["payment"]["id"].as_str().unwrap();
        assert_eq!(backroom_payments::TestProvider::new(app.db.clone()).captures(pay).await.unwrap(), 0);
        assert_eq!(count(&app, "SELECT COUNT(*) FROM test_provider_charges WHERE status = 'authorized'").await, 1);
        // The stock is the order's: allocated, not reserved, not on sale.
        let s = stock(&app, &v).await;
        assert_eq!(
            (s["allocated"].as_i64(), s["reserved"].as_i64(), s["available"].as_i64()),
            (Some(3), Some(0), Some(2))
        );
        assert_eq!(app.get(&format!("/store/carts/{cart}")).await.expect(200)["status"], "completed");
        // Staff see it held, with its risk; a replay answers the same order.
        let id = order["id"].as_str().unwrap();
        let admin = app.admin_get(&format!("/admin/orders/{id}")).await.expect(200);
        assert_eq!(admin["status"], "on_hold");
        assert_eq!(admin["risk"], order["risk"]);
        let held = app.admin_get("/admin/orders?status=on_hold").await.expect(200);
        assert_eq!(held["items"].as_array().unwrap().len(), 1);
        let again = app.send(req).await;
        assert_eq!(again.headers.get("idempotency-replayed").unwrap(), "true");
        assert_eq!(again.expect(201), order);
        // No `order.placed` for a held order (the one placed above has its own).
        let placed_events = count(&app, "SELECT COUNT(*) FROM outbox WHERE topic = 'order.placed'").await;
        assert!(placed_events <= 1, "{placed_events}");
    }
);

both!(
    scoring_off_blocks_nothing_and_scores_nothing,
    settings = |s: &mut backroom::config::Settings| {
        s.risk = backroom_risk::Settings::off();
    },
    |app: TestApp| async move {
        let v = variant(&app, "calm", 10).await;
        let cart = app.cart_with("EUR", &[(&v, 1)]).await;
        for i in 0..6 {
            app.send(app.checkout_req(&cart, Some(&format!("d-{i}")), "tok_declined"))
                .await
                .problem(402, "payment_declined");
        }
        let order = app.send(app.checkout_req(&cart, Some("v"), "tok_visa")).await.expect(201);
        assert_eq!(order["status"], "placed");
        assert_eq!(order["risk"], Value::Null);
        assert_eq!(count(&app, "SELECT COUNT(*) FROM risk_signals").await, 0);
    }
);

both!(
    a_country_mismatch_from_the_trusted_header_adds_to_the_score,
    settings = |s: &mut backroom::config::Settings| {
        s.risk.country_header = Some("cf-ipcountry".into());
        s.risk.review_score = 25;
    },
    |app: TestApp| async move {
        let v = variant(&app, "abroad", 10).await;
        // Shipping to PT from a client in PT: nothing to add.
        let cart = app.cart_with("EUR", &[(&v, 1)]).await;
        let order = app
            .send(checkout(&app, &cart, "pt", "ana@example.com", "tok_visa", None, &[("CF-IPCountry", "pt")]))
            .await
            .expect(201);
        assert_eq!(order["risk"]["reasons"], json!([]));
        // From a client in ES: the mismatch's 25 points reach this store's review score.
        let cart = app.cart_with("EUR", &[(&v, 1)]).await;
        let order = app
            .send(checkout(&app, &cart, "es", "ana@example.com", "tok_visa", None, &[("CF-IPCountry", "ES")]))
            .await
            .expect(201);
        assert_eq!(order["status"], "on_hold");
        assert_eq!(order["risk"], json!({"score": 25, "decision": "review", "reasons": ["country_mismatch"]}));
        // Unknown (`XX`) or no header: no country, no mismatch.
        let cart = app.cart_with("EUR", &[(&v, 1)]).await;
        let order = app
            .send(checkout(&app, &cart, "xx", "ana@example.com", "tok_visa", None, &[("CF-IPCountry", "XX")]))
            .await
            .expect(201);
        assert_eq!(order["status"], "placed");
    }
);

both!(
    the_country_header_is_ignored_unless_named,
    settings = |s: &mut backroom::config::Settings| {
        s.risk.review_score = 25;
    },
    |app: TestApp| async move {
        let v = variant(&app, "abroad", 10).await;
        let cart = app.cart_with("EUR", &[(&v, 1)]).await;
        let order = app
            .send(checkout(&app, &cart, "es", "ana@example.com", "tok_visa", None, &[("CF-IPCountry", "ES")]))
            .await
            .expect(201);
        assert_eq!(order["status"], "placed");
        assert_eq!(order["risk"]["reasons"], json!([]));
    }
);

both!(
    many_cards_for_one_email_are_held_for_review,
    settings = |s: &mut backroom::config::Settings| {
        s.risk.max_cards = 2;
    },
    |app: TestApp| async move {
        let v = variant(&app, "cards", 10).await;
        let cart = app.cart_with("EUR", &[(&v, 1)]).await;
        // Two different tokens declined, then a third card: more than two cards in the hour.
        for (i, token) in ["tok_declined", "tok_insufficient_funds"].into_iter().enumerate() {
            app.send(app.checkout_req(&cart, Some(&format!("d-{i}")), token)).await.problem(402, "payment_declined");
        }
        let order = app.send(app.checkout_req(&cart, Some("v"), "tok_visa")).await.expect(201);
        assert_eq!(order["status"], "on_hold");
        assert_eq!(order["risk"]["decision"], "review");
        let reasons = order["risk"]["reasons"].as_array().unwrap();
        assert!(reasons.contains(&json!("many_cards")) && reasons.contains(&json!("recent_declines")), "{reasons:?}");
    }
);
