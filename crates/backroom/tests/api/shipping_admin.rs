//! `/admin/shipping-options*`: create, list, read, change and delete shipping options; every
//! rule of their fields; the refusal of private carrier addresses; who may write them.
//!
//! Regions are written straight into the database ([`TestApp::region`]) until
//! `POST /admin/regions` lands.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::support::TestApp;

impl TestApp {
    /// A region in `currency` (written through the database handle); its id.
    async fn region(&self, currency: &str) -> String {
        let id = backroom_kernel::id::new("reg");
        let job = (id.clone(), currency.to_owned());
        self.db
            .write(move |mut conn| {
                Box::pin(async move {
                    backroom_db::sql::query(
                        "INSERT INTO regions (id, name, currency, tax_inclusive, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $5)",
                    )
                    .bind(&job.0)
                    .bind("A region")
                    .bind(job.1.as_str())
                    .bind(true)
                    .bind(backroom_kernel::now())
                    .execute(&mut conn)
                    .await
                    .map_err(backroom_db::storage)?;
                    Ok(backroom_db::writer::Done::Commit(()))
                })
            })
            .await
            .expect("insert a region");
        id
    }
}

fn eur(amount: i64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

/// The fields a `422 validation_failed` names.
#[track_caller]
fn refused_fields(body: &Value) -> Vec<String> {
    assert_eq!(body["code"], "validation_failed", "{body}");
    body["errors"].as_array().expect("errors").iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

both!(create_list_get_change_and_delete, |app: TestApp| async move {
    let pt = app.region("EUR").await;
    let flat = app
        .admin_post("/admin/shipping-options", json!({"name": " Standard ", "region_id": pt, "price": eur(490)}))
        .await
        .expect(201);
    let id = flat["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("so_"), "{id}");
    assert_eq!(flat["name"], "Standard");
    assert_eq!(flat["region_id"], pt.as_str());
    assert_eq!(flat["price"], eur(490));
    assert_eq!(flat["free_over"], Value::Null);
    assert_eq!(flat["carrier"], Value::Null);
    assert_eq!(app.admin_get(&format!("/admin/shipping-options/{id}")).await.expect(200), flat);

    let quoted = app
        .admin_post(
            "/admin/shipping-options",
            json!({"name": "Express", "region_id": pt, "price": eur(990), "free_over": eur(10000),
                   "carrier": {"quote_url": "https://rates.carrier.example/quote"}}),
        )
        .await
        .expect(201);
    assert_eq!(quoted["free_over"], eur(10000));
    // The timeout defaults to 800 ms.
    assert_eq!(quoted["carrier"], json!({"quote_url": "https://rates.carrier.example/quote", "timeout_ms": 800}));
    let es = app.region("EUR").await;
    let other = app
        .admin_post("/admin/shipping-options", json!({"name": "Correos", "region_id": es, "price": eur(300)}))
        .await
        .expect(201);

    // Newest first, a page at a time; one region's with `region_id`.
    let all = app.admin_get("/admin/shipping-options").await.expect(200);
    let ids: Vec<&str> = all["items"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [other["id"].as_str().unwrap(), quoted["id"].as_str().unwrap(), id.as_str()]);
    assert_eq!(all["next_cursor"], Value::Null);
    let page = app.admin_get(&format!("/admin/shipping-options?region_id={pt}&limit=1")).await.expect(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], quoted["id"]);
    let cursor = page["next_cursor"].as_str().expect("a next page").to_owned();
    let next =
        app.admin_get(&format!("/admin/shipping-options?region_id={pt}&limit=1&cursor={cursor}")).await.expect(200);
    assert_eq!(next["items"][0]["id"], id.as_str());
    assert_eq!(next["next_cursor"], Value::Null);
    let none = app.admin_get("/admin/shipping-options?region_id=reg_nothing").await.expect(200);
    assert_eq!(none["items"], json!([]));
    app.admin_get("/admin/shipping-options?limit=101").await.problem(422, "validation_failed");

    // Change: the fields sent, the others kept; null removes free_over and the carrier.
    let qid = quoted["id"].as_str().unwrap();
    let changed = app
        .admin_patch(&format!("/admin/shipping-options/{qid}"), json!({"name": "Express 24h", "price": eur(1090)}))
        .await
        .expect(200);
    assert_eq!((changed["name"].as_str(), &changed["price"]), (Some("Express 24h"), &eur(1090)));
    assert_eq!(changed["free_over"], eur(10000));
    assert_eq!(changed["carrier"], quoted["carrier"]);
    assert_eq!(changed["created_at"], quoted["created_at"]);
    assert_ne!(changed["updated_at"], quoted["updated_at"]);
    let changed = app
        .admin_patch(
            &format!("/admin/shipping-options/{qid}"),
            json!({"free_over": null, "carrier": {"quote_url": "https://rates.carrier.example/v2", "timeout_ms": 2500}}),
        )
        .await
        .expect(200);
    assert_eq!(changed["free_over"], Value::Null);
    assert_eq!(changed["carrier"], json!({"quote_url": "https://rates.carrier.example/v2", "timeout_ms": 2500}));
    let changed =
        app.admin_patch(&format!("/admin/shipping-options/{qid}"), json!({"carrier": null})).await.expect(200);
    assert_eq!((&changed["carrier"], &changed["name"]), (&Value::Null, &json!("Express 24h")));
    assert_eq!(app.admin_get(&format!("/admin/shipping-options/{qid}")).await.expect(200), changed);

    // Delete: 204, then gone.
    let r = app.admin_delete(&format!("/admin/shipping-options/{id}")).await;
    assert_eq!(r.status, 204);
    app.admin_get(&format!("/admin/shipping-options/{id}")).await.problem(404, "not_found");
    app.admin_delete(&format!("/admin/shipping-options/{id}")).await.problem(404, "not_found");
    let left = app.admin_get(&format!("/admin/shipping-options?region_id={pt}")).await.expect(200);
    assert_eq!(left["items"].as_array().unwrap().len(), 1);
});

both!(unknown_options_are_404, |app: TestApp| async move {
    for path in ["/admin/shipping-options/so_01jd8x6v3y0m4c4b9ks2t5f7qe", "/admin/shipping-options/nothing"] {
        app.admin_get(path).await.problem(404, "not_found");
        app.admin_patch(path, json!({"name": "X"})).await.problem(404, "not_found");
        app.admin_delete(path).await.problem(404, "not_found");
    }
});

both!(every_rule_of_the_fields, |app: TestApp| async move {
    let pt = app.region("EUR").await;
    let us = app.region("USD").await;
    let post = |body: Value| {
        let app = &app;
        async move { app.admin_post("/admin/shipping-options", body).await.problem(422, "validation_failed") }
    };
    let base = || json!({"name": "Standard", "region_id": pt, "price": eur(490)});
    let with = |key: &str, value: Value| {
        let mut b = base();
        b[key] = value;
        b
    };
    for (body, field) in [
        (with("name", json!("")), "name"),
        (with("name", json!("   ")), "name"),
        (with("name", json!("x".repeat(201))), "name"),
        (with("name", json!("Stan\u{7}dard")), "name"),
        (with("name", json!("\u{202E}dradnatS")), "name"),
        (with("region_id", json!("reg_01jd8x6v3y0m4c4b9ks2t5f7qe")), "region_id"),
        (with("price", json!({"amount": 490, "currency": "USD"})), "price"),
        (with("price", json!({"amount": -1, "currency": "EUR"})), "price"),
        (with("free_over", json!({"amount": 5000, "currency": "USD"})), "free_over"),
        (with("carrier", json!({"quote_url": "ftp://rates.carrier.example/quote"})), "carrier.quote_url"),
        (with("carrier", json!({"quote_url": "rates.carrier.example/quote"})), "carrier.quote_url"),
        (with("carrier", json!({"quote_url": "/quote"})), "carrier.quote_url"),
        (
            with("carrier", json!({"quote_url": format!("https://rates.carrier.example/{}", "q".repeat(2048))})),
            "carrier.quote_url",
        ),
        (
            with("carrier", json!({"quote_url": "https://rates.carrier.example/q", "timeout_ms": 49})),
            "carrier.timeout_ms",
        ),
        (
            with("carrier", json!({"quote_url": "https://rates.carrier.example/q", "timeout_ms": 10001})),
            "carrier.timeout_ms",
        ),
        (
            with("carrier", json!({"quote_url": "https://rates.carrier.example/q", "timeout_ms": -5})),
            "carrier.timeout_ms",
        ),
        (with("carrier", json!({"quote_url": "https://rates.carrier.example/q", "retries": 3})), "carrier"),
        (with("colour", json!("red")), "colour"),
    ] {
        let problem = post(body.clone()).await;
        let fields = refused_fields(&problem);
        assert!(fields.iter().any(|f| f.starts_with(field)), "{body} → {fields:?}, expected {field}");
    }
    // Every problem at once.
    let problem = post(json!({"name": "", "region_id": us, "price": eur(490), "free_over": eur(1),
                               "carrier": {"quote_url": "gopher://x", "timeout_ms": 1}}))
    .await;
    let mut fields = refused_fields(&problem);
    fields.sort();
    assert_eq!(fields, ["carrier.quote_url", "carrier.timeout_ms", "free_over", "name", "price"]);
    // The extremes are accepted.
    for (timeout, name) in [(50, "x".to_owned()), (10_000, "y".repeat(200))] {
        app.admin_post(
            "/admin/shipping-options",
            json!({"name": name, "region_id": pt, "price": eur(0),
                   "carrier": {"quote_url": "http://rates.carrier.example:8080/q?k=v", "timeout_ms": timeout}}),
        )
        .await
        .expect(201);
    }

    // A change follows the same rules; the region cannot change.
    let o = app.admin_post("/admin/shipping-options", base()).await.expect(201);
    let path = format!("/admin/shipping-options/{}", o["id"].as_str().unwrap());
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"price": {"amount": 490, "currency": "USD"}}), "price"),
        (json!({"free_over": {"amount": 490, "currency": "USD"}}), "free_over"),
        (json!({"carrier": {"quote_url": "http://127.0.0.1/q"}}), "carrier.quote_url"),
        (
            json!({"carrier": {"quote_url": "https://rates.carrier.example/q", "timeout_ms": 20000}}),
            "carrier.timeout_ms",
        ),
        (json!({"region_id": us}), "region_id"),
        (json!({"price": null}), "price"),
    ] {
        let problem = app.admin_patch(&path, body.clone()).await.problem(422, "validation_failed");
        let fields = refused_fields(&problem);
        assert!(fields.iter().any(|f| f.starts_with(field)), "{body} → {fields:?}, expected {field}");
    }
    assert_eq!(app.admin_get(&path).await.expect(200), o, "a refused change changed nothing");
});

/// Quote URLs on loopback, private, link-local or unspecified addresses, in the forms an
/// attacker would try.
const PRIVATE_URLS: &[&str] = &[
    "http://127.0.0.1/quote",
    "http://127.0.0.1:8080/quote",
    "http://localhost/quote",
    "http://LOCALHOST.:9000/quote",
    "http://rates.localhost/quote",
    "http://[::1]/quote",
    "http://[::ffff:127.0.0.1]/quote",
    "http://0.0.0.0/quote",
    "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.1/quote",
    "http://172.16.5.4/quote",
    "http://192.168.1.1/quote",
    "http://[fd00::1]/quote",
    "http://[fe80::1]/quote",
    "http://2130706433/quote",
    "http://0x7f000001/quote",
    "http://0177.0.0.1/quote",
    "http://127.1/quote",
];

both!(private_carrier_addresses_are_refused_by_default, |app: TestApp| async move {
    let pt = app.region("EUR").await;
    for url in PRIVATE_URLS {
        let problem = app
            .admin_post(
                "/admin/shipping-options",
                json!({"name": "Standard", "region_id": pt, "price": eur(490), "carrier": {"quote_url": url}}),
            )
            .await
            .problem(422, "validation_failed");
        assert_eq!(refused_fields(&problem), ["carrier.quote_url"], "{url}");
        assert!(problem["errors"][0]["message"].as_str().unwrap().contains("private"), "{problem}");
    }
    let none = app.admin_get("/admin/shipping-options").await.expect(200);
    assert_eq!(none["items"], json!([]));
});

both!(
    private_carrier_addresses_are_accepted_when_allowed,
    settings = |s: &mut backroom::config::Settings| s.webhooks_allow_private = true,
    |app: TestApp| async move {
        let pt = app.region("EUR").await;
        for url in ["http://127.0.0.1:9/quote", "http://localhost:9/quote", "http://2130706433/quote"] {
            let o = app
                .admin_post(
                    "/admin/shipping-options",
                    json!({"name": "Local", "region_id": pt, "price": eur(490), "carrier": {"quote_url": url}}),
                )
                .await
                .expect(201);
            // Stored as it will be called.
            assert!(o["carrier"]["quote_url"].as_str().unwrap().starts_with("http://"), "{o}");
        }
    }
);

both!(a_viewer_reads_but_cannot_write, |app: TestApp| async move {
    let pt = app.region("EUR").await;
    let o = app
        .admin_post("/admin/shipping-options", json!({"name": "Standard", "region_id": pt, "price": eur(490)}))
        .await
        .expect(201);
    let path = format!("/admin/shipping-options/{}", o["id"].as_str().unwrap());
    let key = app.admin_post("/admin/api-keys", json!({"name": "reporting", "role": "viewer"})).await.expect(201);
    let viewer = key["token"].as_str().unwrap();
    app.as_key(viewer, Method::GET, "/admin/shipping-options", None).await.expect(200);
    app.as_key(viewer, Method::GET, &path, None).await.expect(200);
    let body = json!({"name": "Mine", "region_id": pt, "price": eur(1)});
    app.as_key(viewer, Method::POST, "/admin/shipping-options", Some(body)).await.problem(403, "forbidden");
    app.as_key(viewer, Method::PATCH, &path, Some(json!({"name": "Mine"}))).await.problem(403, "forbidden");
    app.as_key(viewer, Method::DELETE, &path, None).await.problem(403, "forbidden");
    assert_eq!(app.admin_get(&path).await.expect(200), o);
    // An editor may write them.
    let key = app.admin_post("/admin/api-keys", json!({"name": "merch", "role": "editor"})).await.expect(201);
    let editor = key["token"].as_str().unwrap();
    app.as_key(editor, Method::PATCH, &path, Some(json!({"name": "Standard 48h"}))).await.expect(200);
});
