//! The audit log: every successful admin write, with its actor, action, resource id and
//! client address; nothing for reads or failed writes; append-only down to the database.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::support::{Backend, TestApp};

/// The entries, newest first (one page of up to 100).
async fn entries(app: &TestApp, query: &str) -> Vec<Value> {
    let page = app.admin_get(&format!("/admin/audit-log?limit=100{query}")).await.expect(200);
    page["items"].as_array().unwrap().clone()
}

both!(admin_writes_are_recorded_with_action_resource_actor_and_ip, |app: TestApp| async move {
    let key = app.admin_post("/admin/api-keys", json!({"name": "pim", "role": "editor"})).await.expect(201);
    let (key_id, token) = (key["id"].as_str().unwrap().to_owned(), key["token"].as_str().unwrap().to_owned());
    let p = app
        .as_key(
            &token,
            Method::POST,
            "/admin/products",
            Some(json!({"title": "Shirt", "handle": "shirt", "variants": [{"sku": "S-1", "prices": []}]})),
        )
        .await
        .expect(201);
    let (pid, vid) = (p["id"].as_str().unwrap().to_owned(), p["variants"][0]["id"].as_str().unwrap().to_owned());
    app.as_key(&token, Method::PATCH, &format!("/admin/products/{pid}"), Some(json!({"title": "Linen shirt"})))
        .await
        .expect(200);
    app.as_key(&token, Method::PATCH, &format!("/admin/variants/{vid}"), Some(json!({"title": "M"}))).await.expect(200);
    app.as_key(&token, Method::PUT, &format!("/admin/variants/{vid}/stock"), Some(json!({"on_hand": 4})))
        .await
        .expect(200);
    // Reads, refusals and failures are not recorded.
    app.as_key(&token, Method::GET, &format!("/admin/products/{pid}"), None).await.expect(200);
    app.as_key(&token, Method::GET, "/admin/api-keys", None).await.problem(403, "forbidden");
    app.as_key(&token, Method::PATCH, "/admin/products/prod_nope", Some(json!({"title": "x"})))
        .await
        .problem(404, "not_found");
    app.as_key(&token, Method::POST, "/admin/products", Some(json!({"title": "Shirt", "handle": "shirt"})))
        .await
        .problem(409, "conflict");
    app.as_key(&token, Method::POST, "/admin/products", Some(json!({"title": 7})))
        .await
        .problem(422, "validation_failed");
    app.as_key("bk_unknown", Method::POST, "/admin/products", Some(json!({"title": "x"})))
        .await
        .problem(401, "unauthenticated");
    app.as_key(&token, Method::DELETE, &format!("/admin/products/{pid}"), None).await.expect(204);
    app.admin_delete(&format!("/admin/api-keys/{key_id}")).await.expect(204);

    let all = entries(&app, "").await;
    let seen: Vec<(String, String, String)> = all
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["resource_id"].as_str().unwrap_or("").to_owned(),
                e["actor"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("api_key.revoke", key_id.as_str(), "bootstrap"),
        ("product.delete", &pid, &key_id),
        ("stock.set", &vid, &key_id),
        ("variant.update", &vid, &key_id),
        ("product.update", &pid, &key_id),
        ("product.create", &pid, &key_id),
        ("api_key.create", &key_id, "bootstrap"),
    ]
    .iter()
    .map(|(a, r, k)| (a.to_string(), r.to_string(), k.to_string()))
    .collect();
    assert_eq!(seen, expected, "{all:#?}");
    for e in &all {
        assert!(e["id"].as_str().unwrap().starts_with("aud_"), "{e}");
        assert_eq!(e["actor"]["type"], "api_key");
        assert_eq!(e["ip"], "127.0.0.1");
        assert!(e["at"].as_str().unwrap().ends_with('Z'), "{e}");
        assert_eq!(e.as_object().unwrap().len(), 6, "only id, at, actor, action, resource_id, ip: {e}");
    }
    // Nothing of a request's body is kept.
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains("Linen") && !text.contains("S-1"), "{text}");

    // Filters and pages.
    let mine = entries(&app, &format!("&actor={key_id}")).await;
    assert_eq!(mine.len(), 5);
    assert!(mine.iter().all(|e| e["actor"]["id"] == key_id.as_str()));
    let about = entries(&app, &format!("&resource_id={vid}")).await;
    let actions: Vec<&str> = about.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["stock.set", "variant.update"]);
    assert!(entries(&app, "&actor=key_nobody").await.is_empty());
    let first = app.admin_get("/admin/audit-log?limit=3").await.expect(200);
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = app.admin_get(&format!("/admin/audit-log?limit=100&cursor={cursor}")).await.expect(200);
    assert_eq!(rest["items"].as_array().unwrap().len(), 4);
    assert_eq!(rest["next_cursor"], Value::Null);
    assert_eq!(rest["items"][0], all[3]);
    app.admin_get("/admin/audit-log?cursor=nope").await.problem(422, "validation_failed");
    // Reading the log is not recorded either.
    assert_eq!(entries(&app, "").await.len(), 7);
});

both!(audit_log_is_append_only_in_the_database, |app: TestApp| async move {
    app.product("shirt", &["S-1"]).await;
    let entry = entries(&app, "").await.remove(0);
    let id = entry["id"].as_str().unwrap().to_owned();
    let mut w = app.db.begin().await.unwrap();
    let refused_update = backroom_db::sql::query("UPDATE audit_log SET actor_id = 'someone' WHERE id = $1")
        .bind(&id)
        .execute(&mut w.conn())
        .await;
    assert!(refused_update.is_err(), "an UPDATE of the audit log was allowed");
    drop(w);
    let mut w = app.db.begin().await.unwrap();
    let refused_delete =
        backroom_db::sql::query("DELETE FROM audit_log WHERE id = $1").bind(&id).execute(&mut w.conn()).await;
    assert!(refused_delete.is_err(), "a DELETE from the audit log was allowed");
    drop(w);
    let text = format!("{refused_update:?} {refused_delete:?}");
    assert!(text.contains("append-only"), "{text}");
    assert_eq!(entries(&app, "").await, vec![entry.clone()]);
    // No route changes or deletes an entry.
    app.admin_delete(&format!("/admin/audit-log/{id}")).await.problem(404, "not_found");
    app.admin_delete("/admin/audit-log").await.problem(405, "method_not_allowed");
});

both!(readers_of_the_audit_log, |app: TestApp| async move {
    for (role, status) in [("admin", 200), ("viewer", 200), ("editor", 403), ("orders", 403), ("support", 403)] {
        let k = app.admin_post("/admin/api-keys", json!({"name": role, "role": role})).await.expect(201);
        let r = app.as_key(k["token"].as_str().unwrap(), Method::GET, "/admin/audit-log", None).await;
        assert_eq!(r.status, status, "{role}: {}", r.body);
    }
});

/// Behind a trusted proxy, the entry's address is the client's, from `X-Forwarded-For`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_behind_a_trusted_proxy_is_recorded() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.trusted_proxies = backroom_api::client::TrustedProxies::parse("127.0.0.1").unwrap();
    })
    .await;
    let req = app
        .client
        .post(app.url("/admin/categories"))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .header("x-forwarded-for", "198.51.100.23, 203.0.113.9")
        .json(&json!({"name": "Shirts"}));
    app.send(req).await.expect(201);
    let e = entries(&app, "").await.remove(0);
    assert_eq!(e["action"], "category.create");
    assert_eq!(e["ip"], "203.0.113.9");
}

/// A write whose audit entry cannot be recorded still answers its success; the failure is
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_audit_record_does_not_fail_the_write() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut w = app.db.begin().await.unwrap();
    backroom_db::sql::query("ALTER TABLE audit_log RENAME TO audit_log_gone").execute(&mut w.conn()).await.unwrap();
    w.commit().await.unwrap();
    app.product("shirt", &["S-1"]).await;
    assert_eq!(app.product_count().await, 1);
    let (status, _, text) = app.send_raw(app.client.get(app.url("/metrics"))).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(text).unwrap();
    let failures = text
        .lines()
        .find(|l| l.starts_with("audit_log_failures_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(failures >= 1.0, "{text}");
}
