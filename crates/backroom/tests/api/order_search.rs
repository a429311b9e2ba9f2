//! Staff find orders by the shopper's e-mail and by order number.

use serde_json::Value;

use crate::both;
use crate::support::{TestApp, checkout_body};

/// Places an order for one unit of `variant` by `email`; answers it.
async fn order_by(app: &TestApp, variant: &str, email: &str, key: &str) -> Value {
    let cart = app.cart_with("EUR", &[(variant, 1)]).await;
    let mut body = checkout_body("tok_visa");
    body["email"] = email.into();
    let req = app.client.post(app.url(&format!("/store/carts/{cart}/checkout"))).header("Idempotency-Key", key);
    app.send(req.json(&body)).await.expect(201)
}

fn ids(page: &Value) -> Vec<&str> {
    page["items"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect()
}

fn id(order: &Value) -> &str {
    order["id"].as_str().unwrap()
}

both!(admin_orders_are_found_by_email_and_number, |app: TestApp| async move {
    let p = app.product("tee", &["TEE-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 10).await;
    let ana1 = order_by(&app, &v, "Ana.Silva@Example.com", "k-1").await;
    let bea = order_by(&app, &v, "bea@example.com", "k-2").await;
    let ana2 = order_by(&app, &v, "ana.silva@example.com", "k-3").await;
    let other = order_by(&app, &v, "ana.silva@example.org", "k-4").await;
    assert_eq!(ana1["email"], "Ana.Silva@Example.com", "the address is kept as given");

    // Whole address, any letter case, newest first; other shoppers' orders are not returned.
    for q in ["ana.silva@example.com", "ANA.SILVA@EXAMPLE.COM", "Ana.Silva@Example.com", "%20ana.silva@example.com%20"]
    {
        let page = app.admin_get(&format!("/admin/orders?email={q}")).await.expect(200);
        assert_eq!(ids(&page), [id(&ana2), id(&ana1)], "{q}");
    }
    let page = app.admin_get("/admin/orders?email=bea@example.com").await.expect(200);
    assert_eq!(ids(&page), [id(&bea)]);
    let page = app.admin_get("/admin/orders?email=ana.silva@example.org").await.expect(200);
    assert_eq!(ids(&page), [id(&other)]);
    for q in ["ana@example.com", "silva@example.com", "ana.silva@example"] {
        assert_eq!(
            app.admin_get(&format!("/admin/orders?email={q}")).await.expect(200)["items"],
            serde_json::json!([])
        );
    }
    // With the other filters and pagination.
    let page = app.admin_get("/admin/orders?email=ana.silva@example.com&limit=1").await.expect(200);
    assert_eq!(ids(&page), [id(&ana2)]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page =
        app.admin_get(&format!("/admin/orders?email=ana.silva@example.com&limit=1&cursor={cursor}")).await.expect(200);
    assert_eq!(ids(&page), [id(&ana1)]);
    assert_eq!(page["next_cursor"], Value::Null);
    let page = app.admin_get("/admin/orders?email=ana.silva@example.com&status=placed").await.expect(200);
    assert_eq!(ids(&page).len(), 2);
    let page = app.admin_get("/admin/orders?email=ana.silva@example.com&status=canceled").await.expect(200);
    assert_eq!(page["items"], serde_json::json!([]));

    // By number, with or without the `#`.
    let number = bea["number"].as_str().unwrap();
    let digits = number.trim_start_matches('#');
    for q in [digits.to_owned(), format!("%23{digits}")] {
        let page = app.admin_get(&format!("/admin/orders?number={q}")).await.expect(200);
        assert_eq!(ids(&page), [id(&bea)], "{q}");
    }
    assert_eq!(app.admin_get("/admin/orders?number=999999").await.expect(200)["items"], serde_json::json!([]));
    let page = app.admin_get(&format!("/admin/orders?number={digits}&email=bea@example.com")).await.expect(200);
    assert_eq!(ids(&page), [id(&bea)]);
    let page = app.admin_get(&format!("/admin/orders?number={digits}&email=ana.silva@example.com")).await.expect(200);
    assert_eq!(page["items"], serde_json::json!([]), "both filters must hold");
});

both!(admin_order_filters_refuse_bad_values, |app: TestApp| async move {
    for (query, field) in [
        ("email=", "email"),
        ("email=%20%20", "email"),
        ("email=not-an-address", "email"),
        ("email=a%20b@example.com", "email"),
        ("number=", "number"),
        ("number=abc", "number"),
        ("number=12x", "number"),
        ("number=-3", "number"),
        ("number=0", "number"),
        ("number=99999999999999999999999", "number"),
    ] {
        let problem = app.admin_get(&format!("/admin/orders?{query}")).await.problem(422, "validation_failed");
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
    let problem = app.admin_get("/admin/orders?email=&number=x").await.problem(422, "validation_failed");
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["email", "number"]);
    app.admin_get("/admin/orders?status=bogus&email=a@b.co").await.problem(422, "validation_failed");
});
