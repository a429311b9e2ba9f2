//! Product images in the catalog, and what cart and order lines show of their products.

use serde_json::{Value, json};

use crate::both;
use crate::support::TestApp;

fn image(n: usize) -> Value {
    json!({"url": format!("https://images.example.com/tee-{n}.jpg"), "alt": format!("Tee, view {n}")})
}

/// A published product with one EUR-priced variant and these images; answers it.
async fn product_with_images(app: &TestApp, handle: &str, images: Value) -> Value {
    app.admin_post(
        "/admin/products",
        json!({"title": format!("Product {handle}"), "handle": handle, "status": "published", "images": images,
               "variants": [{"sku": format!("{handle}-1"), "prices": [{"amount": 4900, "currency": "EUR"}]}]}),
    )
    .await
    .expect(201)
}

fn urls(product: &Value) -> Vec<&str> {
    product["images"].as_array().unwrap().iter().map(|i| i["url"].as_str().unwrap()).collect()
}

both!(product_images_keep_their_order_and_are_replaced_on_update, |app: TestApp| async move {
    let created =
        product_with_images(&app, "tee", json!([image(3), {"url": "https://images.example.com/tee-1.jpg"}, image(2)]))
            .await;
    assert_eq!(
        created["images"],
        json!([
            {"url": "https://images.example.com/tee-3.jpg", "alt": "Tee, view 3"},
            {"url": "https://images.example.com/tee-1.jpg", "alt": ""},
            {"url": "https://images.example.com/tee-2.jpg", "alt": "Tee, view 2"},
        ]),
        "list order is display order; a missing alt is empty"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(app.admin_get(&format!("/admin/products/{id}")).await.expect(200)["images"], created["images"]);
    let store = app.get("/store/products/tee").await.expect(200);
    assert_eq!(store["images"], created["images"], "the storefront shows them");
    let listed = app.get("/store/products").await.expect(200);
    assert_eq!(listed["items"][0]["images"], created["images"]);

    // A patch without images leaves them; with images replaces them all; [] removes them.
    let p = app.admin_patch(&format!("/admin/products/{id}"), json!({"title": "Tee"})).await.expect(200);
    assert_eq!(p["images"], created["images"]);
    let p =
        app.admin_patch(&format!("/admin/products/{id}"), json!({"images": [image(9), image(8)]})).await.expect(200);
    assert_eq!(urls(&p), ["https://images.example.com/tee-9.jpg", "https://images.example.com/tee-8.jpg"]);
    assert_eq!(urls(&app.get("/store/products/tee").await.expect(200)), urls(&p));
    let p = app.admin_patch(&format!("/admin/products/{id}"), json!({"images": []})).await.expect(200);
    assert_eq!(p["images"], json!([]));
    let empty = app.admin_post("/admin/products", json!({"title": "Bare"})).await.expect(201);
    assert_eq!(empty["images"], json!([]));

    // Each change is a product.changed event, like any other product change.
    let events = backroom_db::outbox::list(&app.db, "product.changed").await.unwrap();
    assert_eq!(events.iter().filter(|e| e.payload.contains(&id)).count(), 4, "create and three patches");

    // Deleting the product takes its images along (the foreign key cascades).
    app.admin_delete(&format!("/admin/products/{id}")).await.expect(204);
});

both!(image_fields_are_checked_and_named, |app: TestApp| async move {
    let long_url = format!("https://images.example.com/{}.jpg", "a".repeat(2048));
    let cases = [
        (json!([image(1), image(2), {"url": "ftp://images.example.com/x.jpg"}]), "images[2].url"),
        (json!([{"url": "/relative/x.jpg"}]), "images[0].url"),
        (json!([{"url": "images.example.com/x.jpg"}]), "images[0].url"),
        (json!([{"url": "https:///x.jpg"}]), "images[0].url"),
        (json!([{"url": "https://images.example.com/a b.jpg"}]), "images[0].url"),
        (json!([{"url": "https://images.example.com/\u{7}.jpg"}]), "images[0].url"),
        (json!([{"url": ""}]), "images[0].url"),
        (json!([{"url": long_url}]), "images[0].url"),
        (json!([image(1), {"url": "https://images.example.com/x.jpg", "alt": "x".repeat(501)}]), "images[1].alt"),
        (json!([{"url": "https://images.example.com/x.jpg", "alt": "Tee\u{202E}gpj.exe"}]), "images[0].alt"),
        (json!([{"url": "https://images.example.com/x.jpg", "alt": "line\nbreak"}]), "images[0].alt"),
        (json!([{"url": "https://images.example.com/x.jpg", "alt": "\u{200B}"}]), "images[0].alt"),
        (json!((0..51).map(image).collect::<Vec<_>>()), "images"),
        (json!([{"url": "https://images.example.com/x.jpg", "position": 1}]), "images[0]"),
        (json!([{"alt": "no url"}]), "images[0].url"),
    ];
    for (images, field) in &cases {
        let body = json!({"title": "Tee", "images": images});
        let problem = app.admin_post("/admin/products", body).await.problem(422, "validation_failed");
        let fields: Vec<&str> =
            problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert!(fields.iter().any(|f| f.starts_with(field)), "expected {field}, got {problem}");
    }
    // Exactly at the limits is fine.
    let at_limits =
        json!([{"url": format!("https://i.example.com/{}", "a".repeat(2048 - 22)), "alt": "x".repeat(500)}]);
    let fifty: Vec<Value> = (0..50).map(image).collect();
    app.admin_post("/admin/products", json!({"title": "Edge", "images": at_limits})).await.expect(201);
    let p = app.admin_post("/admin/products", json!({"title": "Many", "images": fifty})).await.expect(201);
    assert_eq!(p["images"].as_array().unwrap().len(), 50);
    assert_eq!(app.product_count().await, 2, "nothing is written after a refusal");

    // The same checks on update, where a refusal changes nothing.
    let id = p["id"].as_str().unwrap();
    let problem = app
        .admin_patch(&format!("/admin/products/{id}"), json!({"images": [image(1), {"url": "mailto:a@b.co"}]}))
        .await
        .problem(422, "validation_failed");
    assert_eq!(problem["errors"][0]["field"], "images[1].url", "{problem}");
    assert_eq!(app.admin_get(&format!("/admin/products/{id}")).await.expect(200)["images"], p["images"]);
});

both!(cart_lines_show_their_product, |app: TestApp| async move {
    let tee = product_with_images(&app, "tee", json!([image(1), image(2)])).await;
    let cap = product_with_images(&app, "cap", json!([])).await;
    let (t, c) = (tee["variants"][0]["id"].as_str().unwrap(), cap["variants"][0]["id"].as_str().unwrap());
    let cart = app.cart_with("EUR", &[(t, 1), (c, 2)]).await;
    let got = app.get(&format!("/store/carts/{cart}")).await.expect(200);
    let tee_line = &got["items"][0];
    assert_eq!(tee_line["product_id"], tee["id"]);
    assert_eq!(tee_line["product_title"], "Product tee");
    assert_eq!(tee_line["product_handle"], "tee");
    assert_eq!(tee_line["thumbnail"], "https://images.example.com/tee-1.jpg");
    assert_eq!(tee_line["title"], "tee-1", "the variant title stays");
    assert_eq!(got["items"][1]["product_title"], "Product cap");
    assert_eq!(got["items"][1]["thumbnail"], Value::Null, "no image, no thumbnail");

    // A cart shows the catalog as it is now.
    let tee_id = tee["id"].as_str().unwrap();
    app.admin_patch(&format!("/admin/products/{tee_id}"), json!({"title": "Linen tee", "images": [image(7)]}))
        .await
        .expect(200);
    let got = app.get(&format!("/store/carts/{cart}")).await.expect(200);
    assert_eq!(got["items"][0]["product_title"], "Linen tee");
    assert_eq!(got["items"][0]["thumbnail"], "https://images.example.com/tee-7.jpg");

    // A line whose variant is gone keeps its own fields; the product ones are null.
    app.admin_delete(&format!("/admin/variants/{c}")).await.expect(204);
    let got = app.get(&format!("/store/carts/{cart}")).await.expect(200);
    let gone = &got["items"][1];
    assert_eq!(gone["sku"], "cap-1");
    for k in ["product_id", "product_title", "product_handle", "thumbnail"] {
        assert_eq!(gone[k], Value::Null, "{k}");
    }
});

both!(orders_keep_the_product_as_it_was_at_checkout, |app: TestApp| async move {
    let tee = product_with_images(&app, "tee", json!([image(1), image(2)])).await;
    let (tee_id, v) = (tee["id"].as_str().unwrap(), tee["variants"][0]["id"].as_str().unwrap());
    app.stock(v, 5).await;
    let cart = app.cart_with("EUR", &[(v, 2)]).await;
    let order = app.send(app.checkout_req(&cart, Some("k-1"), "tok_visa")).await.expect(201);
    let line = order["items"][0].clone();
    assert_eq!(line["product_id"], tee["id"]);
    assert_eq!(line["product_title"], "Product tee");
    assert_eq!(line["product_handle"], "tee");
    assert_eq!(line["thumbnail"], "https://images.example.com/tee-1.jpg");

    // The product is renamed, moved to another handle and loses its images: the order does not.
    app.admin_patch(
        &format!("/admin/products/{tee_id}"),
        json!({"title": "Renamed", "handle": "renamed", "images": []}),
    )
    .await
    .expect(200);
    let order_id = order["id"].as_str().unwrap();
    let again = app.admin_get(&format!("/admin/orders/{order_id}")).await.expect(200);
    assert_eq!(again["items"][0], line);
    let listed = app.admin_get("/admin/orders").await.expect(200);
    assert_eq!(listed["items"][0]["items"][0], line);
    // The replayed checkout answer is the same snapshot.
    let replay = app.send(app.checkout_req(&cart, Some("k-1"), "tok_visa")).await.expect(201);
    assert_eq!(replay["items"][0], line);

    // An order from before lines kept their product answers null for those fields.
    let sql = "UPDATE order_lines SET product_id = NULL, product_title = NULL, product_handle = NULL, thumbnail = NULL";
    match app.db.pools() {
        backroom_db::Pools::Sqlite { writer, .. } => {
            sqlx::query(sql).execute(writer).await.unwrap();
        }
        backroom_db::Pools::Postgres(pool) => {
            sqlx::query(sql).execute(pool).await.unwrap();
        }
    }
    let old = app.admin_get(&format!("/admin/orders/{order_id}")).await.expect(200);
    for k in ["product_id", "product_title", "product_handle", "thumbnail"] {
        assert_eq!(old["items"][0][k], Value::Null, "{k}");
    }
    assert_eq!(old["items"][0]["title"], line["title"]);
});
