//! Webhooks across kill -9 (docs/webhooks.md): the real binary places orders and sends their
//! `order.placed` deliveries to a slow receiver on loopback while it is killed with SIGKILL
//! and restarted, several rounds. Afterwards every placed order has reached the receiver, each
//! under one `webhook-id` however often it was sent again, nothing was delivered that is not a
//! placed order, and no delivery is left pending.
//!
//! A delivery cut off by the kill (the receiver drops a request whose connection closed before
//! it answered) is sent again by the next process once its lease ends: the test runs with a
//! 2 s lease (`BACKROOM_WEBHOOK_LEASE`) so that it does not wait the default minute.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use backroom_db::Db;
use rand::Rng;
use serde_json::{Value, json};

const TOKEN: &str = "webhook-crash-admin-token-0123456789";
const ROUNDS: usize = 6;
const CLIENTS: usize = 4;

fn start(dir: &std::path::Path, db_url: &str) -> (Child, String) {
    let mut cmd = common::serve_under_load(dir, db_url, TOKEN);
    cmd.env("BACKROOM_WEBHOOKS_ALLOW_PRIVATE", "true")
        .env("BACKROOM_WEBHOOK_RETRY_DELAYS", "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms")
        .env("BACKROOM_WEBHOOK_LEASE", "2s");
    common::spawn_serve(&mut cmd)
}

/// What the receiver got: `webhook-id` → (the order in `data.id`, how many times).
type Seen = Arc<Mutex<HashMap<String, (String, usize)>>>;

async fn receive(State(seen): State<Seen>, headers: HeaderMap, body: String) -> StatusCode {
    // Slow enough that kills land in the middle of deliveries. A request whose sender died
    // meanwhile is dropped here with its connection, never recorded: a lost delivery.
    tokio::time::sleep(Duration::from_millis(25)).await;
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let order = body["data"]["id"].as_str().unwrap_or_default().to_owned();
    let mut seen = seen.lock().unwrap();
    seen.entry(id).or_insert((order, 0)).1 += 1;
    StatusCode::NO_CONTENT
}

async fn receiver() -> (Seen, String) {
    let seen = Seen::default();
    let app = axum::Router::new().route("/hooks", axum::routing::post(receive)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, url)
}

/// Places orders of one unit until the deadline or until the server dies.
async fn shopper(base: String, variant: String, deadline: Instant) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        let Ok(r) = http.post(format!("{base}/store/carts")).json(&json!({"currency": "EUR"})).send().await else {
            return;
        };
        let Ok(cart) = r.json::<Value>().await else { return };
        let Some(cart) = cart["id"].as_str().map(str::to_owned) else { return };
        let item = json!({"variant_id": variant, "quantity": 1});
        if http.post(format!("{base}/store/carts/{cart}/items")).json(&item).send().await.is_err() {
            return;
        }
        let body = json!({"email": "hooks@example.com",
            "shipping_address": {"name": "H", "line1": "L", "city": "X", "postal_code": "1", "country": "PT"},
            "payment": {"provider": "test", "token": "tok_visa"}});
        let sent = http
            .post(format!("{base}/store/carts/{cart}/checkout"))
            .header("Idempotency-Key", format!("{cart}-{n}"))
            .json(&body)
            .send()
            .await;
        if sent.is_err() {
            return;
        }
    }
}

async fn kill_9_during_deliveries(db_url: String) {
    let dir = tempfile::tempdir().unwrap();
    let (seen, hook_url) = receiver().await;
    let (mut child, mut base) = start(dir.path(), &db_url);
    let http = reqwest::Client::new();
    let product: Value = http
        .post(format!("{base}/admin/products"))
        .bearer_auth(TOKEN)
        .json(&json!({"title": "Hook", "handle": "hook", "status": "published",
            "variants": [{"sku": "HOOK-1", "prices": [{"amount": 1500, "currency": "EUR"}]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let variant = product["variants"][0]["id"].as_str().unwrap().to_owned();
    let r = http
        .put(format!("{base}/admin/variants/{variant}/stock"))
        .bearer_auth(TOKEN)
        .json(&json!({"on_hand": 100_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}/admin/webhooks"))
        .bearer_auth(TOKEN)
        .json(&json!({"url": hook_url, "event_types": ["order.placed"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    let started = Instant::now();
    for round in 0..ROUNDS {
        let kill_after = Duration::from_millis(rand::rng().random_range(300..900));
        let deadline = Instant::now() + Duration::from_secs(5);
        let tasks: Vec<_> =
            (0..CLIENTS).map(|_| tokio::spawn(shopper(base.clone(), variant.clone(), deadline))).collect();
        tokio::time::sleep(kill_after).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        (child, base) = start(dir.path(), &db_url);
        eprintln!("round {round}: killed after {kill_after:?}, {:?} since the start", started.elapsed());
    }

    // Recovery settles the orders whose checkout was cut off (grace 1 s), and the dispatcher
    // sends what is left once the dead processes' leases end.
    let db = Db::connect(&backroom_db::ConnectOptions::new(&db_url)).await.unwrap();
    let waited = Instant::now();
    // Far less than the default 60 s leases: a lease setting not honoured fails the test.
    let give_up = Instant::now() + Duration::from_secs(30);
    let (placed, pending) = loop {
        let placed: HashSet<String> =
            common::strings(&db, "SELECT id FROM orders WHERE status = 'placed'").await.into_iter().collect();
        let mut pending = common::strings(&db, "SELECT id FROM webhook_deliveries WHERE status <> 'delivered'").await;
        pending.extend(common::strings(&db, "SELECT id FROM orders WHERE status = 'pending_payment'").await);
        let received: HashSet<String> = seen.lock().unwrap().values().map(|(o, _)| o.clone()).collect();
        if (pending.is_empty() && placed.is_subset(&received)) || Instant::now() > give_up {
            break (placed, pending);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("settled {:?} after the last restart", waited.elapsed());
    assert!(pending.is_empty(), "deliveries not delivered, or orders not settled: {pending:?}");
    let seen = seen.lock().unwrap().clone();
    let received: HashSet<String> = seen.values().map(|(o, _)| o.clone()).collect();
    let missing: Vec<&String> = placed.difference(&received).collect();
    assert!(missing.is_empty(), "placed orders never delivered: {missing:?}");
    let extra: Vec<&String> = received.difference(&placed).collect();
    assert!(extra.is_empty(), "deliveries of orders that are not placed: {extra:?}");
    // One `webhook-id` per order: a delivery sent again keeps its id.
    let mut ids_of: HashMap<&str, usize> = HashMap::new();
    for (order, _) in seen.values() {
        *ids_of.entry(order).or_default() += 1;
    }
    assert!(ids_of.values().all(|n| *n == 1), "an order under several webhook-ids: {ids_of:?}");
    let again: usize = seen.values().map(|(_, n)| n - 1).sum();
    eprintln!(
        "{ROUNDS} rounds: {} orders placed, each delivered; {again} deliveries received more than once",
        placed.len()
    );
    assert!(!placed.is_empty(), "no order was placed: the test tested nothing");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_webhook_deliveries_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    kill_9_during_deliveries(backroom_db::sqlite_url_in(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_webhook_deliveries_on_postgres() {
    if let Some(pg) = backroom_db::testing::fresh_postgres().await {
        let url = pg.url().to_owned();
        kill_9_during_deliveries(url).await;
    }
}
