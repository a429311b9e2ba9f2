//! The six staff roles: what each may call, the ceiling on the keys a key may mint, and the
//! personal fields of orders hidden from `editor` and `viewer`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::support::TestApp;

const ROLES: [&str; 6] = ["owner", "admin", "editor", "orders", "support", "viewer"];

/// A new key with `role`, made with the bootstrap (owner) key; answers its token.
async fn key(app: &TestApp, role: &str) -> String {
    let k = app.admin_post("/admin/api-keys", json!({"name": format!("{role} key"), "role": role})).await.expect(201);
    assert_eq!(k["role"], role);
    k["token"].as_str().unwrap().to_owned()
}

/// Places an order by `ana@example.com`; answers its id.
async fn order(app: &TestApp) -> String {
    let p = app.product("shirt", &["SH-1"]).await;
    let variant = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&variant, 5).await;
    let cart = app.cart_with("EUR", &[(&variant, 1)]).await;
    let o = app.send(app.checkout_req(&cart, Some("k-1"), "tok_visa")).await.expect(201);
    o["id"].as_str().unwrap().to_owned()
}

both!(each_role_may_call_what_the_table_says, |app: TestApp| async move {
    let product = app.product("linen", &["LN-1"]).await;
    let variant = product["variants"][0]["id"].as_str().unwrap().to_owned();
    let stock = format!("/admin/variants/{variant}/stock");
    // (method, path, body, the roles that may call it)
    let calls: Vec<(Method, String, Option<Value>, &[&str])> = vec![
        (Method::GET, "/admin/products".into(), None, &ROLES),
        (Method::GET, stock.clone(), None, &ROLES),
        (Method::PUT, stock.clone(), Some(json!({"on_hand": 3})), &["owner", "admin", "editor"]),
        (
            Method::PATCH,
            format!("/admin/products/{}", product["id"].as_str().unwrap()),
            Some(json!({"title": "Linen"})),
            &["owner", "admin", "editor"],
        ),
        (Method::GET, "/admin/orders".into(), None, &ROLES),
        (Method::GET, "/admin/outbox".into(), None, &["owner", "admin"]),
        (Method::GET, "/admin/api-keys".into(), None, &["owner", "admin"]),
        (Method::GET, "/admin/audit-log".into(), None, &["owner", "admin", "viewer"]),
    ];
    for role in ROLES {
        let token = key(&app, role).await;
        for (method, path, body, allowed) in &calls {
            let r = app.as_key(&token, method.clone(), path, body.clone()).await;
            if allowed.contains(&role) {
                assert!(r.status < 300, "{role} {method} {path}: {} {}", r.status, r.body);
            } else {
                r.problem(403, "forbidden");
            }
        }
    }
});

both!(no_key_mints_or_revokes_a_higher_role, |app: TestApp| async move {
    let admin = key(&app, "admin").await;
    let owner = key(&app, "owner").await;
    let create = |token: &str, role: &str| {
        let token = token.to_owned();
        let body = json!({"name": "minted", "role": role});
        let app = &app;
        async move { app.as_key(&token, Method::POST, "/admin/api-keys", Some(body)).await }
    };
    // An owner mints any role, an owner included.
    let second_owner = create(&owner, "owner").await.expect(201);
    // An admin mints every role but owner, and revokes none of the owners.
    create(&admin, "owner").await.problem(403, "forbidden");
    for role in ["admin", "editor", "orders", "support", "viewer"] {
        create(&admin, role).await.expect(201);
    }
    let owner_id = second_owner["id"].as_str().unwrap();
    app.as_key(&admin, Method::DELETE, &format!("/admin/api-keys/{owner_id}"), None).await.problem(403, "forbidden");
    let minted = create(&admin, "editor").await.expect(201);
    let editor_id = minted["id"].as_str().unwrap();
    // The other roles manage no keys at all, not even their own role.
    for role in ["editor", "orders", "support", "viewer"] {
        let token = key(&app, role).await;
        create(&token, role).await.problem(403, "forbidden");
        create(&token, "viewer").await.problem(403, "forbidden");
        app.as_key(&token, Method::DELETE, &format!("/admin/api-keys/{editor_id}"), None)
            .await
            .problem(403, "forbidden");
    }
    // The owner key still works; the editor key an admin made, an admin revokes.
    app.as_key(second_owner["token"].as_str().unwrap(), Method::GET, "/admin/api-keys", None).await.expect(200);
    app.as_key(&admin, Method::DELETE, &format!("/admin/api-keys/{editor_id}"), None).await.expect(204);
    app.as_key(&owner, Method::DELETE, &format!("/admin/api-keys/{owner_id}"), None).await.expect(204);
});

both!(editor_and_viewer_read_orders_without_personal_fields, |app: TestApp| async move {
    let id = order(&app).await;
    for role in ROLES {
        let token = key(&app, role).await;
        let one = app.as_key(&token, Method::GET, &format!("/admin/orders/{id}"), None).await.expect(200);
        let list = app.as_key(&token, Method::GET, "/admin/orders", None).await.expect(200);
        let listed = &list["items"][0];
        assert_eq!(listed["id"], id.as_str());
        let by_email = app.as_key(&token, Method::GET, "/admin/orders?email=ana@example.com", None).await;
        if matches!(role, "editor" | "viewer") {
            for o in [&one, listed] {
                assert_eq!(o["email"], Value::Null, "{role}: {o}");
                assert_eq!(o["shipping_address"], Value::Null, "{role}: {o}");
                let text = o.to_string();
                assert!(!text.contains("ana@") && !text.contains("Rua Augusta") && !text.contains("Ana"), "{text}");
                // The rest of the order is there.
                assert_eq!(o["total"]["amount"], 4900, "{role}: {o}");
                assert_eq!(o["items"][0]["sku"], "SH-1");
            }
            by_email.problem(403, "forbidden");
        } else {
            for o in [&one, listed] {
                assert_eq!(o["email"], "ana@example.com", "{role}: {o}");
                assert_eq!(o["shipping_address"]["line1"], "Rua Augusta 1", "{role}: {o}");
            }
            assert_eq!(by_email.expect(200)["items"][0]["id"], id.as_str());
        }
    }
});
