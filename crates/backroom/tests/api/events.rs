//! The event catalog (`GET /admin/event-types`, docs/events.md): every topic with its version
//! and the JSON Schema of its deliveries' `data`; every event of an order's life, a canceled
//! order, a product change and a customer's registration and erasure validates against the
//! schema the catalog publishes.
//!
//! Each `data` is rendered by the same function the webhook dispatcher sends
//! (`Webhooks::data`), from the events the outbox holds.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::support::TestApp;

async fn catalog(app: &TestApp) -> BTreeMap<String, Value> {
    let types = app.admin_get("/admin/event-types").await.expect(200);
    types.as_array().unwrap().iter().map(|t| (t["type"].as_str().unwrap().to_owned(), t.clone())).collect()
}

both!(the_catalog_lists_every_topic_with_its_version, |app: TestApp| async move {
    let types = catalog(&app).await;
    assert_eq!(types.len(), backroom_db::outbox::TOPICS.len());
    for (topic, version) in backroom_db::outbox::TOPICS {
        let t = &types[topic];
        assert_eq!(t["version"], version, "{topic}");
        assert_eq!(t["schema"]["$schema"], "https://json-schema.org/draft/2020-12/schema", "{topic}");
        jsonschema::validator_for(&t["schema"]).unwrap_or_else(|e| panic!("{topic}: {e}"));
    }
    assert_eq!(types["order.placed"]["schema"]["title"], "Order");
    // Guarded like the webhooks: a viewer may not, an admin may.
    for (role, status) in [("viewer", 403), ("support", 403), ("admin", 200)] {
        let key = app.admin_post("/admin/api-keys", json!({"name": role, "role": role})).await.expect(201);
        let r = app.as_key(key["token"].as_str().unwrap(), Method::GET, "/admin/event-types", None).await;
        assert_eq!(r.status, status, "{role}: {}", r.body);
    }
});

both!(every_event_of_an_orders_life_validates_against_its_schema, |app: TestApp| async move {
    let types = catalog(&app).await;
    let p = app.product("evt", &["EVT-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 10).await;
    app.admin_patch(&format!("/admin/products/{}", p["id"].as_str().unwrap()), json!({"title": "Evented"}))
        .await
        .expect(200);

    // Checkout, fulfil, ship, deliver, refund, return.
    let cart = app.cart_with("EUR", &[(&v, 2)]).await;
    let order = app.send(app.checkout_req(&cart, Some("evt-1"), "tok_visa")).await.expect(201);
    let oid = order["id"].as_str().unwrap().to_owned();
    let admin = app.admin_get(&format!("/admin/orders/{oid}")).await.expect(200);
    let item = admin["items"][0]["id"].as_str().unwrap().to_owned();
    let f = app
        .admin_post(&format!("/admin/orders/{oid}/fulfillments"), json!({"items": [{"item_id": item, "quantity": 2}]}))
        .await
        .expect(201);
    let fp = format!("/admin/orders/{oid}/fulfillments/{}", f["id"].as_str().unwrap());
    app.admin_post(&format!("{fp}/shipments"), json!({"carrier": "DHL", "tracking_number": "JD1"})).await.expect(201);
    app.admin_post(&format!("{fp}/delivered"), json!({})).await.expect(200);
    app.send(
        app.client
            .post(app.url(&format!("/admin/orders/{oid}/refunds")))
            .bearer_auth(crate::support::ADMIN_TOKEN)
            .header("Idempotency-Key", "evt-r")
            .json(&json!({"amount": {"amount": 100, "currency": "EUR"}, "reason": "goodwill"})),
    )
    .await
    .expect(201);
    app.admin_post(
        &format!("/admin/orders/{oid}/returns"),
        json!({"items": [{"item_id": item, "quantity": 1}], "restock": true, "refund": false}),
    )
    .await
    .expect(201);

    // A canceled order.
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    let canceled = app.send(app.checkout_req(&cart, Some("evt-2"), "tok_visa")).await.expect(201);
    app.admin_post(&format!("/admin/orders/{}/cancel", canceled["id"].as_str().unwrap()), json!({})).await.expect(200);

    // A customer registers and is erased.
    let (customer, _) = crate::access_matrix::customer(&app, "evented@example.com").await;
    app.admin_post(&format!("/admin/customers/{customer}/erase"), json!({})).await.expect(200);

    let mut seen = Vec::new();
    for (topic, _) in backroom_db::outbox::TOPICS {
        let schema = &types[topic]["schema"];
        let validator = jsonschema::validator_for(schema).unwrap();
        for e in backroom_db::outbox::list(&app.db, topic).await.unwrap() {
            let data = app.webhooks.data(&e.topic, &e.payload).await.unwrap();
            let errors: Vec<String> =
                validator.iter_errors(&data).map(|e| format!("{}: {e}", e.instance_path())).collect();
            assert!(errors.is_empty(), "{topic} {data}: {errors:?}");
            // Each required field is required: without it, the data is refused.
            for field in schema["required"].as_array().into_iter().flatten() {
                let mut missing = data.clone();
                missing.as_object_mut().unwrap().remove(field.as_str().unwrap());
                assert!(!validator.is_valid(&missing), "{topic} accepts data without {field}");
            }
            seen.push(topic);
        }
    }
    seen.dedup();
    for topic in [
        "product.changed",
        "stock.changed",
        "order.placed",
        "order.fulfilled",
        "order.shipped",
        "order.delivered",
        "order.refunded",
        "return.received",
        "order.canceled",
        "customer.created",
        "customer.erased",
    ] {
        assert!(seen.contains(&topic), "no {topic} event was checked (checked: {seen:?})");
    }
});
