//! Orders after the sale (docs/orders.md): fulfilments, shipments and deliveries move the
//! order's statuses and its stock; cancels release stock and give the money back; refunds
//! never pass the captured amount, also when many are sent at once, and never happen twice
//! for one key; returns restock and refund the exact share; held orders are approved or
//! rejected; a refund made in the provider's dashboard shows on the order.

use std::time::Duration;

use backroom_payments::PaymentProvider;
use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::support::{TestApp, checkout_body};

fn eur(amount: i64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

fn usd(amount: i64) -> Value {
    json!({"amount": amount, "currency": "USD"})
}

/// (on_hand, reserved, allocated) of a variant, summed over locations.
async fn stock_of(app: &TestApp, v: &str) -> (i64, i64, i64) {
    let s = app.admin_get(&format!("/admin/variants/{v}/stock")).await.expect(200);
    (s["on_hand"].as_i64().unwrap(), s["reserved"].as_i64().unwrap(), s["allocated"].as_i64().unwrap())
}

/// A placed order of `lines` (variant, quantity), paid with `token`.
async fn order_of(app: &TestApp, lines: &[(&str, i64)], key: &str, token: &str) -> Value {
    let cart = app.cart_with("EUR", lines).await;
    let order = app.send(app.checkout_req(&cart, Some(key), token)).await.expect(201);
    app.admin_get(&format!("/admin/orders/{}", order["id"].as_str().unwrap())).await.expect(200)
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

fn item(order: &Value, i: usize) -> String {
    order["items"][i]["id"].as_str().unwrap().to_owned()
}

async fn refund(app: &TestApp, order: &str, key: Option<&str>, body: Value) -> crate::support::Res {
    let mut req = app
        .client
        .post(app.url(&format!("/admin/orders/{order}/refunds")))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    app.send(req).await
}

async fn events(app: &TestApp, topic: &str) -> usize {
    backroom_db::outbox::list(&app.db, topic).await.unwrap().len()
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

both!(fulfil_ship_and_deliver_move_the_statuses_and_the_stock, |app: TestApp| async move {
    let p = app.product("tee", &["TEE-1", "TEE-2"]).await;
    let (a, b) =
        (p["variants"][0]["id"].as_str().unwrap().to_owned(), p["variants"][1]["id"].as_str().unwrap().to_owned());
    app.stock(&a, 5).await;
    app.stock(&b, 5).await;
    let order = order_of(&app, &[(&a, 2), (&b, 1)], "k-1", "tok_visa").await;
    let oid = id(&order);
    assert_eq!(order["status"], "placed");
    assert_eq!(order["payment_status"], "captured");
    assert_eq!(order["fulfillment_status"], "not_fulfilled");
    assert_eq!(order["refunded_total"], eur(0));
    assert!(item(&order, 0).starts_with("item_"));
    assert_eq!(stock_of(&app, &a).await, (5, 0, 2));
    let other = order_of(&app, &[(&b, 1)], "k-2", "tok_visa").await;
    let path = format!("/admin/orders/{oid}/fulfillments");

    // Bad input is refused with the field, and nothing moves.
    for (items, field) in [
        (json!([{"item_id": "item_nope", "quantity": 1}]), "items[0].item_id"),
        (json!([{"item_id": item(&other, 0), "quantity": 1}]), "items[0].item_id"),
        (json!([{"item_id": item(&order, 0), "quantity": 0}]), "items[0].quantity"),
        (json!([{"item_id": item(&order, 0), "quantity": 3}]), "items[0].quantity"),
        (json!([]), "items"),
    ] {
        let r = app.admin_post(&path, json!({"items": items})).await.problem(422, "validation_failed");
        assert_eq!(fields(&r), [field], "{r}");
    }
    app.admin_post(&path, json!({"items": [{"item_id": item(&order, 0), "quantity": 1}], "location_id": "loc_nope"}))
        .await
        .problem(422, "validation_failed");
    app.admin_post(&path, json!({"items": [], "extra": 1})).await.problem(422, "validation_failed");
    app.admin_post("/admin/orders/ord_nope/fulfillments", json!({"items": [{"item_id": "item_x", "quantity": 1}]}))
        .await
        .problem(404, "not_found");
    assert_eq!(stock_of(&app, &a).await, (5, 0, 2));

    // One of the two A units leaves stock.
    let f1 = app.admin_post(&path, json!({"items": [{"item_id": item(&order, 0), "quantity": 1}]})).await.expect(201);
    assert!(id(&f1).starts_with("ful_"));
    assert_eq!(f1["status"], "fulfilled");
    assert_eq!(f1["shipments"], json!([]));
    assert_eq!(f1["items"][0]["quantity"], 1);
    assert_eq!(f1["items"][0]["location_id"], "loc_default");
    assert_eq!(stock_of(&app, &a).await, (4, 0, 1));
    let ledger = app.admin_get(&format!("/admin/variants/{a}/stock/adjustments")).await.expect(200);
    let last = &ledger["items"][0];
    assert_eq!((last["on_hand_delta"].as_i64(), last["allocated_delta"].as_i64()), (Some(-1), Some(-1)), "{last}");
    assert!(last["reason"].as_str().unwrap().contains(&id(&f1)), "{last}");
    let o = app.admin_get(&format!("/admin/orders/{oid}")).await.expect(200);
    assert_eq!(o["fulfillment_status"], "partially_fulfilled");
    assert_eq!(o["items"][0]["fulfilled_quantity"], 1);
    assert_eq!(o["fulfillments"][0]["id"], id(&f1).as_str());
    // Only one A unit is left to fulfil.
    let r = app
        .admin_post(&path, json!({"items": [{"item_id": item(&order, 0), "quantity": 2}]}))
        .await
        .problem(422, "validation_failed");
    assert_eq!(fields(&r), ["items[0].quantity"]);

    // Delivering before shipping is a conflict; then ship and deliver.
    let f1p = format!("{path}/{}", id(&f1));
    app.admin_post(&format!("{f1p}/delivered"), json!({})).await.problem(409, "order_state_conflict");
    app.admin_post(&format!("{f1p}/shipments"), json!({"carrier": ""})).await.problem(422, "validation_failed");
    app.admin_post(&format!("{path}/ful_nope/shipments"), json!({"carrier": "DHL", "tracking_number": "1"}))
        .await
        .problem(404, "not_found");
    let shp = app
        .admin_post(
            &format!("{f1p}/shipments"),
            json!({"carrier": "DHL", "tracking_number": "JD0146", "tracking_url": "https://dhl.example/JD0146"}),
        )
        .await
        .expect(201);
    assert!(id(&shp).starts_with("shp_"));
    assert_eq!(shp["tracking_number"], "JD0146");
    let o = app.admin_get(&format!("/admin/orders/{oid}")).await.expect(200);
    assert_eq!(o["fulfillment_status"], "partially_shipped");
    assert_eq!(o["fulfillments"][0]["status"], "shipped");
    assert_eq!(o["fulfillments"][0]["shipments"][0]["id"], id(&shp).as_str());
    let d = app.admin_post(&format!("{f1p}/delivered"), json!({})).await.expect(200);
    assert_eq!(d["status"], "delivered");
    app.admin_post(&format!("{f1p}/delivered"), json!({})).await.problem(409, "order_state_conflict");
    // An order with a fulfilment cannot be canceled.
    app.admin_post(&format!("/admin/orders/{oid}/cancel"), json!({})).await.problem(409, "order_not_cancelable");

    // The rest: fulfilled, shipped, delivered: the order is completed.
    let f2 = app
        .admin_post(
            &path,
            json!({"items": [{"item_id": item(&order, 0), "quantity": 1}, {"item_id": item(&order, 1), "quantity": 1}]}),
        )
        .await
        .expect(201);
    assert_eq!(stock_of(&app, &a).await, (3, 0, 0));
    assert_eq!(stock_of(&app, &b).await, (4, 0, 1));
    let f2p = format!("{path}/{}", id(&f2));
    app.admin_post(&format!("{f2p}/shipments"), json!({"carrier": "CTT", "tracking_number": "RR1"})).await.expect(201);
    let o = app.admin_get(&format!("/admin/orders/{oid}")).await.expect(200);
    assert_eq!((o["status"].as_str(), o["fulfillment_status"].as_str()), (Some("placed"), Some("shipped")));
    app.admin_post(&format!("{f2p}/delivered"), json!({})).await.expect(200);
    let o = app.admin_get(&format!("/admin/orders/{oid}")).await.expect(200);
    assert_eq!((o["status"].as_str(), o["fulfillment_status"].as_str()), (Some("completed"), Some("delivered")));
    let hist: Vec<&str> = o["history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(hist.last(), Some(&"completed"), "{hist:?}");
    // Nothing more to fulfil; a completed order is not canceled.
    app.admin_post(&path, json!({"items": [{"item_id": item(&order, 1), "quantity": 1}]}))
        .await
        .problem(409, "order_state_conflict");
    app.admin_post(&format!("/admin/orders/{oid}/cancel"), json!({})).await.problem(409, "order_not_cancelable");
    assert_eq!(events(&app, "order.fulfilled").await, 2);
    assert_eq!(events(&app, "order.shipped").await, 2);
    assert_eq!(events(&app, "order.delivered").await, 2);
    // The customer's own view shows the statuses too.
    let pub_order = app.admin_get(&format!("/admin/orders/{}", id(&other))).await.expect(200);
    assert_eq!(pub_order["fulfillment_status"], "not_fulfilled");
});

both!(cancel_releases_the_stock_and_gives_the_money_back, |app: TestApp| async move {
    let p = app.product("cap", &["CAP-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 5).await;
    let order = order_of(&app, &[(&v, 2)], "c-1", "tok_visa").await;
    let oid = id(&order);
    let attempt = order["payment"]["id"].as_str().unwrap().to_owned();
    assert_eq!(stock_of(&app, &v).await, (5, 0, 2));
    // A partial refund first: the cancel gives back only the rest.
    refund(&app, &oid, Some("r-1"), json!({"amount": eur(1800), "reason": "goodwill"})).await.expect(201);
    let o = app.admin_post(&format!("/admin/orders/{oid}/cancel"), json!({})).await.expect(200);
    assert_eq!(o["status"], "canceled");
    assert_eq!(o["payment_status"], "refunded");
    assert_eq!(o["refunded_total"], eur(9800));
    assert_eq!(o["refunds"][1]["amount"], eur(8000));
    assert_eq!(o["refunds"][1]["status"], "succeeded");
    assert_eq!(stock_of(&app, &v).await, (5, 0, 0));
    let provider = backroom_payments::TestProvider::new(app.db.clone());
    assert_eq!(provider.refunded(&attempt).await.unwrap(), (9800, 2));
    // Twice is refused; so is a refund of a canceled order.
    app.admin_post(&format!("/admin/orders/{oid}/cancel"), json!({})).await.problem(409, "order_not_cancelable");
    refund(&app, &oid, Some("r-2"), json!({"amount": eur(1), "reason": "again"}))
        .await
        .problem(409, "order_state_conflict");
    assert_eq!(events(&app, "order.canceled").await, 1);
    assert_eq!(events(&app, "order.refunded").await, 2);

    // An order refunded in full already is canceled with nothing more to pay back.
    let order = order_of(&app, &[(&v, 1)], "c-2", "tok_visa").await;
    let oid = id(&order);
    refund(&app, &oid, Some("r-3"), json!({"amount": eur(4900), "reason": "goodwill"})).await.expect(201);
    let o = app.admin_post(&format!("/admin/orders/{oid}/cancel"), json!({})).await.expect(200);
    assert_eq!((o["status"].as_str(), o["payment_status"].as_str()), (Some("canceled"), Some("refunded")));
    assert_eq!(o["refunds"].as_array().unwrap().len(), 1);
    assert_eq!(stock_of(&app, &v).await, (5, 0, 0));
    app.admin_post("/admin/orders/ord_nope/cancel", json!({})).await.problem(404, "not_found");
});

both!(twenty_concurrent_refunds_never_pass_the_captured_amount, |app: TestApp| async move {
    let p = app.product("coat", &["COAT-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 5).await;
    let order = order_of(&app, &[(&v, 2)], "t-1", "tok_visa").await;
    let oid = id(&order);
    let attempt = order["payment"]["id"].as_str().unwrap().to_owned();
    // 20 refunds of 10 % each, all at once.
    let answers =
        futures_util::future::join_all(
            (0..20).map(|i| {
                let (app, oid) = (&app, oid.clone());
                async move {
                    refund(app, &oid, Some(&format!("ten-{i}")), json!({"amount": eur(980), "reason": "ten"})).await
                }
            }),
        )
        .await;
    let accepted: Vec<&Value> = answers.iter().filter(|r| r.status == 201).map(|r| &r.body).collect();
    let refused = answers.iter().filter(|r| r.status == 422 && r.body["code"] == "refund_exceeds_captured").count();
    assert_eq!((accepted.len(), refused), (10, 10), "{:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    let provider = backroom_payments::TestProvider::new(app.db.clone());
    for r in &accepted {
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(provider.refunds(r["id"].as_str().unwrap()).await.unwrap(), 1);
    }
    assert_eq!(provider.refunded(&attempt).await.unwrap(), (9800, 10));
    let o = app.admin_get(&format!("/admin/orders/{oid}")).await.expect(200);
    assert_eq!(o["refunded_total"], eur(9800));
    assert_eq!(o["payment_status"], "refunded");
    let refused = answers.iter().find(|r| r.status == 422).unwrap();
    assert_eq!(refused.body["refundable"], eur(0), "{}", refused.body);
    assert_eq!(events(&app, "order.refunded").await, 10);
});

both!(
    refunds_are_idempotent_checked_and_recovered,
    settings = |s: &mut backroom::config::Settings| {
        s.checkout.recovery_interval = Duration::from_secs(3600);
        s.checkout.recovery_grace = Duration::ZERO;
    },
    |app: TestApp| async move {
        let p = app.product("scarf", &["SCARF-1"]).await;
        let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
        app.stock(&v, 5).await;
        let order = order_of(&app, &[(&v, 1)], "i-1", "tok_visa").await;
        let oid = id(&order);
        let provider = backroom_payments::TestProvider::new(app.db.clone());

        let body = json!({"amount": eur(1000), "reason": "damaged", "note": "box crushed"});
        let first = refund(&app, &oid, Some("same"), body.clone()).await;
        assert_eq!(first.status, 201, "{}", first.body);
        let r = first.body;
        assert!(id(&r).starts_with("ref_"));
        assert_eq!((r["status"].as_str(), r["amount"].clone()), (Some("succeeded"), eur(1000)));
        assert_eq!(r["reason"], "damaged");
        let again = refund(&app, &oid, Some("same"), body.clone()).await;
        assert_eq!(again.status, 201);
        assert_eq!(again.headers.get("idempotency-replayed").unwrap(), "true");
        assert_eq!(again.body, r);
        assert_eq!(provider.refunds(&id(&r)).await.unwrap(), 1);
        refund(&app, &oid, Some("same"), json!({"amount": eur(999), "reason": "damaged"}))
            .await
            .problem(422, "idempotency_key_reused");
        refund(&app, &oid, None, body.clone()).await.problem(400, "idempotency_key_required");
        let o = app.admin_get(&format!("/admin/orders/{oid}")).await.expect(200);
        assert_eq!(
            (o["payment_status"].as_str(), o["refunded_total"].clone()),
            (Some("partially_refunded"), eur(1000))
        );

        // Bad amounts and bodies.
        let wrong = refund(&app, &oid, Some("b-1"), json!({"amount": usd(100), "reason": "x"}))
            .await
            .problem(422, "validation_failed");
        assert_eq!(fields(&wrong), ["amount.currency"]);
        let zero = refund(&app, &oid, Some("b-2"), json!({"amount": eur(0), "reason": "x"}))
            .await
            .problem(422, "validation_failed");
        assert_eq!(fields(&zero), ["amount.amount"]);
        refund(&app, &oid, Some("b-3"), json!({"amount": {"amount": -5, "currency": "EUR"}, "reason": "x"}))
            .await
            .problem(422, "validation_failed");
        refund(&app, &oid, Some("b-4"), json!({"amount": eur(5), "reason": ""}))
            .await
            .problem(422, "validation_failed");
        refund(&app, &oid, Some("b-5"), json!({"amount": eur(5), "reason": "x", "why": 1}))
            .await
            .problem(422, "validation_failed");
        let over = refund(&app, &oid, Some("b-6"), json!({"amount": eur(3901), "reason": "x"}))
            .await
            .problem(422, "refund_exceeds_captured");
        assert_eq!(over["refundable"], eur(3900));
        refund(&app, "ord_nope", Some("b-7"), body.clone()).await.problem(404, "not_found");

        // A refund whose answer is lost stays pending; recovery asks again with the same key.
        let lost = order_of(&app, &[(&v, 1)], "i-2", "tok_refund_timeout").await;
        let r = refund(&app, &id(&lost), Some("lost"), json!({"amount": eur(4900), "reason": "x"})).await.expect(201);
        assert_eq!(r["status"], "pending");
        assert_eq!(provider.refunds(&id(&r)).await.unwrap(), 1);
        let o = app.admin_get(&format!("/admin/orders/{}", id(&lost))).await.expect(200);
        assert_eq!((o["payment_status"].as_str(), o["refunded_total"].clone()), (Some("captured"), eur(0)));
        let done = app.checkout.recover().await.unwrap();
        assert_eq!(done.refunds, 1, "{done:?}");
        let o = app.admin_get(&format!("/admin/orders/{}", id(&lost))).await.expect(200);
        assert_eq!(o["refunds"][0]["status"], "succeeded");
        assert_eq!((o["payment_status"].as_str(), o["refunded_total"].clone()), (Some("refunded"), eur(4900)));
        assert_eq!(provider.refunds(&id(&r)).await.unwrap(), 1);
        // Nothing is pending any more.
        assert_eq!(app.checkout.recover().await.unwrap().refunds, 0);
    }
);

both!(a_return_restocks_and_refunds_the_lines_share_after_discount_with_tax, |app: TestApp| async move {
    // The United States in USD, prices without tax, 8.875 %; a 10 % promotion.
    let us = app
        .admin_post(
            "/admin/regions",
            json!({"name": "United States", "currency": "USD", "countries": ["US"], "tax_inclusive": false}),
        )
        .await
        .expect(201);
    app.admin_post(
        "/admin/tax-rates",
        json!({"region_id": us["id"], "name": "Sales tax", "rate": "8.875", "tax_class": "standard"}),
    )
    .await
    .expect(201);
    app.admin_post("/admin/promotions", json!({"code": "TEN", "type": "percentage", "value": 10})).await.expect(201);
    let mut ids = Vec::new();
    for (handle, usd_price) in [("mug", 333), ("cap", 1005)] {
        let p = app
            .admin_post(
                "/admin/products",
                json!({"title": handle, "handle": handle, "status": "published",
                       "variants": [{"sku": handle.to_uppercase(), "prices": [{"amount": usd_price, "currency": "USD"}]}]}),
            )
            .await
            .expect(201);
        let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
        app.stock(&v, 10).await;
        ids.push(v);
    }
    let (mug, cap) = (ids[0].clone(), ids[1].clone());
    let cart = app.cart_with("USD", &[(&mug, 3), (&cap, 1)]).await;
    let address =
        json!({"name": "Ana Silva", "line1": "1 Main St", "city": "Boston", "postal_code": "02101", "country": "US"});
    app.send(app.client.patch(app.url(&format!("/store/carts/{cart}"))).json(&json!({"shipping_address": address})))
        .await
        .expect(200);
    app.send(app.client.post(app.url(&format!("/store/carts/{cart}/promotions"))).json(&json!({"code": "TEN"})))
        .await
        .expect(200);
    let mut body = checkout_body("tok_visa");
    body["shipping_address"] = address;
    let order = app
        .send(
            app.client
                .post(app.url(&format!("/store/carts/{cart}/checkout")))
                .header("Idempotency-Key", "ret")
                .json(&body),
        )
        .await
        .expect(201);
    let oid = id(&order);
    // Mugs: 9.99 − 10 % (1.00, 0.999 rounded) = 8.99, tax 8.99 × 8.875 % = 0.7979 → 0.80: 9.79 paid.
    assert_eq!(
        (order["items"][0]["discount_total"].clone(), order["items"][0]["tax_total"].clone()),
        (usd(100), usd(80))
    );
    // Cap: 10.05 − 1.00 (1.005 half to even) = 9.05, tax 0.8032 → 0.80: 9.85 paid.
    assert_eq!(
        (order["items"][1]["discount_total"].clone(), order["items"][1]["tax_total"].clone()),
        (usd(100), usd(80))
    );
    assert_eq!(order["total"], usd(1964));
    let mug_item = order["items"][0]["id"].as_str().unwrap().to_owned();
    let cap_item = order["items"][1]["id"].as_str().unwrap().to_owned();
    let returns = format!("/admin/orders/{oid}/returns");

    // Nothing was shipped yet: nothing can come back.
    let r = app
        .admin_post(&returns, json!({"items": [{"item_id": mug_item, "quantity": 1}], "restock": true, "refund": true}))
        .await
        .problem(422, "validation_failed");
    assert_eq!(fields(&r), ["items[0].quantity"]);
    let f = app
        .admin_post(
            &format!("/admin/orders/{oid}/fulfillments"),
            json!({"items": [{"item_id": mug_item, "quantity": 3}]}),
        )
        .await
        .expect(201);
    app.admin_post(
        &format!("/admin/orders/{oid}/fulfillments/{}/shipments", id(&f)),
        json!({"carrier": "UPS", "tracking_number": "1Z"}),
    )
    .await
    .expect(201);
    assert_eq!(stock_of(&app, &mug).await, (7, 0, 0));

    // One mug of three: round(979 / 3) = 326.
    let ret = app
        .admin_post(&returns, json!({"items": [{"item_id": mug_item, "quantity": 1}], "restock": true, "refund": true}))
        .await
        .expect(201);
    assert!(id(&ret).starts_with("ret_"));
    assert_eq!(ret["restocked"], true);
    assert_eq!(ret["refund"]["amount"], usd(326));
    assert_eq!(ret["refund"]["status"], "succeeded");
    assert_eq!(ret["items"], json!([{"item_id": mug_item, "quantity": 1}]));
    assert_eq!(stock_of(&app, &mug).await, (8, 0, 0));
    // The cap was not shipped; more mugs than are left is refused.
    for (items, field) in [
        (json!([{"item_id": cap_item, "quantity": 1}]), "items[0].quantity"),
        (json!([{"item_id": mug_item, "quantity": 3}]), "items[0].quantity"),
        (json!([{"item_id": "item_nope", "quantity": 1}]), "items[0].item_id"),
        (json!([{"item_id": mug_item, "quantity": 0}]), "items[0].quantity"),
    ] {
        let r = app
            .admin_post(&returns, json!({"items": items, "restock": true, "refund": true}))
            .await
            .problem(422, "validation_failed");
        assert_eq!(fields(&r), [field], "{r}");
    }
    // The other two: 979 − 326 = 653, so the line gives back exactly what it cost.
    let ret = app
        .admin_post(
            &returns,
            json!({"items": [{"item_id": mug_item, "quantity": 2}], "restock": false, "refund": true}),
        )
        .await
        .expect(201);
    assert_eq!(ret["refund"]["amount"], usd(653));
    assert_eq!(stock_of(&app, &mug).await, (8, 0, 0));
    let o = app.admin_get(&format!("/admin/orders/{oid}")).await.expect(200);
    assert_eq!(o["refunded_total"], usd(979));
    assert_eq!(o["payment_status"], "partially_refunded");
    assert_eq!(o["items"][0]["returned_quantity"], 3);
    assert_eq!(o["returns"].as_array().unwrap().len(), 2);
    assert_eq!(events(&app, "return.received").await, 2);
    // A return without a refund restocks only.
    let ledger = app.admin_get(&format!("/admin/variants/{mug}/stock/adjustments")).await.expect(200);
    assert!(ledger["items"][0]["reason"].as_str().unwrap().starts_with("returned from"), "{ledger}");
});

both!(
    held_orders_are_approved_or_rejected,
    // Every order above 10.00 EUR is held for review by risk scoring (docs/risk.md).
    settings = |s: &mut backroom::config::Settings| {
        s.risk.review_above = backroom_risk::parse_review_above("EUR:1000").unwrap();
    },
    |app: TestApp| async move {
        let p = app.product("lamp", &["LAMP-1"]).await;
        let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
        app.stock(&v, 5).await;
        let provider = backroom_payments::TestProvider::new(app.db.clone());
        let mut held = Vec::new();
        for key in ["h-1", "h-2"] {
            let order = order_of(&app, &[(&v, 1)], key, "tok_visa").await;
            // Held: the payment only authorised, the stock allocated, no `order.placed` yet.
            assert_eq!(
                (order["status"].as_str(), order["payment_status"].as_str()),
                (Some("on_hold"), Some("authorized"))
            );
            assert_eq!(order["risk"]["decision"], "review");
            let attempt = order["payment"]["id"].as_str().unwrap().to_owned();
            assert_eq!(provider.captures(&attempt).await.unwrap(), 0);
            held.push((id(&order), attempt));
        }
        assert_eq!(stock_of(&app, &v).await, (5, 0, 2));
        let (one, one_attempt) = &held[0];
        app.admin_post(
            &format!("/admin/orders/{one}/fulfillments"),
            json!({"items": [{"item_id": "x", "quantity": 1}]}),
        )
        .await
        .problem(409, "order_state_conflict");
        let o = app.admin_post(&format!("/admin/orders/{one}/approve"), json!({})).await.expect(200);
        assert_eq!((o["status"].as_str(), o["payment_status"].as_str()), (Some("placed"), Some("captured")));
        assert_eq!(provider.captures(one_attempt).await.unwrap(), 1);
        app.admin_post(&format!("/admin/orders/{one}/approve"), json!({})).await.problem(409, "order_state_conflict");
        app.admin_post(&format!("/admin/orders/{one}/reject"), json!({})).await.problem(409, "order_state_conflict");

        let (two, two_attempt) = &held[1];
        let o = app.admin_post(&format!("/admin/orders/{two}/reject"), json!({})).await.expect(200);
        assert_eq!((o["status"].as_str(), o["payment_status"].as_str()), (Some("canceled"), Some("voided")));
        assert_eq!(provider.status(two_attempt).await.unwrap(), backroom_payments::ChargeStatus::Voided);
        assert_eq!(stock_of(&app, &v).await, (5, 0, 1));
        app.admin_post(&format!("/admin/orders/{two}/approve"), json!({})).await.problem(409, "order_state_conflict");
        app.admin_post("/admin/orders/ord_nope/approve", json!({})).await.problem(404, "not_found");
        assert_eq!(events(&app, "order.canceled").await, 1);
        // Only the approved order was ever placed.
        assert_eq!(events(&app, "order.placed").await, 1);
    }
);

both!(a_refund_made_in_the_providers_dashboard_shows_on_the_order, |app: TestApp| async move {
    let p = app.product("vase", &["VASE-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 5).await;
    let order = order_of(&app, &[(&v, 1)], "d-1", "tok_visa").await;
    let attempt = order["payment"]["id"].as_str().unwrap().to_owned();
    let provider = backroom_payments::TestProvider::new(app.db.clone());
    let backroom_payments::RefundStatus::Succeeded { reference } =
        provider.dashboard_refund(&attempt, Some(1500)).await.unwrap()
    else {
        panic!("the dashboard refund failed");
    };
    let amount = backroom_kernel::Money::new(1500, backroom_kernel::Currency::parse("EUR").unwrap()).unwrap();
    let r = backroom_orders::oms::record_provider_refund(&app.db, &attempt, &reference, amount).await.unwrap();
    assert_eq!((r.status.as_str(), r.amount), ("succeeded", amount));
    // The webhook may come twice: one refund.
    let again = backroom_orders::oms::record_provider_refund(&app.db, &attempt, &reference, amount).await.unwrap();
    assert_eq!(again.id, r.id);
    let o = app.admin_get(&format!("/admin/orders/{}", id(&order))).await.expect(200);
    assert_eq!((o["payment_status"].as_str(), o["refunded_total"].clone()), (Some("partially_refunded"), eur(1500)));
    assert_eq!(o["refunds"].as_array().unwrap().len(), 1);
    assert_eq!(o["refunds"][0]["provider_reference"], reference.as_str());
    assert_eq!(events(&app, "order.refunded").await, 1);
    // What is left to refund through Backroom is what the provider still holds.
    refund(&app, &id(&order), Some("rest"), json!({"amount": eur(3401), "reason": "x"}))
        .await
        .problem(422, "refund_exceeds_captured");
    refund(&app, &id(&order), Some("rest"), json!({"amount": eur(3400), "reason": "x"})).await.expect(201);
});

both!(only_the_orders_role_and_above_act_on_orders, |app: TestApp| async move {
    let p = app.product("bag", &["BAG-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 5).await;
    let order = order_of(&app, &[(&v, 2)], "a-1", "tok_visa").await;
    let oid = id(&order);
    let mut tokens = std::collections::HashMap::new();
    for role in ["orders", "support", "viewer", "editor"] {
        let key = app.admin_post("/admin/api-keys", json!({"name": role, "role": role})).await.expect(201);
        tokens.insert(role, key["token"].as_str().unwrap().to_owned());
    }
    let fulfil = json!({"items": [{"item_id": item(&order, 0), "quantity": 1}]});
    for role in ["support", "viewer", "editor"] {
        let t = &tokens[role];
        for path in ["fulfillments", "cancel", "approve", "reject", "refunds", "returns"] {
            app.as_key(t, Method::POST, &format!("/admin/orders/{oid}/{path}"), Some(fulfil.clone()))
                .await
                .problem(403, "forbidden");
        }
    }
    let t = &tokens["orders"];
    app.as_key(t, Method::POST, &format!("/admin/orders/{oid}/fulfillments"), Some(fulfil)).await.expect(201);
    let r = app
        .send(
            app.client
                .post(app.url(&format!("/admin/orders/{oid}/refunds")))
                .bearer_auth(t)
                .header("Idempotency-Key", "role")
                .json(&json!({"amount": eur(100), "reason": "goodwill"})),
        )
        .await
        .expect(201);
    assert_eq!(r["status"], "succeeded");
});

async fn checkout_with_code(app: &TestApp, v: &str, code: &str, key: &str) -> crate::support::Res {
    let cart = app.cart_with("EUR", &[(v, 1)]).await;
    app.send(app.client.post(app.url(&format!("/store/carts/{cart}/promotions"))).json(&json!({"code": code})))
        .await
        .expect(200);
    app.send(app.checkout_req(&cart, Some(key), "tok_visa")).await
}

async fn uses_of_first_promotion(app: &TestApp) -> Value {
    app.admin_get("/admin/promotions").await.expect(200)["items"][0]["used"].clone()
}

both!(canceling_an_order_gives_its_promotion_use_back, |app: TestApp| async move {
    let p = app.product("mug", &["MUG-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 5).await;
    app.admin_post("/admin/promotions", json!({"code": "ONE", "type": "percentage", "value": 10, "usage_limit": 1}))
        .await
        .expect(201);
    let first = checkout_with_code(&app, &v, "ONE", "p-1").await.expect(201);
    assert_eq!(first["promotions"][0]["code"], "ONE");
    assert_eq!(uses_of_first_promotion(&app).await, 1);
    app.admin_post(&format!("/admin/orders/{}/cancel", id(&first)), json!({})).await.expect(200);
    // The use went back with the cancel: the code serves one more order.
    assert_eq!(uses_of_first_promotion(&app).await, 0);
    let second = checkout_with_code(&app, &v, "ONE", "p-2").await.expect(201);
    assert_eq!(second["promotions"][0]["code"], "ONE");
});
