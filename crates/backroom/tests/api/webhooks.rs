//! Outgoing webhooks: endpoints, the SSRF rule, and deliveries checked by an independent
//! implementation of the Standard Webhooks specification.
//!
//! The receiver is scripts/webhook_receiver.py, started per test on a free loopback port with
//! the test virtualenv's Python (`BACKROOM_TEST_PYTHON`, else
//! `target/schemathesis-venv/bin/python`, which scripts/localstripe.sh creates with
//! `standardwebhooks` in it). It verifies every delivery with `standardwebhooks`, the reference
//! Python library. Without that Python the delivery tests fail under CI and are skipped,
//! saying so, elsewhere.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::both;
use crate::support::*;

/// The receiver process; it stops when this is dropped (its standard input closes).
struct Receiver {
    port: u16,
    _child: tokio::process::Child,
    client: reqwest::Client,
}

fn python() -> Option<String> {
    let python = std::env::var("BACKROOM_TEST_PYTHON").ok().unwrap_or_else(|| {
        let target = std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| format!("{}/../../target", env!("CARGO_MANIFEST_DIR")));
        format!("{target}/schemathesis-venv/bin/python")
    });
    let ok = std::process::Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no Python with standardwebhooks at {python}: run scripts/localstripe.sh install (or set BACKROOM_TEST_PYTHON)"
    );
    eprintln!("SKIPPED: no Python with standardwebhooks at {python}; run scripts/localstripe.sh install");
    None
}

impl Receiver {
    async fn start() -> Option<Receiver> {
        let python = python()?;
        let script = format!("{}/../../scripts/webhook_receiver.py", env!("CARGO_MANIFEST_DIR"));
        let mut child = tokio::process::Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the receiver");
        let stdout = child.stdout.take().expect("its stdout");
        let mut line = String::new();
        tokio::io::BufReader::new(stdout).read_line(&mut line).await.expect("its port");
        let port = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()).expect("PORT <n>");
        Some(Receiver { port, _child: child, client: reqwest::Client::new() })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn config(&self, body: Value) {
        let res = self.client.post(self.url("/_config")).json(&body).send().await.expect("configure the receiver");
        assert_eq!(res.status(), 204);
    }

    async fn received(&self) -> Vec<Value> {
        self.client.get(self.url("/_received")).send().await.unwrap().json().await.unwrap()
    }

    /// Waits (up to 60 s) until `done` holds for what was received.
    async fn until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        for _ in 0..600 {
            let r = self.received().await;
            if done(&r) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = self.received().await;
        panic!(
            "the receiver never saw {what}; it saw {} requests: {:?}",
            r.len(),
            r.iter().take(5).collect::<Vec<_>>()
        );
    }
}

/// The app with private addresses allowed (the receiver is on loopback) and fast retries.
fn fast(s: &mut backroom::config::Settings) {
    s.webhooks_allow_private = true;
    s.webhook_retry_delays = vec![Duration::from_millis(200), Duration::from_millis(200), Duration::from_millis(200)];
}

async fn endpoint(app: &TestApp, url: &str, types: Value) -> Value {
    app.admin_post("/admin/webhooks", json!({"url": url, "event_types": types})).await.expect(201)
}

/// A placed order of one unit; answers its id.
async fn place(app: &TestApp, variant: &str, key: &str) -> String {
    let cart = app.cart_with("EUR", &[(variant, 1)]).await;
    let order = app.send(app.checkout_req(&cart, Some(key), "tok_visa")).await.expect(201);
    order["id"].as_str().unwrap().to_owned()
}

fn verified_of<'a>(received: &'a [Value], kind: &str) -> Vec<&'a Value> {
    received.iter().filter(|r| r["verified"] == true && r["type"] == kind && r["answered"] == 204).collect()
}

both!(webhook_urls_on_private_addresses_are_refused, |app: TestApp| async move {
    for url in [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://LOCALHOST./hook",
        "http://runsc/hook",
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "http://192.168.0.1/hook",
        "http://100.64.0.1/hook",
        "http://2130706433/hook",
        "http://0x7f.1/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fd00:ec2::254]/hook",
        "http://[fc00::1]/hook",
        "http://224.0.0.1/hook",
    ] {
        let p = app
            .admin_post("/admin/webhooks", json!({"url": url, "event_types": ["order.placed"]}))
            .await
            .problem(422, "webhook_url_forbidden");
        assert!(p["detail"].as_str().unwrap().contains("BACKROOM_WEBHOOKS_ALLOW_PRIVATE"), "{url}: {p}");
    }
    // A host that does not resolve, and malformed URLs: the field is named.
    for url in ["http://no-such-host.invalid/hook", "ftp://example.com/", "not a url", "", "http://u:p@example.com/"] {
        let p = app
            .admin_post("/admin/webhooks", json!({"url": url, "event_types": ["*"]}))
            .await
            .problem(422, "validation_failed");
        assert_eq!(p["errors"][0]["field"], "url", "{url}: {p}");
    }
    // A changed URL is checked the same way.
    let list = app.admin_get("/admin/webhooks").await.expect(200);
    assert_eq!(list["items"], json!([]), "nothing was created");
    let p = app.admin_patch("/admin/webhooks/wh_none", json!({"url": "http://127.0.0.1/"})).await;
    p.problem(404, "not_found");
});

both!(
    metadata_addresses_stay_refused_when_private_ones_are_allowed,
    settings = |s: &mut backroom::config::Settings| s.webhooks_allow_private = true,
    |app: TestApp| async move {
        for url in ["http://169.254.169.254/latest", "http://[fd00:ec2::254]/", "http://[::ffff:169.254.169.254]/"] {
            app.admin_post("/admin/webhooks", json!({"url": url, "event_types": ["*"]}))
                .await
                .problem(422, "webhook_url_forbidden");
        }
        // Loopback is allowed here, in any form.
        for url in ["http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://2130706433:9/hook"] {
            let e = endpoint(&app, url, json!(["*"])).await;
            assert!(e["url"].as_str().unwrap().starts_with("http://"), "{e}");
        }
        let e = endpoint(&app, "http://2130706433:9/decimal", json!(["*"])).await;
        assert_eq!(e["url"], "http://127.0.0.1:9/decimal", "the URL is kept as it is called");
    }
);

both!(
    endpoints_are_created_read_changed_rotated_and_deleted,
    settings = |s: &mut backroom::config::Settings| s.webhooks_allow_private = true,
    |app: TestApp| async move {
        let created = app
            .admin_post(
                "/admin/webhooks",
                json!({"url": "http://127.0.0.1:9/h", "event_types": ["order.placed", "order.canceled"], "description": "ERP"}),
            )
            .await
            .expect(201);
        let id = created["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("wh_"), "{created}");
        let secret = created["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("whsec_") && secret.len() > 40, "{created}");
        assert_eq!(created["enabled"], true);
        assert_eq!(created["event_types"], json!(["order.placed", "order.canceled"]));

        // The secret is shown nowhere else, and is not stored in clear.
        let got = app.admin_get(&format!("/admin/webhooks/{id}")).await.expect(200);
        assert!(got.get("secret").is_none(), "{got}");
        let list = app.admin_get("/admin/webhooks?limit=1").await.expect(200);
        assert_eq!(list["items"][0]["id"], id.as_str());
        assert!(!list.to_string().contains("whsec_"), "{list}");
        let stored = app.stored_bytes().await;
        let key_part = secret.trim_start_matches("whsec_");
        assert!(!stored.windows(key_part.len()).any(|w| w == key_part.as_bytes()), "the secret is stored in clear");

        // Changes.
        let changed = app
            .admin_patch(
                &format!("/admin/webhooks/{id}"),
                json!({"event_types": ["*"], "description": null, "enabled": false}),
            )
            .await
            .expect(200);
        assert_eq!(changed["event_types"], json!(["*"]));
        assert_eq!(changed["description"], Value::Null);
        assert_eq!(changed["enabled"], false);
        assert_eq!(changed["disabled_reason"], "disabled by staff");
        let again = app.admin_patch(&format!("/admin/webhooks/{id}"), json!({"enabled": true})).await.expect(200);
        assert_eq!(again["enabled"], true);
        assert_eq!(again["disabled_reason"], Value::Null);

        // Rotation answers a new secret.
        let rotated = app.admin_post(&format!("/admin/webhooks/{id}/rotate-secret"), json!({})).await.expect(200);
        let new_secret = rotated["secret"].as_str().unwrap();
        assert!(new_secret.starts_with("whsec_") && new_secret != secret, "{rotated}");

        // Bad input: problem+json with stable codes, never 500.
        let bad = [
            (
                json!({"url": "http://127.0.0.1:9/h", "event_types": ["order.placed", "order.teleported"]}),
                "event_types[1]",
            ),
            (json!({"url": "http://127.0.0.1:9/h", "event_types": []}), "event_types"),
            (json!({"url": "http://127.0.0.1:9/h", "event_types": ["*", "order.placed"]}), "event_types"),
            (json!({"url": "http://127.0.0.1:9/h", "event_types": ["order.placed", "order.placed"]}), "event_types[1]"),
            (
                json!({"url": "http://127.0.0.1:9/h", "event_types": ["*"], "description": "x".repeat(501)}),
                "description",
            ),
            (json!({"url": "http://127.0.0.1:9/h", "event_types": ["*"], "colour": "red"}), "colour"),
            (json!({"url": 5, "event_types": ["*"]}), "url"),
            (json!({"event_types": ["*"]}), "url"),
        ];
        for (body, field) in bad {
            let p = app.admin_post("/admin/webhooks", body.clone()).await.problem(422, "validation_failed");
            assert!(p["errors"].as_array().unwrap().iter().any(|e| e["field"] == field), "{body}: {p}");
        }
        let p = app
            .send(
                app.client
                    .post(app.url("/admin/webhooks"))
                    .bearer_auth(ADMIN_TOKEN)
                    .header("content-type", "application/json")
                    .body("{\"url\":"),
            )
            .await;
        assert_eq!(p.status, 400, "{}", p.body);
        app.admin_patch(&format!("/admin/webhooks/{id}"), json!({"event_types": ["nope"]}))
            .await
            .problem(422, "validation_failed");
        app.admin_get(&format!("/admin/webhooks/{id}/deliveries?limit=0")).await.problem(422, "validation_failed");
        app.admin_get(&format!("/admin/webhooks/{id}/deliveries?cursor=zzz")).await.problem(422, "validation_failed");
        app.admin_get("/admin/webhooks/wh_none/deliveries").await.problem(404, "not_found");
        app.admin_post(&format!("/admin/webhooks/{id}/deliveries/whd_none/retry"), json!({}))
            .await
            .problem(404, "not_found");
        app.admin_post("/admin/webhooks/wh_none/rotate-secret", json!({})).await.problem(404, "not_found");

        // Deleted: gone, and its secret's key with it.
        app.admin_delete(&format!("/admin/webhooks/{id}")).await.expect(204);
        app.admin_get(&format!("/admin/webhooks/{id}")).await.problem(404, "not_found");
        app.admin_delete(&format!("/admin/webhooks/{id}")).await.problem(404, "not_found");
    }
);

both!(orders_reach_the_receiver_signed_and_verified, settings = fast, |app: TestApp| async move {
    let Some(receiver) = Receiver::start().await else { return };
    let n = 100;
    let created = endpoint(&app, &receiver.url("/hooks"), json!(["order.placed"])).await;
    let id = created["id"].as_str().unwrap().to_owned();
    receiver.config(json!({"secret": created["secret"]})).await;
    // Another endpoint that wants other events gets none of these.
    let other = Receiver::start().await.unwrap();
    let quiet = endpoint(&app, &other.url("/quiet"), json!(["customer.created"])).await;
    other.config(json!({"secret": quiet["secret"]})).await;

    let product = app.product("hooked", &["HOOK-1"]).await;
    let variant = product["variants"][0]["id"].as_str().unwrap().to_owned();
    let mut orders = Vec::new();
    for i in 0..n {
        orders.push(place(&app, &variant, &format!("hook-{i}")).await);
    }
    let received =
        receiver.until(&format!("{n} verified order.placed"), |r| verified_of(r, "order.placed").len() >= n).await;
    assert!(received.iter().all(|r| r["verified"] == true), "{:?}", received.iter().find(|r| r["verified"] != true));
    let mut seen: Vec<String> = verified_of(&received, "order.placed")
        .iter()
        .map(|r| r["data_id"].as_str().expect("data.id").to_owned())
        .collect();
    seen.sort();
    seen.dedup();
    let mut expected = orders.clone();
    expected.sort();
    assert_eq!(seen, expected, "each order once, as data.id");
    // `data` is the order as the admin API shows it.
    let one = received.iter().find(|r| r["data_id"] == orders[0].as_str()).unwrap();
    let body: Value = serde_json::from_str(one["body"].as_str().unwrap()).unwrap();
    let admin = app.admin_get(&format!("/admin/orders/{}", orders[0])).await.expect(200);
    assert_eq!(body["type"], "order.placed");
    assert_eq!(body["data"]["id"], admin["id"]);
    assert_eq!(body["data"]["number"], admin["number"]);
    assert_eq!(body["data"]["total"], admin["total"]);
    assert_eq!(body["data"]["email"], admin["email"]);
    assert!(body["timestamp"].is_string());

    // The history shows them delivered at the first attempt.
    let page = app.admin_get(&format!("/admin/webhooks/{id}/deliveries?limit=100")).await.expect(200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), n.min(100));
    for d in items {
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["last_status_code"], 204, "{d}");
        assert_eq!(d["event_type"], "order.placed");
    }

    // A tampered body fails verification with the reference library.
    let original = &received[0];
    let mut tampered = reqwest::Client::new().post(receiver.url("/tampered"));
    for (k, v) in original["headers"].as_object().unwrap() {
        tampered = tampered.header(k.as_str(), v.as_str().unwrap());
    }
    let body = original["body"].as_str().unwrap().replacen("order.placed", "order.canceled", 1);
    tampered.body(body).send().await.unwrap();
    let after = receiver.until("the tampered request", |r| r.iter().any(|x| x["path"] == "/tampered")).await;
    let t = after.iter().find(|x| x["path"] == "/tampered").unwrap();
    assert_eq!(t["verified"], false, "{t}");

    assert!(other.received().await.is_empty(), "an endpoint got events it did not ask for");
});

both!(a_failing_receiver_gets_each_event_again_with_the_same_id, settings = fast, |app: TestApp| async move {
    let Some(receiver) = Receiver::start().await else { return };
    let created = endpoint(&app, &receiver.url("/flaky"), json!(["order.placed"])).await;
    let id = created["id"].as_str().unwrap().to_owned();
    receiver.config(json!({"secret": created["secret"], "fail_first": 2})).await;
    let product = app.product("flaky", &["FLAKY-1"]).await;
    let variant = product["variants"][0]["id"].as_str().unwrap().to_owned();
    let order = place(&app, &variant, "flaky-1").await;

    let received = receiver.until("order.placed answered 204", |r| !verified_of(r, "order.placed").is_empty()).await;
    let placed: Vec<&Value> = received.iter().filter(|r| r["type"] == "order.placed").collect();
    assert_eq!(placed.len(), 3, "two failures, then the success: {placed:?}");
    let webhook_id = placed[0]["webhook_id"].as_str().unwrap();
    assert!(webhook_id.starts_with("evt_"), "the event id");
    assert!(placed.iter().all(|r| r["webhook_id"] == webhook_id && r["verified"] == true), "{placed:?}");
    assert_eq!(placed.iter().map(|r| r["answered"].as_i64().unwrap()).collect::<Vec<_>>(), vec![500, 500, 204]);
    assert!(placed.iter().all(|r| r["data_id"] == order.as_str()));

    let page = app
        .admin_get_until(&format!("/admin/webhooks/{id}/deliveries"), |p| {
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["event_type"] == "order.placed" && d["status"] == "delivered")
        })
        .await;
    let d = page["items"].as_array().unwrap().iter().find(|d| d["event_type"] == "order.placed").unwrap();
    assert_eq!(d["attempts"], 3, "{d}");
    assert_eq!(d["event_id"], webhook_id);

    // A delivery sent again by hand keeps its id.
    let retried = app
        .admin_post(&format!("/admin/webhooks/{id}/deliveries/{}/retry", d["id"].as_str().unwrap()), json!({}))
        .await
        .expect(202);
    assert_eq!(retried["status"], "pending");
    let again = receiver.until("the retried delivery", |r| verified_of(r, "order.placed").len() >= 2).await;
    assert!(verified_of(&again, "order.placed").iter().all(|r| r["webhook_id"] == webhook_id));

    // After a rotation both secrets sign for a while: a receiver that knows either verifies.
    let rotated = app.admin_post(&format!("/admin/webhooks/{id}/rotate-secret"), json!({})).await.expect(200);
    app.admin_post(&format!("/admin/webhooks/{id}/deliveries/{}/retry", d["id"].as_str().unwrap()), json!({}))
        .await
        .expect(202);
    let rotated_round =
        receiver.until("a delivery after rotation", |r| verified_of(r, "order.placed").len() >= 3).await;
    let last = verified_of(&rotated_round, "order.placed").pop().unwrap().clone();
    let signatures = last["headers"]["webhook-signature"].as_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    let only_new = Receiver::start().await.unwrap();
    only_new.config(json!({"secret": rotated["secret"]})).await;
    let mut replay = reqwest::Client::new().post(only_new.url("/replay"));
    for (k, v) in last["headers"].as_object().unwrap() {
        replay = replay.header(k.as_str(), v.as_str().unwrap());
    }
    replay.body(last["body"].as_str().unwrap().to_owned()).send().await.unwrap();
    let r = only_new.until("the replay", |r| !r.is_empty()).await;
    assert_eq!(r[0]["verified"], true, "the new secret alone verifies: {}", r[0]);
});

both!(
    redirects_are_not_followed,
    settings = |s: &mut backroom::config::Settings| {
        s.webhooks_allow_private = true;
        s.webhook_retry_delays = vec![Duration::from_millis(100)];
    },
    |app: TestApp| async move {
        let Some(receiver) = Receiver::start().await else { return };
        let created = endpoint(&app, &receiver.url("/redirect"), json!(["order.placed"])).await;
        let id = created["id"].as_str().unwrap().to_owned();
        receiver.config(json!({"secret": created["secret"]})).await;
        let product = app.product("redirected", &["REDIR-1"]).await;
        let variant = product["variants"][0]["id"].as_str().unwrap().to_owned();
        place(&app, &variant, "redirect-1").await;
        let page = app
            .admin_get_until(&format!("/admin/webhooks/{id}/deliveries"), |p| p["items"][0]["status"] == "failed")
            .await;
        let d = &page["items"][0];
        assert_eq!(d["attempts"], 2, "{d}");
        assert_eq!(d["last_status_code"], 302, "{d}");
        assert_eq!(d["next_attempt_at"], Value::Null, "{d}");
        let received = receiver.received().await;
        assert_eq!(received.iter().filter(|r| r["path"] == "/redirect").count(), 2, "{received:?}");
        assert!(received.iter().all(|r| r["path"] != "/redirected"), "the redirect was followed: {received:?}");
        let endpoint = app.admin_get(&format!("/admin/webhooks/{id}")).await.expect(200);
        assert!(endpoint["failing_since"].is_string(), "{endpoint}");
    }
);

both!(
    an_endpoint_failing_too_long_is_disabled,
    settings = |s: &mut backroom::config::Settings| {
        s.webhooks_allow_private = true;
        s.webhook_retry_delays = vec![Duration::from_millis(100), Duration::from_millis(100)];
        s.webhook_disable_after = Duration::from_millis(150);
    },
    |app: TestApp| async move {
        // Nothing listens on port 9 (discard): every attempt fails to connect.
        let dead = endpoint(&app, "http://127.0.0.1:9/dead", json!(["order.placed"])).await;
        let id = dead["id"].as_str().unwrap().to_owned();
        let product = app.product("dead", &["DEAD-1"]).await;
        let variant = product["variants"][0]["id"].as_str().unwrap().to_owned();
        place(&app, &variant, "dead-1").await;
        let disabled = app.admin_get_until(&format!("/admin/webhooks/{id}"), |e| e["enabled"] == false).await;
        assert!(disabled["disabled_reason"].as_str().unwrap().contains("failed since"), "{disabled}");
        let events = backroom_db::outbox::list(&app.db, "webhook_endpoint.disabled").await.unwrap();
        assert_eq!(events.len(), 1);
        assert!(events[0].payload.contains(&id), "{}", events[0].payload);
        // Enabled again, its failures are forgotten.
        let again = app.admin_patch(&format!("/admin/webhooks/{id}"), json!({"enabled": true})).await.expect(200);
        assert_eq!(again["failing_since"], Value::Null);
        // Its `data` (the endpoint, or the event's fields once the endpoint is deleted)
        // validates against the schema the catalog publishes (docs/events.md).
        let types = app.admin_get("/admin/event-types").await.expect(200);
        let schema =
            &types.as_array().unwrap().iter().find(|t| t["type"] == "webhook_endpoint.disabled").unwrap()["schema"];
        let validator = jsonschema::validator_for(schema).unwrap();
        let data = app.webhooks.data(&events[0].topic, &events[0].payload).await.unwrap();
        assert_eq!(data["id"], id.as_str());
        assert!(validator.is_valid(&data), "{data}");
        app.admin_delete(&format!("/admin/webhooks/{id}")).await.expect(204);
        let data = app.webhooks.data(&events[0].topic, &events[0].payload).await.unwrap();
        assert_eq!(data["endpoint_id"], id.as_str());
        assert!(validator.is_valid(&data), "{data}");
        assert!(!validator.is_valid(&json!({"endpoint_id": id})), "a payload without its fields passes");
    }
);

both!(a_delivery_claimed_by_a_worker_that_died_is_sent_after_its_lease, settings = fast, |app: TestApp| async move {
    let Some(receiver) = Receiver::start().await else { return };
    let product = app.product("leased", &["LEASE-1"]).await;
    let variant = product["variants"][0]["id"].as_str().unwrap().to_owned();
    // The order comes first: no endpoint yet, so no delivery of it is written.
    let order = place(&app, &variant, "lease-1").await;
    let created = endpoint(&app, &receiver.url("/leased"), json!(["order.placed"])).await;
    let endpoint_id = created["id"].as_str().unwrap().to_owned();
    receiver.config(json!({"secret": created["secret"]})).await;
    let event = backroom_db::outbox::list(&app.db, "order.placed").await.unwrap().pop().unwrap();
    // What a worker killed mid-send leaves behind: a delivery claimed (lease 1 s from now),
    // one attempt counted, no answer recorded.
    let now = backroom_kernel::now();
    let mut tx = app.db.begin().await.unwrap();
    backroom_db::sql::query(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, payload, event_created_at, status, \
         attempts, next_attempt_at, claimed_until, created_at, updated_at) \
         VALUES ('whd_leased', $1, $2, 'order.placed', $3, $4, 'pending', 1, $5, $6, $5, $5)",
    )
    .bind(endpoint_id.as_str())
    .bind(event.event_id.as_str())
    .bind(event.payload.as_str())
    .bind(event.created_at)
    .bind(now)
    .bind(now + chrono::Duration::seconds(1))
    .execute(&mut tx.conn())
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let started = std::time::Instant::now();
    let received = receiver.until("the leased delivery", |r| !verified_of(r, "order.placed").is_empty()).await;
    assert!(started.elapsed() >= Duration::from_millis(500), "sent before its lease ran out");
    let got = verified_of(&received, "order.placed")[0].clone();
    assert_eq!(got["webhook_id"], event.event_id.as_str());
    assert_eq!(got["data_id"], order.as_str());
    let page = app
        .admin_get_until(&format!("/admin/webhooks/{endpoint_id}/deliveries"), |p| {
            p["items"][0]["status"] == "delivered"
        })
        .await;
    assert_eq!(page["items"][0]["attempts"], 2, "{page}");
});
