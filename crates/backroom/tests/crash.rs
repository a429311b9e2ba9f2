//! Crash test: the real binary under checkout load, killed with SIGKILL at random moments
//! and restarted, several rounds; then the promises are checked against the database:
//! no acknowledged order lost, nothing stuck in `pending_payment`, no capture without a placed
//! order (and at most one per order), stock conserved, an `order.placed` event per order.
//!
//! Rounds: 20 on SQLite and 10 on PostgreSQL, or `BACKROOM_CRASH_ROUNDS` on each (the
//! 1,000-round soak in docs/benchmarks.md is this test with `BACKROOM_CRASH_ROUNDS=1000`).
//! Each round restocks a little, so that a long soak keeps selling out and restocking
//! instead of only answering "sold out".

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backroom_db::{Db, Pools};
use rand::Rng;
use serde_json::{Value, json};

const TOKEN: &str = "crash-test-admin-token-0123456789";
const VARIANTS: usize = 3;
const ON_HAND: i64 = 40;
/// Units added to every variant at the start of each round.
const RESTOCK: i64 = 8;
const CLIENTS: usize = 8;

fn start(dir: &std::path::Path, db_url: &str) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backroom"));
    cmd.current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", db_url])
        .env("BACKROOM_ADMIN_TOKEN", TOKEN)
        .env("BACKROOM_PAYMENT_PROVIDERS", "test")
        .env("BACKROOM_RECOVERY_INTERVAL", "200ms")
        .env("BACKROOM_RECOVERY_GRACE", "1s")
        .env("BACKROOM_LOG", "error")
        // A load test: every client comes from this one address.
        .env("BACKROOM_RATE_LIMITS", "off")
        // One e-mail from one address, a tenth declined on purpose: risk scoring would block
        // it after five declines, which is not what this test is about.
        .env("BACKROOM_RISK", "off")
        .env_remove("BACKROOM_CONFIG")
        .stderr(Stdio::null());
    common::spawn_serve(&mut cmd)
}

/// What clients were told.
#[derive(Default)]
struct Acks {
    /// 201: the order is placed.
    placed: HashSet<String>,
    /// 202: the order exists, payment unknown.
    pending: HashSet<String>,
    declined: usize,
    sold_out: usize,
}

async fn client(base: String, variants: Vec<String>, acks: Arc<Mutex<Acks>>, deadline: Instant) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let (variant, qty, token) = {
            let mut rng = rand::rng();
            let token = match rng.random_range(0..10) {
                0 => "tok_declined",
                1 => "tok_timeout",
                _ => "tok_visa",
            };
            (variants[rng.random_range(0..variants.len())].clone(), rng.random_range(1..=2), token)
        };
        let Ok(r) = http.post(format!("{base}/store/carts")).json(&json!({"currency": "EUR"})).send().await else {
            return;
        };
        let Ok(cart) = r.json::<Value>().await else { return };
        let Some(cart) = cart["id"].as_str().map(str::to_owned) else { return };
        let Ok(r) = http
            .post(format!("{base}/store/carts/{cart}/items"))
            .json(&json!({"variant_id": variant, "quantity": qty}))
            .send()
            .await
        else {
            return;
        };
        if r.status() != 200 {
            continue; // sold out already
        }
        let key = format!("{cart}-{n}");
        let body = json!({"email": "crash@example.com",
            "shipping_address": {"name": "C", "line1": "L", "city": "X", "postal_code": "1", "country": "PT"},
            "payment": {"provider": "test", "token": token}});
        let Ok(r) = http
            .post(format!("{base}/store/carts/{cart}/checkout"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
        else {
            return;
        };
        let status = r.status().as_u16();
        let Ok(body) = r.json::<Value>().await else { return };
        let mut a = acks.lock().unwrap();
        match status {
            201 => {
                a.placed.insert(body["id"].as_str().unwrap().to_owned());
            }
            202 => {
                a.pending.insert(body["id"].as_str().unwrap().to_owned());
            }
            402 => a.declined += 1,
            409 => a.sold_out += 1,
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
}

async fn scalar(db: &Db, sql: &'static str) -> i64 {
    match db.pools() {
        Pools::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_one(reader).await.unwrap(),
        Pools::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

async fn strings(db: &Db, sql: &'static str) -> Vec<String> {
    match db.pools() {
        Pools::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_all(reader).await.unwrap(),
        Pools::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
    }
}

async fn pairs(db: &Db, sql: &'static str) -> Vec<(String, i64)> {
    match db.pools() {
        Pools::Sqlite { reader, .. } => sqlx::query_as(sql).fetch_all(reader).await.unwrap(),
        Pools::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
    }
}

async fn crash_rounds(db_url: String, default_rounds: usize) {
    let rounds: usize =
        std::env::var("BACKROOM_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(default_rounds);
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = start(dir.path(), &db_url);
    let http = reqwest::Client::new();
    let variants: Vec<Value> = (0..VARIANTS)
        .map(|i| json!({"sku": format!("CRASH-{i}"), "prices": [{"amount": 1000 + i as i64, "currency": "EUR"}]}))
        .collect();
    let product: Value = http
        .post(format!("{base}/admin/products"))
        .bearer_auth(TOKEN)
        .json(&json!({"title": "Crash", "handle": "crash", "status": "published", "variants": variants}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let variant_ids: Vec<String> =
        product["variants"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_owned()).collect();
    for v in &variant_ids {
        let r = http
            .put(format!("{base}/admin/variants/{v}/stock"))
            .bearer_auth(TOKEN)
            .json(&json!({"on_hand": ON_HAND}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let acks = Arc::new(Mutex::new(Acks::default()));
    let mut base = base;
    let mut on_hand = ON_HAND;
    for round in 0..rounds {
        if round > 0 {
            on_hand += RESTOCK;
            for v in &variant_ids {
                let r = http
                    .put(format!("{base}/admin/variants/{v}/stock"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"on_hand": on_hand}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "restock {v}");
            }
        }
        let kill_after = Duration::from_millis(rand::rng().random_range(150..700));
        let deadline = Instant::now() + Duration::from_secs(5);
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(client(base.clone(), variant_ids.clone(), acks.clone(), deadline)))
            .collect();
        tokio::time::sleep(kill_after).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        let restarted = start(dir.path(), &db_url);
        child = restarted.0;
        base = restarted.1;
        eprintln!("round {round}: killed after {kill_after:?}");
    }

    // Let recovery settle everything (grace 1 s, interval 200 ms).
    let db = Db::connect(&backroom_db::ConnectOptions::new(&db_url)).await.unwrap();
    let mut stuck = i64::MAX;
    for _ in 0..100 {
        stuck = scalar(&db, "SELECT COUNT(*) FROM orders WHERE status = 'pending_payment'").await;
        if stuck == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stuck, 0, "orders stuck in pending_payment after recovery");

    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let placed: HashSet<String> =
        strings(&db, "SELECT id FROM orders WHERE status = 'placed'").await.into_iter().collect();
    let all: HashSet<String> = strings(&db, "SELECT id FROM orders").await.into_iter().collect();
    for id in &acks.placed {
        assert!(placed.contains(id), "acknowledged order {id} is not placed");
    }
    for id in &acks.pending {
        assert!(all.contains(id), "acknowledged pending order {id} is missing");
    }
    // Every capture belongs to exactly one placed order, and every placed order has one.
    let captured_keys =
        strings(&db, "SELECT idempotency_key FROM test_provider_charges WHERE status = 'captured'").await;
    let placed_attempts: HashSet<String> = strings(
        &db,
        "SELECT a.id FROM payment_attempts a JOIN orders o ON o.id = a.order_id WHERE o.status = 'placed' AND a.status = 'captured'",
    )
    .await
    .into_iter()
    .collect();
    assert_eq!(captured_keys.len(), placed_attempts.len(), "captures = placed orders");
    for k in &captured_keys {
        assert!(placed_attempts.contains(k), "capture {k} without a placed order");
    }
    assert_eq!(placed_attempts.len(), placed.len(), "every placed order has one captured attempt");
    // Stock adds up.
    let levels: HashMap<String, i64> =
        pairs(&db, "SELECT variant_id, on_hand FROM stock_levels").await.into_iter().collect();
    let reserved: HashMap<String, i64> =
        pairs(&db, "SELECT variant_id, reserved FROM stock_levels").await.into_iter().collect();
    let allocated: HashMap<String, i64> =
        pairs(&db, "SELECT variant_id, allocated FROM stock_levels").await.into_iter().collect();
    let sold: HashMap<String, i64> = pairs(
        &db,
        "SELECT l.variant_id, CAST(SUM(l.quantity) AS BIGINT) FROM order_lines l JOIN orders o ON o.id = l.order_id \
         WHERE o.status = 'placed' GROUP BY l.variant_id",
    )
    .await
    .into_iter()
    .collect();
    for v in &variant_ids {
        assert_eq!(levels[v], on_hand, "on_hand of {v}");
        assert_eq!(reserved[v], 0, "nothing stays reserved for {v}");
        assert_eq!(allocated[v], sold.get(v).copied().unwrap_or(0), "allocated = sold for {v}");
        assert!(allocated[v] <= on_hand, "no oversell of {v}");
    }
    let events = backroom_db::outbox::list(&db, "order.placed").await.unwrap();
    let with_event: HashSet<String> = events
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.payload).unwrap()["order_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(with_event, placed, "an order.placed event for every placed order");
    eprintln!(
        "{rounds} rounds: {} orders placed ({} acknowledged 201, {} answered 202), {} declined, {} sold out, {} captures",
        placed.len(),
        acks.placed.len(),
        acks.pending.len(),
        acks.declined,
        acks.sold_out,
        captured_keys.len()
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_checkout_load_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    crash_rounds(backroom_db::sqlite_url_in(dir.path()), 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_checkout_load_on_postgres() {
    if let Some(pg) = backroom_db::testing::fresh_postgres().await {
        let url = pg.url().to_owned();
        crash_rounds(url, 10).await;
    }
}
