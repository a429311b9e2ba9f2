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

/// The path of an admin route with each `{param}` filled in.
fn concrete(path: &str) -> String {
    path.split('/').map(|seg| if seg.starts_with('{') { "x_nope" } else { seg }).collect::<Vec<_>>().join("/")
}

// Every admin route, straight from the access table: `401` with `WWW-Authenticate: Bearer`
// without a key, and for a role that lacks the route's permission `403` whatever the body
// holds (malformed, the wrong shape, a card number), before any body is read.
both!(every_admin_route_checks_the_key_and_role_before_the_body, |app: TestApp| async move {
    let viewer = app.admin_post("/admin/api-keys", json!({"name": "reporting", "role": "viewer"})).await.expect(201);
    let vtoken = viewer["token"].as_str().unwrap().to_owned();
    let bodies = ["{", "[1, 2", r#"{"sneaky": true}"#, r#"{"title": "4111 1111 1111 1111"}"#, ""];
    let mut checked = 0;
    let access = backroom_api::routes::all().into_parts().access;
    for route in access.routes() {
        let path = concrete(&route.path);
        let method = Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
        for auth in [None, Some("Bearer bk_unknown"), Some("Basic abc")] {
            let mut req = app.client.request(method.clone(), app.url(&path));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = app.send(req.header("content-type", "application/json").body("{")).await;
            assert_eq!(r.headers["www-authenticate"], "Bearer", "{method} {path}");
            r.problem(401, "unauthenticated");
        }
        if backroom_auth::Role::Viewer.allows(route.permission) {
            continue;
        }
        for body in bodies {
            let req = app.client.request(method.clone(), app.url(&path)).bearer_auth(&vtoken);
            let r = app.send(req.header("content-type", "application/json").body(body)).await;
            assert_eq!(r.status, 403, "{method} {path} with {body:?}: {}", r.body);
            r.problem(403, "forbidden");
            checked += 1;
        }
    }
    assert!(checked >= 60, "{checked} refusals checked");
    assert_eq!(app.product_count().await, 0);
    // A method the table does not list for a path is 405, after the key is checked.
    let r = app.send(app.client.put(app.url("/admin/products")).bearer_auth(&vtoken)).await;
    assert_eq!(r.headers["allow"], "GET,POST,HEAD");
    r.problem(405, "method_not_allowed");
    app.send(app.client.put(app.url("/admin/products"))).await.problem(401, "unauthenticated");
    // An unknown admin path is 404 only for a known key.
    app.send(app.client.get(app.url("/admin/nothing-here"))).await.problem(401, "unauthenticated");
    app.as_key(&vtoken, Method::GET, "/admin/nothing-here", None).await.problem(404, "not_found");
});
