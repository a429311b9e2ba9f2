use serde_json::json;

use crate::both;
use crate::support::TestApp;

both!(carts_hold_lines_and_money_totals, |app: TestApp| async move {
    let p = app.product("shirt", &["SH-S", "SH-M"]).await;
    let (s, m) = (p["variants"][0]["id"].as_str().unwrap(), p["variants"][1]["id"].as_str().unwrap());
    app.stock(s, 5).await;
    let cart = app.send(app.client.post(app.url("/store/carts")).json(&json!({"currency": "EUR"}))).await.expect(201);
    assert_eq!(cart["status"], "open");
    assert_eq!(cart["items"], json!([]));
    assert_eq!(cart["total"], json!({"amount": 0, "currency": "EUR"}));
    let id = cart["id"].as_str().unwrap();
    assert!(id.starts_with("cart_"));
    let items = format!("/store/carts/{id}/items");
    let post = |body: serde_json::Value| app.send(app.client.post(app.url(&items)).json(&body));
    post(json!({"variant_id": s, "quantity": 2})).await.expect(200);
    let c = post(json!({"variant_id": s, "quantity": 1})).await.expect(200);
    assert_eq!(c["items"].as_array().unwrap().len(), 1, "the same variant raises its quantity");
    assert_eq!(c["items"][0]["quantity"], 3);
    assert_eq!(c["items"][0]["unit_price"], json!({"amount": 4900, "currency": "EUR"}));
    assert_eq!(c["items"][0]["total"], json!({"amount": 14700, "currency": "EUR"}));
    assert_eq!(c["items"][0]["sku"], "SH-S");
    let c = post(json!({"variant_id": m, "quantity": 1})).await.expect(200);
    for k in ["subtotal", "total"] {
        assert_eq!(c[k], json!({"amount": 19600, "currency": "EUR"}), "{k}");
    }
    for k in ["tax_total", "shipping_total"] {
        assert_eq!(c[k], json!({"amount": 0, "currency": "EUR"}), "{k}");
    }

    // More than is available; bad quantities; unknown or unpriced variants.
    let r = post(json!({"variant_id": s, "quantity": 3})).await.problem(409, "insufficient_stock");
    assert_eq!(r["items"], json!([{"variant_id": s, "requested": 6, "available": 5}]));
    post(json!({"variant_id": s, "quantity": 0})).await.problem(422, "validation_failed");
    post(json!({"variant_id": m, "quantity": 1001})).await.problem(422, "validation_failed");
    post(json!({"variant_id": m, "quantity": 1000})).await.problem(422, "validation_failed");
    post(json!({"variant_id": "var_nope", "quantity": 1})).await.problem(422, "validation_failed");
    let usd = app.send(app.client.post(app.url("/store/carts")).json(&json!({"currency": "USD"}))).await.expect(201);
    let usd_items = format!("/store/carts/{}/items", usd["id"].as_str().unwrap());
    app.send(app.client.post(app.url(&usd_items)).json(&json!({"variant_id": s, "quantity": 1})))
        .await
        .problem(422, "no_price");

    // Change and remove lines.
    let item = c["items"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/store/carts/{id}/items/{item}");
    let c = app.send(app.client.patch(app.url(&path)).json(&json!({"quantity": 5}))).await.expect(200);
    assert_eq!(c["items"][0]["quantity"], 5);
    app.send(app.client.patch(app.url(&path)).json(&json!({"quantity": 6}))).await.problem(409, "insufficient_stock");
    app.send(app.client.patch(app.url(&path)).json(&json!({"quantity": 0}))).await.problem(422, "validation_failed");
    let c = app.send(app.client.delete(app.url(&path))).await.expect(200);
    assert_eq!(c["items"].as_array().unwrap().len(), 1);
    app.send(app.client.delete(app.url(&path))).await.problem(404, "not_found");
    let got = app.get(&format!("/store/carts/{id}")).await.expect(200);
    assert_eq!(got, c);

    app.get("/store/carts/cart_nope").await.problem(404, "not_found");
    app.send(app.client.post(app.url("/store/carts")).json(&json!({"currency": "EURO"})))
        .await
        .problem(422, "validation_failed");
    app.send(app.client.post(app.url("/store/carts")).json(&json!({"currency": "XYZ"})))
        .await
        .problem(422, "validation_failed");
    app.send(app.client.post(app.url("/store/carts/cart_nope/items")).json(&json!({"variant_id": s, "quantity": 1})))
        .await
        .problem(404, "not_found");
});

both!(unpublished_products_cannot_be_added, |app: TestApp| async move {
    let p = app.admin_post(
        "/admin/products",
        json!({"title": "Secret", "handle": "secret", "variants": [{"sku": "SEC-1", "prices": [{"amount": 100, "currency": "EUR"}]}]}),
    )
    .await
    .expect(201);
    let v = p["variants"][0]["id"].as_str().unwrap();
    let cart = app.send(app.client.post(app.url("/store/carts")).json(&json!({"currency": "EUR"}))).await.expect(201);
    app.send(
        app.client
            .post(app.url(&format!("/store/carts/{}/items", cart["id"].as_str().unwrap())))
            .json(&json!({"variant_id": v, "quantity": 1})),
    )
    .await
    .problem(422, "validation_failed");
});
