use reqwest::Method;
use serde_json::json;

use crate::both;
use crate::support::TestApp;

both!(admin_routes_need_a_key_and_the_right_role, |app: TestApp| async move {
    let r = app.send(app.client.get(app.url("/admin/products"))).await;
    r.problem(401, "unauthenticated");
    app.as_key("bk_wrong", Method::GET, "/admin/products", None).await.problem(401, "unauthenticated");
    let r = app.send(app.client.get(app.url("/admin/products")).header("authorization", "Basic abc")).await;
    r.problem(401, "unauthenticated");

    let viewer = app.admin_post("/admin/api-keys", json!({"name": "reporting", "role": "viewer"})).await.expect(201);
    let vtoken = viewer["token"].as_str().unwrap().to_owned();
    assert!(vtoken.starts_with("bk_"));
    assert_eq!(viewer["role"], "viewer");
    app.as_key(&vtoken, Method::GET, "/admin/products", None).await.expect(200);
    app.as_key(&vtoken, Method::POST, "/admin/products", Some(json!({"title": "Nope"})))
        .await
        .problem(403, "forbidden");
    app.as_key(&vtoken, Method::GET, "/admin/api-keys", None).await.problem(403, "forbidden");
    assert_eq!(app.product_count().await, 0);

    let editor = app.admin_post("/admin/api-keys", json!({"name": "pim", "role": "editor"})).await.expect(201);
    let etoken = editor["token"].as_str().unwrap().to_owned();
    app.as_key(&etoken, Method::POST, "/admin/products", Some(json!({"title": "Yes"}))).await.expect(201);
    app.as_key(&etoken, Method::POST, "/admin/api-keys", Some(json!({"name": "x", "role": "owner"})))
        .await
        .problem(403, "forbidden");

    // Keys are listed without secrets, and a revoked key stops working.
    let keys = app.admin_get("/admin/api-keys").await.expect(200);
    let text = keys.to_string();
    assert!(!text.contains(&vtoken) && !text.contains("token_hash"), "{text}");
    let vid = viewer["id"].as_str().unwrap();
    app.admin_delete(&format!("/admin/api-keys/{vid}")).await.expect(204);
    app.as_key(&vtoken, Method::GET, "/admin/products", None).await.problem(401, "unauthenticated");
    app.admin_delete(&format!("/admin/api-keys/{vid}")).await.problem(404, "not_found");
    app.admin_post("/admin/api-keys", json!({"name": "x", "role": "god"})).await.problem(422, "validation_failed");
});

both!(storefront_reads_are_public, |app: TestApp| async move {
    app.get("/store/products").await.expect(200);
    app.get("/store/categories").await.expect(200);
});
