use serde_json::json;

use crate::both;
use crate::support::{ADMIN_TOKEN, TestApp};

both!(every_error_is_problem_json, |app: TestApp| async move {
    let post = |body: &'static str, ct: &'static str| {
        app.client.post(app.url("/admin/products")).bearer_auth(ADMIN_TOKEN).header("content-type", ct).body(body)
    };
    app.send(post("{\"title\": ", "application/json")).await.problem(400, "malformed_json");
    app.send(post("[1, 2", "application/json")).await.problem(400, "malformed_json");
    app.send(post("{\"title\": \"x\"}", "text/plain")).await.problem(415, "unsupported_media_type");
    app.send(app.client.post(app.url("/admin/products")).bearer_auth(ADMIN_TOKEN).body("{}"))
        .await
        .problem(415, "unsupported_media_type");
    app.send(post("{\"title\": \"x\", \"sneaky\": 1}", "application/json")).await.problem(422, "validation_failed");
    app.send(post("{}", "application/json")).await.problem(422, "validation_failed");
    app.send(post("[]", "application/json")).await.problem(422, "validation_failed");
    // The charset parameter is fine.
    app.send(post("{\"title\": \"Charset\"}", "application/json; charset=utf-8")).await.expect(201);

    let big = format!("{{\"title\": \"x\", \"description\": \"{}\"}}", "a".repeat(1024 * 1024 + 10));
    let r = app
        .send(
            app.client
                .post(app.url("/admin/products"))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(big),
        )
        .await;
    r.problem(413, "payload_too_large");

    app.get("/no/such/route").await.problem(404, "not_found");
    app.get("/store/nothing").await.problem(404, "not_found");
    let r = app.send(app.client.delete(app.url("/store/products"))).await;
    assert!(r.headers.get("allow").is_some(), "405 keeps the Allow header");
    r.problem(405, "method_not_allowed");
    app.send(app.client.put(app.url("/admin/products")).bearer_auth(ADMIN_TOKEN).json(&json!({})))
        .await
        .problem(405, "method_not_allowed");
    assert_eq!(app.product_count().await, 1);
});

both!(problem_bodies_reveal_no_internals, |app: TestApp| async move {
    app.product("x", &["X-1"]).await;
    let r = app.admin_post("/admin/products", json!({"title": "x", "handle": "x"})).await.problem(409, "conflict");
    let text = r.to_string().to_lowercase();
    for leak in ["sqlite", "postgres", "constraint", "select", "insert", "duplicate key"] {
        assert!(!text.contains(leak), "{leak} leaked: {text}");
    }
});
