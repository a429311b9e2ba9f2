//! `POST /admin/stock/batch`: stock sync in from an ERP, idempotent by key, per-row errors.

use serde_json::{Value, json};

use crate::both;
use crate::support::{Res, TestApp};

async fn batch(app: &TestApp, key: Option<&str>, body: &Value) -> Res {
    let mut req = app.client.post(app.url("/admin/stock/batch")).bearer_auth(crate::support::ADMIN_TOKEN).json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    app.send(req).await
}

async fn ledger_len(app: &TestApp, variant: &str) -> usize {
    let l = app.admin_get(&format!("/admin/variants/{variant}/stock/adjustments?limit=100")).await.expect(200);
    l["items"].as_array().unwrap().len()
}

both!(good_rows_apply_bad_rows_are_reported_and_a_replay_changes_nothing, |app: TestApp| async move {
    let p = app.product("erp", &["ERP-A", "ERP-B", "ERP-C"]).await;
    let id = |i: usize| p["variants"][i]["id"].as_str().unwrap().to_owned();
    let (a, b, c) = (id(0), id(1), id(2));
    let wh = app.admin_post("/admin/stock-locations", json!({"name": "ERP warehouse"})).await.expect(201);
    let wh = wh["id"].as_str().unwrap().to_owned();
    // Three units of C belong to an order: the ERP cannot count them away.
    app.stock(&c, 5).await;
    let cart = app.cart_with("EUR", &[(&c, 3)]).await;
    app.send(app.checkout_req(&cart, Some("erp-order"), "tok_visa")).await.expect(201);

    let body = json!({"items": [
        {"sku": "ERP-A", "on_hand": 10},
        {"sku": "ERP-B", "location_id": wh, "on_hand": 5},
        {"sku": "ERP-NOPE", "on_hand": 1},
        {"sku": "ERP-A", "location_id": "loc_default", "on_hand": 11},
        {"sku": "ERP-C", "on_hand": 2},
        {"sku": "ERP-B", "location_id": "loc_nowhere", "on_hand": 5},
        {"sku": "ERP-B", "on_hand": -1},
        {"sku": "ERP-C", "location_id": wh, "on_hand": 0},
    ]});
    let r = batch(&app, Some("sync-1"), &body).await.expect(200);
    assert_eq!(r["updated"], 3, "{r}");
    let errors: Vec<(u64, &str, &str)> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["sku"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        vec![
            (2, "ERP-NOPE", "not_found"),
            (3, "ERP-A", "validation_failed"),
            (4, "ERP-C", "stock_below_committed"),
            (5, "ERP-B", "validation_failed"),
            (6, "ERP-B", "validation_failed"),
        ]
    );
    assert!(r["errors"][1]["message"].as_str().unwrap().contains("row 0"), "{r}");

    let stock = |v: String| {
        let app = &app;
        async move { app.admin_get(&format!("/admin/variants/{v}/stock")).await.expect(200) }
    };
    assert_eq!(stock(a.clone()).await["on_hand"], 10);
    let sb = stock(b.clone()).await;
    assert_eq!(sb["on_hand"], 5);
    assert_eq!(sb["locations"][0]["location_id"], wh.as_str());
    let sc = stock(c.clone()).await;
    assert_eq!((sc["on_hand"].as_i64(), sc["allocated"].as_i64()), (Some(5), Some(3)), "{sc}");
    // C at the warehouse is tracked now (a row with 0 on hand).
    assert_eq!(sc["locations"].as_array().unwrap().len(), 2, "{sc}");
    let ledger = app.admin_get(&format!("/admin/variants/{a}/stock/adjustments")).await.expect(200);
    assert_eq!(ledger["items"][0]["reason"], "stock_batch");
    assert_eq!(ledger["items"][0]["on_hand_delta"], 10);
    // The storefront sees the new count at once.
    let product = app.get("/store/products/erp").await.expect(200);
    assert_eq!(product["variants"][0]["available"], 10);

    // The same key and body: the first answer again, nothing applied twice.
    let before = ledger_len(&app, &a).await;
    let again = batch(&app, Some("sync-1"), &body).await;
    assert_eq!(again.headers.get("idempotency-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    assert_eq!(again.expect(200), r);
    assert_eq!(ledger_len(&app, &a).await, before);
    // The same key with another body is refused; a count that is already so is applied
    // without a ledger line.
    let changed = json!({"items": [{"sku": "ERP-A", "on_hand": 99}]});
    batch(&app, Some("sync-1"), &changed).await.problem(422, "idempotency_key_reused");
    assert_eq!(stock(a.clone()).await["on_hand"], 10);
    let same = batch(&app, Some("sync-2"), &json!({"items": [{"sku": "ERP-A", "on_hand": 10}]})).await.expect(200);
    assert_eq!(same, json!({"updated": 1, "errors": []}));
    assert_eq!(ledger_len(&app, &a).await, before);
});

both!(bad_requests_are_refused_whole, |app: TestApp| async move {
    app.product("erp2", &["ERP2-A"]).await;
    let one = json!({"items": [{"sku": "ERP2-A", "on_hand": 1}]});
    batch(&app, None, &one).await.problem(400, "idempotency_key_required");
    batch(&app, Some(&"k".repeat(256)), &one).await.problem(400, "idempotency_key_required");
    let r = batch(&app, Some("k1"), &json!({"items": []})).await.problem(422, "validation_failed");
    assert_eq!(r["errors"][0]["field"], "items");
    batch(&app, Some("k2"), &json!({"items": [{"sku": "ERP2-A", "on_hand": "7"}]}))
        .await
        .problem(422, "validation_failed");
    batch(&app, Some("k3"), &json!({"items": [{"sku": "ERP2-A", "on_hand": 1, "price": 3}]}))
        .await
        .problem(422, "validation_failed");
    let too_many: Vec<Value> = (0..10_001).map(|_| json!({"sku": "ERP2-A", "on_hand": 1})).collect();
    batch(&app, Some("k4"), &json!({"items": too_many})).await.problem(422, "validation_failed");
    // A refused request claimed nothing: its key still works.
    batch(&app, Some("k1"), &one).await.expect(200);
    // A viewer may not change stock.
    let viewer = app.admin_post("/admin/api-keys", json!({"name": "v", "role": "viewer"})).await.expect(201);
    let token = viewer["token"].as_str().unwrap();
    let r = app
        .send(
            app.client
                .post(app.url("/admin/stock/batch"))
                .bearer_auth(token)
                .header("Idempotency-Key", "v1")
                .json(&one),
        )
        .await;
    r.problem(403, "forbidden");
});

both!(ten_thousand_rows_are_one_batch, |app: TestApp| async move {
    // 2,000 variants at five locations.
    let mut skus = Vec::new();
    for p in 0..20 {
        let variants: Vec<Value> = (0..100)
            .map(|v| {
                let sku = format!("BULK-{p:02}-{v:03}");
                skus.push(sku.clone());
                json!({"sku": sku, "prices": [{"amount": 100, "currency": "EUR"}]})
            })
            .collect();
        app.admin_post(
            "/admin/products",
            json!({"title": format!("Bulk {p}"), "handle": format!("bulk-{p}"), "status": "published", "variants": variants}),
        )
        .await
        .expect(201);
    }
    let mut locations = vec!["loc_default".to_owned()];
    for i in 0..4 {
        let l = app.admin_post("/admin/stock-locations", json!({"name": format!("Store {i}")})).await.expect(201);
        locations.push(l["id"].as_str().unwrap().to_owned());
    }
    let rows: Vec<Value> = skus
        .iter()
        .enumerate()
        .flat_map(|(i, sku)| {
            locations.iter().enumerate().map(move |(l, loc)| json!({"sku": sku, "location_id": loc, "on_hand": i + l}))
        })
        .collect();
    assert_eq!(rows.len(), 10_000);
    let r = batch(&app, Some("bulk"), &json!({"items": rows})).await.expect(200);
    assert_eq!(r, json!({"updated": 10_000, "errors": []}));
    let product = app.get("/store/products/bulk-19").await.expect(200);
    let last = product["variants"][99]["id"].as_str().unwrap();
    let s = app.admin_get(&format!("/admin/variants/{last}/stock")).await.expect(200);
    // The last SKU is row 1999: 1999 + 2000 + 2001 + 2002 + 2003 units.
    assert_eq!(s["on_hand"], 1999 * 5 + 10);
    assert_eq!(s["locations"].as_array().unwrap().len(), 5);
});

both!(one_key_sent_eight_times_at_once_applies_once, |app: TestApp| async move {
    let p = app.product("erp3", &["ERP3-A"]).await;
    let a = p["variants"][0]["id"].as_str().unwrap().to_owned();
    let body = json!({"items": [{"sku": "ERP3-A", "on_hand": 42}]});
    let answers = futures_util::future::join_all((0..8).map(|_| batch(&app, Some("same"), &body))).await;
    let mut replayed = 0;
    for r in answers {
        replayed += usize::from(r.headers.contains_key("idempotency-replayed"));
        assert_eq!(r.expect(200), json!({"updated": 1, "errors": []}));
    }
    assert_eq!(replayed, 7);
    assert_eq!(ledger_len(&app, &a).await, 1);
    assert_eq!(app.admin_get(&format!("/admin/variants/{a}/stock")).await.expect(200)["on_hand"], 42);
});
