//! Customers: registration, sessions, the login-failure limit, address books, staff views,
//! export and erasure, and personal data sealed at rest.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::support::{Res, TestApp};

const PASSWORD: &str = "correct horse battery";

fn registration(email: &str) -> Value {
    json!({"email": email, "password": PASSWORD, "first_name": "Ana", "last_name": "Silva"})
}

impl TestApp {
    /// Registers a customer with [`PASSWORD`]; answers the registration.
    async fn register(&self, body: Value) -> Value {
        self.send(self.client.post(self.url("/store/customers")).json(&body)).await.expect(201)
    }

    async fn sign_in_as(&self, email: &str, password: &str) -> Res {
        self.send(self.client.post(self.url("/store/auth/token")).json(&json!({"email": email, "password": password})))
            .await
    }

    /// Registers `email` and signs in; answers the customer's id and token.
    async fn customer(&self, email: &str) -> (String, String) {
        let c = self.register(registration(email)).await;
        let s = self.sign_in_as(email, PASSWORD).await.expect(200);
        (c["id"].as_str().unwrap().to_owned(), s["token"].as_str().unwrap().to_owned())
    }

    async fn as_customer(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Res {
        let mut req = self.client.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    /// Every value of one text column (`NULL`s left out).
    async fn texts(&self, sql: &str) -> Vec<String> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        let rows: Vec<Option<String>> = match self.db.pools() {
            backroom_db::Pools::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_all(reader).await.unwrap(),
            backroom_db::Pools::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
        };
        rows.into_iter().flatten().collect()
    }
}

/// A `401 unauthenticated` with `WWW-Authenticate: Bearer`.
#[track_caller]
fn unauthenticated(r: Res) {
    assert_eq!(r.headers.get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"));
    r.problem(401, "unauthenticated");
}

both!(register_sign_in_and_out, |app: TestApp| async move {
    let body = json!({"email": " Ana@Example.com ", "password": PASSWORD, "first_name": " Ana ",
                      "last_name": "Silva", "phone": "+351 912 345 678"});
    let c = app.register(body).await;
    assert!(c["id"].as_str().unwrap().starts_with("cus_"));
    assert_eq!(c["email"], "Ana@Example.com");
    assert_eq!(c["first_name"], "Ana");
    assert_eq!(c["last_name"], "Silva");
    assert!(c["created_at"].is_string());
    assert!(c.get("password").is_none() && !c.to_string().contains(PASSWORD), "{c}");

    // The same e-mail, however written, is taken.
    let again = app.send(app.client.post(app.url("/store/customers")).json(&registration("ana@example.COM"))).await;
    again.problem(409, "email_taken");

    // Every bad field is named at once.
    let bad = app
        .send(app.client.post(app.url("/store/customers")).json(&json!({
            "email": "not-an-email", "password": "short", "first_name": " ", "last_name": "Silva", "phone": "call me"})))
        .await
        .problem(422, "validation_failed");
    let fields: Vec<&str> = bad["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["email", "password", "first_name", "phone"]);
    let long = json!({"email": "b@example.com", "password": "x".repeat(257), "first_name": "B", "last_name": "B"});
    app.send(app.client.post(app.url("/store/customers")).json(&long)).await.problem(422, "validation_failed");
    let unknown =
        json!({"email": "b@example.com", "password": PASSWORD, "first_name": "B", "last_name": "B", "admin": true});
    app.send(app.client.post(app.url("/store/customers")).json(&unknown)).await.problem(422, "validation_failed");

    // Sign in with the e-mail in any case.
    let s = app.sign_in_as("ANA@example.com", PASSWORD).await.expect(200);
    let token = s["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("cst_"));
    assert_eq!(s["customer_id"], c["id"]);
    let expires = chrono::DateTime::parse_from_rfc3339(s["expires_at"].as_str().unwrap()).unwrap();
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!((29..=30).contains(&days), "sessions last 30 days by default: {days}");

    let me = app.as_customer(&token, Method::GET, "/store/customers/me", None).await.expect(200);
    assert_eq!(me["email"], "Ana@Example.com");
    assert_eq!(me["phone"], "+351 912 345 678");
    let me = app
        .as_customer(
            &token,
            Method::PATCH,
            "/store/customers/me",
            Some(json!({"first_name": "Ana Maria", "phone": null})),
        )
        .await
        .expect(200);
    assert_eq!(me["first_name"], "Ana Maria");
    assert_eq!(me["last_name"], "Silva");
    assert_eq!(me["phone"], Value::Null);
    app.as_customer(&token, Method::PATCH, "/store/customers/me", Some(json!({"email": "x@example.com"})))
        .await
        .problem(422, "validation_failed");

    // Without a token, with a malformed or unknown one: 401.
    unauthenticated(app.get("/store/customers/me").await);
    unauthenticated(app.as_customer("cst_nope", Method::GET, "/store/customers/me", None).await);
    let basic = app.client.get(app.url("/store/customers/me")).header("authorization", "Basic abc");
    unauthenticated(app.send(basic).await);
    // An admin key is no customer token.
    unauthenticated(app.as_customer(crate::support::ADMIN_TOKEN, Method::GET, "/store/customers/me", None).await);

    // A second session survives signing out of the first.
    let second = app.sign_in_as("ana@example.com", PASSWORD).await.expect(200);
    let second = second["token"].as_str().unwrap();
    app.as_customer(&token, Method::DELETE, "/store/auth/token", None).await.expect(204);
    unauthenticated(app.as_customer(&token, Method::GET, "/store/customers/me", None).await);
    unauthenticated(app.as_customer(&token, Method::DELETE, "/store/auth/token", None).await);
    app.as_customer(second, Method::GET, "/store/customers/me", None).await.expect(200);

    // Only the token's hash is stored.
    let hashes = app.texts("SELECT token_hash FROM customer_sessions").await;
    assert!(!hashes.is_empty() && hashes.iter().all(|h| !h.contains(&token[4..]) && h.len() == 64), "{hashes:?}");
});

both!(a_wrong_password_and_an_unknown_email_get_the_same_answer, |app: TestApp| async move {
    app.register(registration("ana@example.com")).await;
    let wrong = app.sign_in_as("ana@example.com", "not the password").await;
    let unknown = app.sign_in_as("nobody@example.com", PASSWORD).await;
    let short = app.sign_in_as("ana@example.com", "short").await;
    let (wrong, unknown, short) = (
        wrong.problem(401, "invalid_credentials"),
        unknown.problem(401, "invalid_credentials"),
        short.problem(401, "invalid_credentials"),
    );
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, short);
});

both!(
    sessions_expire,
    settings = |s: &mut backroom::config::Settings| {
        s.customers.session_ttl = std::time::Duration::from_secs(1);
    },
    |app: TestApp| async move {
        let (_, token) = app.customer("ana@example.com").await;
        app.as_customer(&token, Method::GET, "/store/customers/me", None).await.expect(200);
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        unauthenticated(app.as_customer(&token, Method::GET, "/store/customers/me", None).await);
        // A new sign-in works again.
        let s = app.sign_in_as("ana@example.com", PASSWORD).await.expect(200);
        app.as_customer(s["token"].as_str().unwrap(), Method::GET, "/store/customers/me", None).await.expect(200);
    }
);

/// Asserts a `429 rate_limited` with a `Retry-After` of up to 15 minutes.
#[track_caller]
fn rate_limited(r: Res) {
    let retry: u64 = r.headers.get("retry-after").expect("Retry-After").to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "Retry-After {retry}");
    r.problem(429, "rate_limited");
}

/// Tests are clients behind a trusted proxy, so each request names its address.
fn behind_a_proxy(s: &mut backroom::config::Settings) {
    s.trusted_proxies = backroom_api::client::TrustedProxies::parse("127.0.0.1").unwrap();
}

impl TestApp {
    async fn sign_in_from(&self, addr: &str, email: &str, password: &str) -> Res {
        let body = json!({"email": email, "password": password});
        self.send(self.client.post(self.url("/store/auth/token")).header("x-forwarded-for", addr).json(&body)).await
    }
}

both!(
    the_eleventh_failure_for_an_email_is_refused_from_any_address,
    settings = behind_a_proxy,
    |app: TestApp| async move {
        app.register(registration("ana@example.com")).await;
        for i in 0..10 {
            app.sign_in_from(&format!("198.51.100.{i}"), "ana@example.com", "not the password")
                .await
                .problem(401, "invalid_credentials");
        }
        rate_limited(app.sign_in_from("203.0.113.1", "ana@example.com", "not the password").await);
        // The right password too, and the e-mail however written.
        rate_limited(app.sign_in_from("203.0.113.2", " ANA@example.com", PASSWORD).await);
        // Another e-mail from those addresses is not refused.
        app.sign_in_from("198.51.100.1", "bea@example.com", PASSWORD).await.problem(401, "invalid_credentials");
    }
);

both!(
    the_eleventh_failure_from_an_address_is_refused_for_any_email,
    settings = behind_a_proxy,
    |app: TestApp| async move {
        app.register(registration("ana@example.com")).await;
        for i in 0..10 {
            app.sign_in_from("198.51.100.7", &format!("guess{i}@example.com"), PASSWORD)
                .await
                .problem(401, "invalid_credentials");
        }
        // Any e-mail from that address, even with the right password; not from another address.
        rate_limited(app.sign_in_from("198.51.100.7", "ana@example.com", PASSWORD).await);
        app.sign_in_from("198.51.100.8", "ana@example.com", PASSWORD).await.expect(200);
    }
);

both!(
    the_login_failure_limit_holds_with_rate_limits_off,
    settings = |s: &mut backroom::config::Settings| {
        s.rate_limits = backroom_api::ratelimit::RateLimits::off();
    },
    |app: TestApp| async move {
        for i in 0..10 {
            app.sign_in_as(&format!("guess{i}@example.com"), PASSWORD).await.problem(401, "invalid_credentials");
        }
        rate_limited(app.sign_in_as("guess0@example.com", PASSWORD).await);
    }
);

both!(customers_see_only_their_own_addresses, |app: TestApp| async move {
    let (_, a) = app.customer("ana@example.com").await;
    let (_, b) = app.customer("bea@example.com").await;
    let address = json!({"name": "Ana Silva", "line1": "Rua Augusta 1", "city": "Lisboa",
                         "postal_code": "1100-048", "country": "PT", "phone": "+351 912 345 678"});
    let added =
        app.as_customer(&a, Method::POST, "/store/customers/me/addresses", Some(address.clone())).await.expect(201);
    let id = added["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("addr_"));
    assert_eq!(added["line1"], "Rua Augusta 1");
    assert_eq!(added["line2"], Value::Null);

    let mine = app.as_customer(&a, Method::GET, "/store/customers/me/addresses", None).await.expect(200);
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    let theirs = app.as_customer(&b, Method::GET, "/store/customers/me/addresses", None).await.expect(200);
    assert_eq!(theirs["items"], json!([]));

    // B cannot change or delete A's address: the same 404 as an address that does not exist.
    let path = format!("/store/customers/me/addresses/{id}");
    let patch = json!({"line1": "Rua do Ouro 2"});
    let not_theirs = app.as_customer(&b, Method::PATCH, &path, Some(patch.clone())).await.problem(404, "not_found");
    let missing = app
        .as_customer(&b, Method::PATCH, "/store/customers/me/addresses/addr_nope", Some(patch.clone()))
        .await
        .problem(404, "not_found");
    assert_eq!(not_theirs, missing);
    let not_theirs = app.as_customer(&b, Method::DELETE, &path, None).await.problem(404, "not_found");
    let missing = app.as_customer(&b, Method::DELETE, "/store/customers/me/addresses/addr_nope", None).await;
    assert_eq!(not_theirs, missing.problem(404, "not_found"));
    unauthenticated(app.send(app.client.delete(app.url(&path))).await);

    // A can.
    let changed =
        app.as_customer(&a, Method::PATCH, &path, Some(json!({"line2": "3º Esq.", "phone": null}))).await.expect(200);
    assert_eq!(changed["line1"], "Rua Augusta 1");
    assert_eq!(changed["line2"], "3º Esq.");
    assert_eq!(changed["phone"], Value::Null);
    let bad = app
        .as_customer(&a, Method::PATCH, &path, Some(json!({"country": "Portugal", "city": ""})))
        .await
        .problem(422, "validation_failed");
    assert_eq!(bad["errors"].as_array().unwrap().len(), 2, "{bad}");
    let bad = app
        .as_customer(&a, Method::POST, "/store/customers/me/addresses", Some(json!({"name": "x"})))
        .await
        .problem(422, "validation_failed");
    assert!(bad.to_string().contains("line1"), "{bad}");
    app.as_customer(&a, Method::DELETE, &path, None).await.expect(204);
    app.as_customer(&a, Method::DELETE, &path, None).await.problem(404, "not_found");
});

both!(staff_find_group_export_and_erase_customers, |app: TestApp| async move {
    let body = json!({"email": "ana@example.com", "password": PASSWORD, "first_name": "Ana",
                      "last_name": "Silva", "phone": "+351 912 345 678"});
    let c = app.register(body).await;
    let id = c["id"].as_str().unwrap().to_owned();
    let token = app.sign_in_as("ana@example.com", PASSWORD).await.expect(200)["token"].as_str().unwrap().to_owned();
    let address = json!({"name": "Ana Silva", "line1": "Rua Augusta 1", "city": "Lisboa",
                         "postal_code": "1100-048", "country": "PT"});
    app.as_customer(&token, Method::POST, "/store/customers/me/addresses", Some(address)).await.expect(201);
    let (bea, _) = app.customer("bea@example.com").await;

    // The list, newest first, and by e-mail (exact, any case).
    let all = app.admin_get("/admin/customers?limit=1").await.expect(200);
    assert_eq!(all["items"][0]["id"], bea.as_str());
    let next = all["next_cursor"].as_str().unwrap();
    let rest = app.admin_get(&format!("/admin/customers?limit=1&cursor={next}")).await.expect(200);
    assert_eq!(rest["items"][0]["id"], id.as_str());
    let found = app.admin_get("/admin/customers?email=ANA@example.com").await.expect(200);
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["email"], "ana@example.com");
    let none = app.admin_get("/admin/customers?email=ana@example.co").await.expect(200);
    assert_eq!(none["items"], json!([]));

    // Groups.
    let g = app.admin_post("/admin/customer-groups", json!({"name": "Wholesale"})).await.expect(201);
    let gid = g["id"].as_str().unwrap().to_owned();
    assert!(gid.starts_with("cgrp_"));
    assert_eq!(g["customer_count"], 0);
    app.admin_post("/admin/customer-groups", json!({"name": "Wholesale"})).await.problem(409, "conflict");
    let bad = app
        .admin_post(&format!("/admin/customer-groups/{gid}/customers"), json!({"customer_ids": [id, "cus_nope", "x"]}))
        .await
        .problem(422, "validation_failed");
    let fields: Vec<&str> = bad["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["customer_ids[1]", "customer_ids[2]"]);
    let g = app
        .admin_post(&format!("/admin/customer-groups/{gid}/customers"), json!({"customer_ids": [id, id]}))
        .await
        .expect(200);
    assert_eq!(g["customer_count"], 1);
    app.admin_post("/admin/customer-groups/cgrp_nope/customers", json!({"customer_ids": [id]}))
        .await
        .problem(404, "not_found");
    let groups = app.admin_get("/admin/customer-groups").await.expect(200);
    assert_eq!(groups["items"][0]["id"], gid.as_str());

    // One customer with addresses, groups and orders.
    let detail = app.admin_get(&format!("/admin/customers/{id}")).await.expect(200);
    assert_eq!(detail["email"], "ana@example.com");
    assert_eq!(detail["phone"], "+351 912 345 678");
    assert_eq!(detail["erased"], false);
    assert_eq!(detail["addresses"][0]["line1"], "Rua Augusta 1");
    assert_eq!(detail["groups"], json!([{"id": gid, "name": "Wholesale"}]));
    assert_eq!(detail["order_count"], 0);
    app.admin_get("/admin/customers/cus_nope").await.problem(404, "not_found");
    let orders = app.as_customer(&token, Method::GET, "/store/customers/me/orders", None).await.expect(200);
    assert_eq!(orders, json!({"items": [], "next_cursor": null}));
    app.as_customer(&token, Method::GET, "/store/orders/ord_nope", None).await.problem(404, "not_found");
    unauthenticated(app.get("/store/customers/me/orders").await);
    unauthenticated(app.get("/store/orders/ord_nope").await);

    // The export holds every personal field.
    let export = app.admin_get(&format!("/admin/customers/{id}/export")).await.expect(200);
    let text = export.to_string();
    for value in ["ana@example.com", "Ana", "Silva", "+351 912 345 678", "Rua Augusta 1", "Lisboa", "1100-048", "PT"] {
        assert!(text.contains(value), "{value} missing from the export: {text}");
    }
    assert!(!text.contains("password") && !text.contains("argon2"), "{text}");
    assert_eq!(export["orders"], json!([]));

    // Erasure.
    let erased = app.admin_post(&format!("/admin/customers/{id}/erase"), json!({})).await.expect(200);
    assert_eq!(erased["erased"], true);
    let again = app.admin_post(&format!("/admin/customers/{id}/erase"), json!({})).await.expect(200);
    assert_eq!(again, erased, "erasing twice answers the first erasure");
    app.admin_post("/admin/customers/cus_nope/erase", json!({})).await.problem(404, "not_found");

    let detail = app.admin_get(&format!("/admin/customers/{id}")).await.expect(200);
    assert_eq!(detail["erased"], true);
    for field in ["email", "first_name", "last_name", "phone"] {
        assert_eq!(detail[field], Value::Null, "{field}: {detail}");
    }
    assert_eq!(detail["addresses"], json!([]));
    let export = app.admin_get(&format!("/admin/customers/{id}/export")).await.expect(200);
    assert!(!export.to_string().contains("Silva") && !export.to_string().contains("Augusta"), "{export}");
    // Gone from the e-mail search; cannot sign in; the old token is dead.
    let found = app.admin_get("/admin/customers?email=ana@example.com").await.expect(200);
    assert_eq!(found["items"], json!([]));
    app.sign_in_as("ana@example.com", PASSWORD).await.problem(401, "invalid_credentials");
    unauthenticated(app.as_customer(&token, Method::GET, "/store/customers/me", None).await);
    // Nothing personal is left in the row.
    let left = app.texts(&format!(
        "SELECT COALESCE(email_index, '') || COALESCE(email, '') || COALESCE(first_name, '') || COALESCE(last_name, '') \
         || COALESCE(phone, '') || COALESCE(password_hash, '') FROM customers WHERE id = '{id}'"
    ))
    .await;
    assert_eq!(left, [""]);
    // The e-mail may register again, as a new customer.
    let new = app.register(registration("ana@example.com")).await;
    assert_ne!(new["id"], id.as_str());

    // The audit log has the staff's writes, nothing personal.
    let log = app.admin_get(&format!("/admin/audit-log?resource_id={id}")).await.expect(200);
    let actions: Vec<&str> = log["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["customer.erase", "customer.erase"]);
    let log = app.admin_get(&format!("/admin/audit-log?resource_id={gid}")).await.expect(200);
    let actions: Vec<&str> = log["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["customer_group.add_customers", "customer_group.create"]);

    // Events: ids and times, nothing personal.
    let created = backroom_db::outbox::list(&app.db, "customer.created").await.unwrap();
    assert_eq!(created.len(), 3);
    let erased_events = backroom_db::outbox::list(&app.db, "customer.erased").await.unwrap();
    assert_eq!(erased_events.len(), 1, "one event, however often erased");
    let payload: Value = serde_json::from_str(&erased_events[0].payload).unwrap();
    assert_eq!(payload["customer_id"], id.as_str());
    for e in created.iter().chain(&erased_events) {
        assert!(!e.payload.contains("example.com") && !e.payload.contains("Silva"), "{}", e.payload);
    }
});

both!(staff_roles_and_customer_routes, |app: TestApp| async move {
    let (id, _) = app.customer("ana@example.com").await;
    let key = |role: &'static str| {
        let app = &app;
        async move {
            let k = app.admin_post("/admin/api-keys", json!({"name": role, "role": role})).await.expect(201);
            k["token"].as_str().unwrap().to_owned()
        }
    };
    let (editor, viewer, orders, support) =
        (key("editor").await, key("viewer").await, key("orders").await, key("support").await);
    let (one, export, erase) = (
        format!("/admin/customers/{id}"),
        format!("/admin/customers/{id}/export"),
        format!("/admin/customers/{id}/erase"),
    );
    for t in [&editor, &viewer] {
        app.as_key(t, Method::GET, "/admin/customers", None).await.problem(403, "forbidden");
        app.as_key(t, Method::GET, &one, None).await.problem(403, "forbidden");
        app.as_key(t, Method::GET, "/admin/customer-groups", None).await.problem(403, "forbidden");
    }
    // `orders` reads customers; `support` reads and exports; neither erases nor groups.
    app.as_key(&orders, Method::GET, &one, None).await.expect(200);
    app.as_key(&orders, Method::GET, &export, None).await.problem(403, "forbidden");
    app.as_key(&support, Method::GET, &export, None).await.expect(200);
    for t in [&orders, &support] {
        app.as_key(t, Method::POST, &erase, None).await.problem(403, "forbidden");
        app.as_key(t, Method::POST, "/admin/customer-groups", Some(json!({"name": "x"})))
            .await
            .problem(403, "forbidden");
    }
    // A customer token is no API key.
    let (_, token) = app.customer("bea@example.com").await;
    app.as_key(&token, Method::GET, "/admin/customers", None).await.problem(401, "unauthenticated");
});

both!(personal_data_is_sealed_at_rest, |app: TestApp| async move {
    let values = [
        "ana.sealed@example.com",
        "Anabela",
        "Sealedsilva",
        "+351 912 000 111",
        "Rua Secreta 77",
        "Sintraville",
        "2710-999",
    ];
    let body = json!({"email": values[0], "password": PASSWORD, "first_name": values[1], "last_name": values[2], "phone": values[3]});
    app.register(body).await;
    let token = app.sign_in_as(values[0], PASSWORD).await.expect(200)["token"].as_str().unwrap().to_owned();
    let address = json!({"name": "Anabela Sealedsilva", "line1": values[4], "city": values[5], "postal_code": values[6], "country": "PT", "phone": values[3]});
    app.as_customer(&token, Method::POST, "/store/customers/me/addresses", Some(address)).await.expect(201);

    let mut stored = Vec::new();
    for sql in [
        "SELECT id FROM customers",
        "SELECT key_id FROM customers",
        "SELECT email_index FROM customers",
        "SELECT email FROM customers",
        "SELECT first_name FROM customers",
        "SELECT last_name FROM customers",
        "SELECT phone FROM customers",
        "SELECT password_hash FROM customers",
        "SELECT sealed FROM customer_addresses",
        "SELECT token_hash FROM customer_sessions",
        "SELECT payload FROM outbox",
    ] {
        stored.extend(app.texts(sql).await);
    }
    assert!(stored.len() >= 10, "{stored:?}");
    let all = stored.join("\n").to_lowercase();
    for v in values {
        assert!(!all.contains(&v.to_lowercase()), "{v} is stored in clear");
    }
    // Nor as the digits of the phone, nor the e-mail's local part.
    assert!(!all.contains("912000111") && !all.contains("ana.sealed"), "{all}");

    // Everything at rest: the data directory (SQLite's file and WAL), a PostgreSQL dump.
    let text = String::from_utf8_lossy(&app.stored_bytes().await).to_lowercase();
    for v in values {
        assert!(!text.contains(&v.to_lowercase()), "{v} is stored in clear");
    }
});

impl TestApp {
    /// Places a paid order of one unit of `variant` in a cart of `customer`'s. Through the
    /// Rust API: the cart's owner is what a customer token on `POST /store/carts` makes it.
    async fn order_of(&self, customer: &str, variant: &str, email: &str) -> String {
        let carts = backroom_cart::Carts::new(self.db.clone(), self.checkout.vault().clone());
        let new = backroom_cart::NewCart { currency: "EUR".into() };
        let cart = carts.create(&new, Some(customer)).await.unwrap();
        let item = backroom_cart::AddItem { variant_id: variant.into(), quantity: 1 };
        carts.add_item(&cart.id, Some(customer), &item).await.unwrap();
        let mut body = crate::support::checkout_body("tok_visa");
        body["email"] = json!(email);
        let req: backroom_checkout::CheckoutRequest = serde_json::from_value(body).unwrap();
        match self.checkout.run(&cart.id, &format!("key-{}", cart.id), "hash", &req).await.unwrap() {
            backroom_checkout::Answer::New(backroom_checkout::Outcome::Placed { order }) => order.id,
            _ => panic!("the order was not placed"),
        }
    }
}

both!(a_customers_orders_are_theirs_exported_and_erased, |app: TestApp| async move {
    let product = app.product("linen-shirt", &["LS-M"]).await;
    let variant = product["variants"][0]["id"].as_str().unwrap().to_owned();
    let (ana, a) = app.customer("ana@example.com").await;
    let (bea, b) = app.customer("bea@example.com").await;
    let first = app.order_of(&ana, &variant, "ana@example.com").await;
    let second = app.order_of(&ana, &variant, "ana@example.com").await;
    let beas = app.order_of(&bea, &variant, "bea@example.com").await;
    let guests = app.send(app.checkout_req(&app.cart_with("EUR", &[(&variant, 1)]).await, Some("g"), "tok_visa")).await;
    let guests = guests.expect(201)["id"].as_str().unwrap().to_owned();

    // Newest first, a page at a time; only the customer's own.
    let page = app.as_customer(&a, Method::GET, "/store/customers/me/orders?limit=1", None).await.expect(200);
    assert_eq!(page["items"][0]["id"], second.as_str());
    let next = page["next_cursor"].as_str().unwrap();
    let path = format!("/store/customers/me/orders?limit=1&cursor={next}");
    let page = app.as_customer(&a, Method::GET, &path, None).await.expect(200);
    assert_eq!(page["items"][0]["id"], first.as_str());
    assert_eq!(page["next_cursor"], Value::Null);
    let one = app.as_customer(&a, Method::GET, &format!("/store/orders/{first}"), None).await.expect(200);
    assert_eq!(one["email"], "ana@example.com");
    assert_eq!(one["shipping_address"]["line1"], "Rua Augusta 1");
    // Another customer's order, or a guest's: the same 404 as none.
    let missing = app.as_customer(&a, Method::GET, "/store/orders/ord_nope", None).await.problem(404, "not_found");
    for other in [&beas, &guests] {
        let r = app.as_customer(&a, Method::GET, &format!("/store/orders/{other}"), None).await;
        assert_eq!(r.problem(404, "not_found"), missing);
    }
    let theirs = app.as_customer(&b, Method::GET, "/store/customers/me/orders", None).await.expect(200);
    assert_eq!(theirs["items"].as_array().unwrap().len(), 1);

    assert_eq!(app.admin_get(&format!("/admin/customers/{ana}")).await.expect(200)["order_count"], 2);
    let export = app.admin_get(&format!("/admin/customers/{ana}/export")).await.expect(200);
    let ids: Vec<&str> = export["orders"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    assert_eq!(export["orders"][0]["email"], "ana@example.com");

    // Erasure: the orders keep their lines and totals; their personal fields are gone.
    app.admin_post(&format!("/admin/customers/{ana}/erase"), json!({})).await.expect(200);
    let order = app.admin_get(&format!("/admin/orders/{first}")).await.expect(200);
    assert_eq!(order["email"], Value::Null, "{order}");
    assert_eq!(order["shipping_address"], Value::Null, "{order}");
    assert_eq!(order["total"], json!({"amount": 4900, "currency": "EUR"}));
    assert_eq!(order["items"][0]["sku"], "LS-M");
    // Bea's order is untouched.
    let order = app.admin_get(&format!("/admin/orders/{beas}")).await.expect(200);
    assert_eq!(order["email"], "bea@example.com");
});
