//! Regions, taxes, promotions and shipping as a shopper meets them: the cart's totals, the
//! checkout and the order agree to the cent (one computation, one rounding rule), and a
//! promotion's usage limit is exact under concurrency.

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::both;
use crate::support::{TestApp, checkout_body};

fn eur(amount: i64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

fn usd(amount: i64) -> Value {
    json!({"amount": amount, "currency": "USD"})
}

/// Portugal in EUR with tax-inclusive prices at 23 % (and 6 % for `reduced`); the US in USD,
/// exclusive, at 8.875 %. Answers (pt, us) region ids.
async fn regions(app: &TestApp) -> (String, String) {
    let pt = app
        .admin_post(
            "/admin/regions",
            json!({"name": "Portugal", "currency": "EUR", "countries": ["PT"], "tax_inclusive": true}),
        )
        .await
        .expect(201);
    let pt = pt["id"].as_str().unwrap().to_owned();
    app.admin_post("/admin/tax-rates", json!({"region_id": pt, "name": "IVA", "rate": "23", "tax_class": "standard"}))
        .await
        .expect(201);
    app.admin_post(
        "/admin/tax-rates",
        json!({"region_id": pt, "name": "IVA reduzido", "rate": "6", "tax_class": "reduced"}),
    )
    .await
    .expect(201);
    let us = app
        .admin_post(
            "/admin/regions",
            json!({"name": "United States", "currency": "USD", "countries": ["US"], "tax_inclusive": false}),
        )
        .await
        .expect(201);
    let us = us["id"].as_str().unwrap().to_owned();
    app.admin_post(
        "/admin/tax-rates",
        json!({"region_id": us, "name": "Sales tax", "rate": "8.875", "tax_class": "standard"}),
    )
    .await
    .expect(201);
    (pt, us)
}

fn address(country: &str) -> Value {
    json!({"name": "Ana Silva", "line1": "Rua Augusta 1", "city": "Lisboa", "postal_code": "1100-048", "country": country})
}

/// A published product with one variant priced `eur` EUR and `usd` USD, 1,000 in stock.
async fn variant(app: &TestApp, handle: &str, eur: i64, usd: i64) -> String {
    let p = app
        .admin_post(
            "/admin/products",
            json!({"title": handle, "handle": handle, "status": "published",
                   "variants": [{"sku": handle.to_uppercase(), "prices": [{"amount": eur, "currency": "EUR"}, {"amount": usd, "currency": "USD"}]}]}),
        )
        .await
        .expect(201);
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 1000).await;
    v
}

async fn patch_cart(app: &TestApp, cart: &str, body: Value) -> crate::support::Res {
    app.send(app.client.patch(app.url(&format!("/store/carts/{cart}"))).json(&body)).await
}

async fn apply(app: &TestApp, cart: &str, code: &str) -> crate::support::Res {
    app.send(app.client.post(app.url(&format!("/store/carts/{cart}/promotions"))).json(&json!({"code": code}))).await
}

both!(an_inclusive_region_shows_the_tax_inside_the_price_and_the_order_keeps_it, |app: TestApp| async move {
    let (pt, _) = regions(&app).await;
    let v = variant(&app, "shirt", 4900, 5500).await;
    let cart = app.cart_with("EUR", &[(&v, 2)]).await;
    let c = patch_cart(&app, &cart, json!({"email": "ana@example.com", "shipping_address": address("PT")}))
        .await
        .expect(200);
    assert_eq!(c["region_id"], pt.as_str());
    assert_eq!(c["tax_inclusive"], true);
    assert_eq!(c["email"], "ana@example.com");
    assert_eq!(c["shipping_address"]["country"], "PT");
    // 98.00 € contains 98.00 × 23 / 123 = 18.3252… → 18.33 € of IVA; the total is the price.
    assert_eq!(c["subtotal"], eur(9800));
    assert_eq!(c["tax_total"], eur(1833));
    assert_eq!(c["items"][0]["tax_total"], eur(1833));
    assert_eq!(c["discount_total"], eur(0));
    assert_eq!(c["total"], eur(9800));
    let order = app.send(app.checkout_req(&cart, Some("k1"), "tok_visa")).await.expect(201);
    for field in ["subtotal", "discount_total", "tax_total", "shipping_total", "total"] {
        assert_eq!(order[field], c[field], "{field}");
    }
    assert_eq!(order["items"][0]["tax_total"], eur(1833));
    assert_eq!(order["region_id"], pt.as_str());
    assert_eq!(order["tax_inclusive"], true);
    let id = order["id"].as_str().unwrap();
    let stored = app.admin_get(&format!("/admin/orders/{id}")).await.expect(200);
    assert_eq!(stored["tax_total"], eur(1833));
    assert_eq!(stored["total"], eur(9800));
});

both!(an_exclusive_region_adds_the_tax_per_line, |app: TestApp| async move {
    let (_, us) = regions(&app).await;
    let a = variant(&app, "cap", 1500, 1005).await;
    let b = variant(&app, "mug", 1500, 333).await;
    let cart = app.cart_with("USD", &[(&a, 1), (&b, 3)]).await;
    let c = patch_cart(&app, &cart, json!({"shipping_address": address("US")})).await.expect(200);
    assert_eq!(c["region_id"], us.as_str());
    assert_eq!(c["tax_inclusive"], false);
    // 10.05 × 8.875 % = 0.8919… → 0.89; 9.99 × 8.875 % = 0.8866… → 0.89.
    assert_eq!(c["items"][0]["tax_total"], usd(89));
    assert_eq!(c["items"][1]["tax_total"], usd(89));
    assert_eq!(c["subtotal"], usd(2004));
    assert_eq!(c["tax_total"], usd(178));
    assert_eq!(c["total"], usd(2182));
    let mut body = checkout_body("tok_visa");
    body["shipping_address"] = address("US");
    let order = app
        .send(
            app.client
                .post(app.url(&format!("/store/carts/{cart}/checkout")))
                .header("Idempotency-Key", "k")
                .json(&body),
        )
        .await
        .expect(201);
    assert_eq!(order["total"], usd(2182));
    assert_eq!(order["tax_total"], usd(178));
});

both!(a_cart_refuses_a_country_no_region_serves_and_a_region_in_another_currency, |app: TestApp| async move {
    let (pt, us) = regions(&app).await;
    let v = variant(&app, "sock", 900, 1000).await;
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    patch_cart(&app, &cart, json!({"shipping_address": address("JP")})).await.problem(422, "country_not_served");
    patch_cart(&app, &cart, json!({"shipping_address": address("US")})).await.problem(422, "region_currency_mismatch");
    patch_cart(&app, &cart, json!({"region_id": us})).await.problem(422, "region_currency_mismatch");
    let p = patch_cart(&app, &cart, json!({"shipping_address": address("PT"), "region_id": "reg_nope"}))
        .await
        .problem(422, "validation_failed");
    assert_eq!(p["errors"][0]["field"], "region_id");
    patch_cart(&app, &cart, json!({"shipping_address": address("pt")})).await.problem(422, "validation_failed");
    patch_cart(&app, &cart, json!({"email": "not-an-email"})).await.problem(422, "validation_failed");
    patch_cart(&app, &cart, json!({"colour": "red"})).await.problem(422, "validation_failed");
    // Nothing of the refused changes stayed.
    let c = app.get(&format!("/store/carts/{cart}")).await.expect(200);
    assert_eq!(c["region_id"], Value::Null);
    assert_eq!(c["shipping_address"], Value::Null);
    // A region id alone is fine when it is the cart's currency's.
    let c = patch_cart(&app, &cart, json!({"region_id": pt})).await.expect(200);
    assert_eq!(c["region_id"], pt.as_str());
    // Checking out to a country no region serves is refused before anything is stored.
    let mut body = checkout_body("tok_visa");
    body["shipping_address"] = address("JP");
    app.send(
        app.client.post(app.url(&format!("/store/carts/{cart}/checkout"))).header("Idempotency-Key", "j").json(&body),
    )
    .await
    .problem(422, "country_not_served");
});

both!(a_checkout_address_that_moves_the_cart_to_a_region_is_a_changed_price, |app: TestApp| async move {
    let (pt, _) = regions(&app).await;
    let v = variant(&app, "belt", 2000, 2200).await;
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    // The cart was never given an address: the checkout's puts it in Portugal, whose tax the
    // shopper has not seen yet.
    let p = app.send(app.checkout_req(&cart, Some("first"), "tok_visa")).await.problem(409, "price_changed");
    assert_eq!(p["cart"]["region_id"], pt.as_str());
    assert_eq!(p["cart"]["tax_total"], eur(374)); // 20.00 × 23 / 123 = 3.739… → 3.74
    assert_eq!(p["cart"]["total"], eur(2000));
    // Nothing was charged or reserved; the same request under a new key goes through.
    let stock = app.admin_get(&format!("/admin/variants/{v}/stock")).await.expect(200);
    assert_eq!(stock["reserved"], 0);
    let order = app.send(app.checkout_req(&cart, Some("second"), "tok_visa")).await.expect(201);
    assert_eq!(order["tax_total"], eur(374));
    assert_eq!(order["region_id"], pt.as_str());
});

both!(promotions_discount_per_line_spread_fixed_amounts_and_free_shipping, |app: TestApp| async move {
    let (pt, _) = regions(&app).await;
    let a = variant(&app, "jacket", 1000, 1000).await;
    let b = variant(&app, "scarf", 2000, 2000).await;
    app.admin_post("/admin/promotions", json!({"code": "TEN", "type": "percentage", "value": 10})).await.expect(201);
    app.admin_post(
        "/admin/promotions",
        json!({"code": "OFF10", "type": "fixed", "value": {"amount": 1000, "currency": "EUR"}}),
    )
    .await
    .expect(201);
    app.admin_post("/admin/promotions", json!({"code": "SHIPFREE", "type": "free_shipping"})).await.expect(201);
    app.admin_post(
        "/admin/promotions",
        json!({"code": "BIG", "type": "percentage", "value": 5, "min_subtotal": {"amount": 100000, "currency": "EUR"}}),
    )
    .await
    .expect(201);
    app.admin_post(
        "/admin/promotions",
        json!({"code": "LATER", "type": "percentage", "value": 5, "starts_at": "2099-01-01T00:00:00Z"}),
    )
    .await
    .expect(201);
    app.admin_post("/admin/shipping-options", json!({"name": "Standard", "region_id": pt, "price": eur(500)}))
        .await
        .expect(201);
    let cart = app.cart_with("EUR", &[(&a, 1), (&b, 1)]).await;
    patch_cart(&app, &cart, json!({"shipping_address": address("PT")})).await.expect(200);

    let c = apply(&app, &cart, "ten").await.expect(200);
    assert_eq!(c["promotions"][0]["code"], "TEN");
    assert_eq!(c["items"][0]["discount_total"], eur(100));
    assert_eq!(c["items"][1]["discount_total"], eur(200));
    assert_eq!(c["discount_total"], eur(300));
    assert_eq!(c["total"], eur(2700));
    // One code per cart: a new one replaces the old; 10.00 € over 10 € and 20 € lines.
    let c = apply(&app, &cart, "OFF10").await.expect(200);
    assert_eq!(c["promotions"].as_array().unwrap().len(), 1);
    assert_eq!(c["items"][0]["discount_total"], eur(333));
    assert_eq!(c["items"][1]["discount_total"], eur(667));
    assert_eq!(c["discount_total"], eur(1000));
    // Tax on the lines after discounts: 6.67 € → 1.25 €; 13.33 € → 2.49 €.
    assert_eq!(c["items"][0]["tax_total"], eur(125));
    assert_eq!(c["items"][1]["tax_total"], eur(249));

    apply(&app, &cart, "NOPE").await.problem(422, "promotion_invalid");
    apply(&app, &cart, "BIG").await.problem(422, "promotion_invalid");
    apply(&app, &cart, "LATER").await.problem(422, "promotion_invalid");
    // The refused codes left the cart's code alone.
    let c = app.get(&format!("/store/carts/{cart}")).await.expect(200);
    assert_eq!(c["promotions"][0]["code"], "OFF10");

    // Shipping: required in a region with options, then taxed at the standard rate.
    app.send(app.checkout_req(&cart, Some("no-ship"), "tok_visa")).await.problem(422, "shipping_method_required");
    let options = app.get(&format!("/store/carts/{cart}/shipping-options")).await.expect(200);
    let so = options[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(options[0]["price"], eur(500));
    assert_eq!(options[0]["estimated"], false);
    let c = app
        .send(app.client.post(app.url(&format!("/store/carts/{cart}/shipping-method"))).json(&json!({"option_id": so})))
        .await
        .expect(200);
    assert_eq!(c["shipping_total"], eur(500));
    assert_eq!(c["shipping_method"]["option_id"], so.as_str());
    // 5.00 € of shipping contains 5.00 × 23 / 123 = 0.9349… → 0.93 € of IVA.
    assert_eq!(c["tax_total"], eur(125 + 249 + 93));
    assert_eq!(c["total"], eur(3000 - 1000 + 500));
    let c = apply(&app, &cart, "SHIPFREE").await.expect(200);
    assert_eq!(c["shipping_total"], eur(0));
    assert_eq!(c["promotions"][0]["amount"], eur(500));
    assert_eq!(c["total"], eur(3000));
    let c = app.send(app.client.delete(app.url(&format!("/store/carts/{cart}/promotions/shipfree")))).await.expect(200);
    assert_eq!(c["promotions"], json!([]));
    assert_eq!(c["shipping_total"], eur(500));
    app.send(app.client.delete(app.url(&format!("/store/carts/{cart}/promotions/SHIPFREE"))))
        .await
        .problem(404, "not_found");
    let c = apply(&app, &cart, "TEN").await.expect(200);
    let order = app.send(app.checkout_req(&cart, Some("paid"), "tok_visa")).await.expect(201);
    for field in ["subtotal", "discount_total", "tax_total", "shipping_total", "total"] {
        assert_eq!(order[field], c[field], "{field}");
    }
    assert_eq!(order["promotions"][0]["code"], "TEN");
    assert_eq!(order["shipping_method"]["option_id"], so.as_str());
    let promo = app.admin_get("/admin/promotions?limit=100").await.expect(200);
    let ten = promo["items"].as_array().unwrap().iter().find(|p| p["code"] == "TEN").unwrap().clone();
    assert_eq!(ten["used"], 1);
});

both!(free_over_makes_shipping_free_once_the_discounted_subtotal_reaches_it, |app: TestApp| async move {
    let (pt, _) = regions(&app).await;
    let v = variant(&app, "boot", 3000, 3000).await;
    app.admin_post(
        "/admin/shipping-options",
        json!({"name": "Standard", "region_id": pt, "price": eur(500), "free_over": eur(5000)}),
    )
    .await
    .expect(201);
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    patch_cart(&app, &cart, json!({"shipping_address": address("PT")})).await.expect(200);
    let options = app.get(&format!("/store/carts/{cart}/shipping-options")).await.expect(200);
    let so = options[0]["id"].as_str().unwrap().to_owned();
    app.send(app.client.post(app.url(&format!("/store/carts/{cart}/shipping-method"))).json(&json!({"option_id": so})))
        .await
        .expect(200);
    app.send(
        app.client.post(app.url(&format!("/store/carts/{cart}/items"))).json(&json!({"variant_id": v, "quantity": 1})),
    )
    .await
    .expect(200);
    let c = app.get(&format!("/store/carts/{cart}")).await.expect(200);
    assert_eq!(c["shipping_total"], eur(0));
    assert_eq!(c["shipping_method"]["price"], eur(0));
    assert_eq!(c["total"], eur(6000));
    let options = app.get(&format!("/store/carts/{cart}/shipping-options")).await.expect(200);
    assert_eq!(options[0]["price"], eur(0));
    // An option of another region is not the cart's.
    let other = app
        .send(
            app.client
                .post(app.url(&format!("/store/carts/{cart}/shipping-method")))
                .json(&json!({"option_id": "so_nope"})),
        )
        .await
        .problem(422, "validation_failed");
    assert_eq!(other["errors"][0]["field"], "option_id");
});

both!(
    a_guest_e_mail_uses_a_per_customer_code_once_and_a_declined_payment_gives_the_use_back,
    |app: TestApp| async move {
        let v = variant(&app, "hat", 1000, 1000).await;
        app.admin_post(
            "/admin/promotions",
            json!({"code": "ONCE", "type": "percentage", "value": 50, "per_customer_limit": 1, "usage_limit": 2}),
        )
        .await
        .expect(201);
        // A declined payment: no order placed, so the use goes back.
        let cart = app.cart_with("EUR", &[(&v, 1)]).await;
        apply(&app, &cart, "ONCE").await.expect(200);
        app.send(app.checkout_req(&cart, Some("d"), "tok_declined")).await.problem(402, "payment_declined");
        let order = app.send(app.checkout_req(&cart, Some("v"), "tok_visa")).await.expect(201);
        assert_eq!(order["discount_total"], eur(500));
        // The same e-mail again: its one use is taken.
        let cart = app.cart_with("EUR", &[(&v, 1)]).await;
        apply(&app, &cart, "ONCE").await.expect(200);
        let p = app.send(app.checkout_req(&cart, Some("again"), "tok_visa")).await.problem(409, "promotion_exhausted");
        assert_eq!(p["promotion_code"], "ONCE");
        // Another e-mail takes the second and last use; a third shopper finds the code used up.
        let mut body = checkout_body("tok_visa");
        body["email"] = json!("bea@example.com");
        let cart2 = app.cart_with("EUR", &[(&v, 1)]).await;
        apply(&app, &cart2, "ONCE").await.expect(200);
        app.send(
            app.client
                .post(app.url(&format!("/store/carts/{cart2}/checkout")))
                .header("Idempotency-Key", "b")
                .json(&body),
        )
        .await
        .expect(201);
        let cart3 = app.cart_with("EUR", &[(&v, 1)]).await;
        apply(&app, &cart3, "ONCE").await.problem(409, "promotion_exhausted");
        // Taking the last use told the outbox.
        let sql = "SELECT COUNT(*) FROM outbox WHERE topic = 'promotion.exhausted'";
        let n: i64 = match app.db.pools() {
            backroom_db::Pools::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_one(reader).await.unwrap(),
            backroom_db::Pools::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        };
        assert_eq!(n, 1);
    }
);

both!(
    a_code_limited_to_100_uses_is_used_100_times_by_1000_concurrent_checkouts,
    // One test client plays a thousand shoppers: the per-client limits would refuse it.
    // Recovery settles the orders answered 202 under this load soon after.
    settings = |s: &mut backroom::config::Settings| {
        s.rate_limits = backroom_api::ratelimit::RateLimits::off();
        s.checkout.recovery_grace = std::time::Duration::from_millis(500);
    },
    |app: TestApp| async move {
        let v = variant(&app, "viral", 1000, 1000).await;
        app.stock(&v, 5000).await;
        app.admin_post(
            "/admin/promotions",
            json!({"code": "VIRAL", "type": "percentage", "value": 20, "usage_limit": 100}),
        )
        .await
        .expect(201);
        let carts: Vec<String> = futures_util::stream::iter(0..1000)
            .map(|_| {
                let app = &app;
                let v = v.clone();
                async move {
                    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
                    apply(app, &cart, "VIRAL").await.expect(200);
                    cart
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let answers: Vec<(u16, Value)> = futures_util::future::join_all(carts.iter().map(|cart| async {
            // A shed request (503) or a connection the server closed under this load is
            // retried under its key, as a client would: the key makes the retry safe.
            loop {
                match app.checkout_req(cart, Some("viral"), "tok_visa").send().await {
                    Ok(r) if r.status().as_u16() != 503 => {
                        let status = r.status().as_u16();
                        return (status, r.json::<Value>().await.unwrap_or(Value::Null));
                    }
                    _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                }
            }
        }))
        .await;
        // An order is `201 placed`, or `202 pending_payment` when the provider's answer came late
        // under this load (recovery places it).
        let orders: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 201 || *s == 202).map(|(_, b)| b).collect();
        let exhausted = answers.iter().filter(|(s, b)| *s == 409 && b["code"] == "promotion_exhausted").count();
        let mut seen = std::collections::BTreeMap::new();
        for (status, body) in &answers {
            *seen.entry(format!("{status} {}", body["code"].as_str().unwrap_or(""))).or_insert(0) += 1;
        }
        assert_eq!(orders.len(), 100, "answers: {seen:?}");
        assert_eq!(exhausted, 900, "answers: {seen:?}");
        for order in &orders {
            assert_eq!(order["promotions"][0]["code"], "VIRAL");
            assert_eq!(order["discount_total"], eur(200));
        }
        // Orders answered 202 are settled by recovery (their stock is reserved until then).
        for _ in 0..50 {
            let pending = answers.iter().filter(|(s, _)| *s == 202).count();
            if pending == 0 || app.admin_get(&format!("/admin/variants/{v}/stock")).await.expect(200)["reserved"] == 0 {
                break;
            }
            app.checkout.recover().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // No stock is held for the refused checkouts: exactly the 100 orders' units are allocated.
        let stock = app.admin_get(&format!("/admin/variants/{v}/stock")).await.expect(200);
        assert_eq!(stock["reserved"], 0);
        assert_eq!(stock["allocated"], 100);
        let promos = app.admin_get("/admin/promotions").await.expect(200);
        let viral = promos["items"].as_array().unwrap().iter().find(|p| p["code"] == "VIRAL").unwrap().clone();
        assert_eq!(viral["used"], 100);
    }
);

both!(
    a_carrier_that_does_not_answer_gives_the_flat_price_marked_estimated_and_that_price_is_charged,
    settings = |s: &mut backroom::config::Settings| s.webhooks_allow_private = true,
    |app: TestApp| async move {
        let (pt, _) = regions(&app).await;
        let v = variant(&app, "parcel", 2000, 2000).await;
        // Nothing listens on this port: every quote fails at once.
        let carrier = json!({"quote_url": "http://127.0.0.1:9/quote", "timeout_ms": 200});
        app.admin_post(
            "/admin/shipping-options",
            json!({"name": "Courier", "region_id": pt, "price": eur(700), "carrier": carrier}),
        )
        .await
        .expect(201);
        let cart = app.cart_with("EUR", &[(&v, 1)]).await;
        patch_cart(&app, &cart, json!({"shipping_address": address("PT")})).await.expect(200);
        let options = app.get(&format!("/store/carts/{cart}/shipping-options")).await.expect(200);
        assert_eq!(options[0]["price"], eur(700));
        assert_eq!(options[0]["estimated"], true);
        let so = options[0]["id"].as_str().unwrap().to_owned();
        let c = app
            .send(
                app.client
                    .post(app.url(&format!("/store/carts/{cart}/shipping-method")))
                    .json(&json!({"option_id": so})),
            )
            .await
            .expect(200);
        assert_eq!(c["shipping_method"]["estimated"], true);
        assert_eq!(c["shipping_total"], eur(700));
        let order = app.send(app.checkout_req(&cart, Some("courier"), "tok_visa")).await.expect(201);
        assert_eq!(order["shipping_total"], eur(700));
        assert_eq!(order["total"], c["total"]);
    }
);
