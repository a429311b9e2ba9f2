//! Crash test: the real binary under checkout load, killed with SIGKILL at random moments
//! and restarted, several rounds; then the promises are checked against the database:
//! no acknowledged order lost, nothing stuck in `pending_payment`, no capture without a placed
//! order (and at most one per order), stock conserved, an `order.placed` event per order.
//! Staff work alongside the shoppers: they refund placed orders a euro at a time (and send
//! earlier refund requests again with their keys) and fulfil their units, so the check also
//! covers the after-sale path: no acknowledged refund or fulfilment lost, no refund pending
//! after recovery, none made twice at the provider or made there without a record, the refund
//! totals adding up, and the fulfilled units gone from `on_hand` and `allocated`.
//!
//! Rounds: 20 on SQLite and 10 on PostgreSQL, or `BACKROOM_CRASH_ROUNDS` on each (the
//! 1,000-round soak in docs/benchmarks.md is this test with `BACKROOM_CRASH_ROUNDS=1000`).
//! Each round restocks a little, so that a long soak keeps selling out and restocking
//! instead of only answering "sold out".

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Child;
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
/// Staff members refunding and fulfilling while the shoppers buy.
const STAFF: usize = 2;

fn start(dir: &std::path::Path, db_url: &str) -> (Child, String) {
    common::spawn_serve(&mut common::serve_under_load(dir, db_url, TOKEN))
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
    /// The lines of the orders answered 201: (order, line id, quantity).
    lines: Vec<(String, String, i64)>,
}

/// What staff were told.
#[derive(Default)]
struct StaffAcks {
    /// Every refund request sent: its key and order (answered or not, so it can be sent again).
    sent: Vec<(String, String)>,
    /// Refund key → the refund id answered with 201.
    refunds: HashMap<String, String>,
    /// Refund requests refused because the order has no more to give back.
    exceeded: usize,
    /// Fulfilment ids answered with 201.
    fulfilments: HashSet<String>,
    /// Fulfilments refused because the line had no units left (a lost answer's units).
    fulfil_refused: usize,
}

/// One staff member: refunds 1 EUR of an acknowledged order with a new key, sends an earlier
/// refund request again, or fulfils one unit of a line, until the deadline or the server dies.
async fn staff(base: String, acks: Arc<Mutex<Acks>>, staff: Arc<Mutex<StaffAcks>>, round: usize, deadline: Instant) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let (pick, replay) = {
            let a = acks.lock().unwrap();
            let s = staff.lock().unwrap();
            let mut rng = rand::rng();
            if a.lines.is_empty() {
                (None, None)
            } else {
                let line = a.lines[rng.random_range(0..a.lines.len())].clone();
                let replay = (!s.sent.is_empty() && rng.random_range(0..4) == 0)
                    .then(|| s.sent[rng.random_range(0..s.sent.len())].clone());
                (Some((line, rng.random_range(0..3) == 0)), replay)
            }
        };
        let Some(((order, item, _qty), fulfil)) = pick else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if fulfil && replay.is_none() {
            let Some((status, body)) = answer(
                http.post(format!("{base}/admin/orders/{order}/fulfillments"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"items": [{"item_id": item, "quantity": 1}]})),
            )
            .await
            else {
                return;
            };
            let mut s = staff.lock().unwrap();
            match status {
                201 => {
                    s.fulfilments.insert(body["id"].as_str().unwrap().to_owned());
                }
                // Every unit of the line left already.
                422 => s.fulfil_refused += 1,
                other => panic!("unexpected fulfilment answer {other}: {body}"),
            }
            continue;
        }
        let (key, order) = replay.unwrap_or_else(|| (format!("crash-refund-{round}-{n}-{order}"), order));
        staff.lock().unwrap().sent.push((key.clone(), order.clone()));
        let Some((status, body)) = answer(
            http.post(format!("{base}/admin/orders/{order}/refunds"))
                .bearer_auth(TOKEN)
                .header("Idempotency-Key", &key)
                .json(&json!({"amount": {"amount": 100, "currency": "EUR"}, "reason": "crash test"})),
        )
        .await
        else {
            return;
        };
        let mut s = staff.lock().unwrap();
        match status {
            201 => {
                let id = body["id"].as_str().unwrap().to_owned();
                if let Some(first) = s.refunds.get(&key) {
                    assert_eq!(first, &id, "the same key answered another refund");
                }
                s.refunds.insert(key, id);
            }
            422 if body["code"] == "refund_exceeds_captured" => {
                assert!(!s.refunds.contains_key(&key), "an answered refund key was refused later: {body}");
                s.exceeded += 1;
            }
            other => panic!("unexpected refund answer {other}: {body}"),
        }
    }
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
        let Some((status, body)) =
            answer(http.post(format!("{base}/store/carts/{cart}/checkout")).header("Idempotency-Key", key).json(&body))
                .await
        else {
            return;
        };
        let mut a = acks.lock().unwrap();
        match status {
            201 => {
                let id = body["id"].as_str().unwrap().to_owned();
                for line in body["items"].as_array().unwrap() {
                    let item = line["id"].as_str().unwrap().to_owned();
                    a.lines.push((id.clone(), item, line["quantity"].as_i64().unwrap()));
                }
                a.placed.insert(id);
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

/// Sends a request: its status and JSON body, or `None` when the server died meanwhile.
async fn answer(request: reqwest::RequestBuilder) -> Option<(u16, Value)> {
    let r = request.send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.json::<Value>().await.ok()?))
}

async fn scalar(db: &Db, sql: &'static str) -> i64 {
    match db.pools() {
        Pools::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_one(reader).await.unwrap(),
        Pools::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
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
    let staff_acks = Arc::new(Mutex::new(StaffAcks::default()));
    let mut base = base;
    // What was counted in: fulfilments take units out of `on_hand`, so a restock adds to the
    // level read back rather than setting a figure of its own.
    let mut counted_in = ON_HAND;
    for round in 0..rounds {
        if round > 0 {
            counted_in += RESTOCK;
            for v in &variant_ids {
                let level: Value = http
                    .get(format!("{base}/admin/variants/{v}/stock"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let on_hand = level["on_hand"].as_i64().unwrap() + RESTOCK;
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
        let mut tasks: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(client(base.clone(), variant_ids.clone(), acks.clone(), deadline)))
            .collect();
        tasks.extend(
            (0..STAFF).map(|_| tokio::spawn(staff(base.clone(), acks.clone(), staff_acks.clone(), round, deadline))),
        );
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
    for (sql, what) in [
        ("SELECT COUNT(*) FROM orders WHERE status = 'pending_payment'", "orders stuck in pending_payment"),
        ("SELECT COUNT(*) FROM order_refunds WHERE status = 'pending'", "refunds still pending"),
    ] {
        let mut left = i64::MAX;
        for _ in 0..100 {
            left = scalar(&db, sql).await;
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(left, 0, "{what} after recovery");
    }

    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let placed: HashSet<String> =
        common::strings(&db, "SELECT id FROM orders WHERE status = 'placed'").await.into_iter().collect();
    let all: HashSet<String> = common::strings(&db, "SELECT id FROM orders").await.into_iter().collect();
    for id in &acks.placed {
        assert!(placed.contains(id), "acknowledged order {id} is not placed");
    }
    for id in &acks.pending {
        assert!(all.contains(id), "acknowledged pending order {id} is missing");
    }
    // Every capture belongs to exactly one placed order, and every placed order has one.
    // (A charge refunded in full says `refunded` at the provider.)
    let captured_keys = common::strings(
        &db,
        "SELECT idempotency_key FROM test_provider_charges WHERE status IN ('captured', 'refunded')",
    )
    .await;
    let placed_attempts: HashSet<String> = common::strings(
        &db,
        "SELECT a.id FROM payment_attempts a JOIN orders o ON o.id = a.order_id \
         WHERE o.status = 'placed' AND a.status IN ('captured', 'refunded')",
    )
    .await
    .into_iter()
    .collect();
    assert_eq!(captured_keys.len(), placed_attempts.len(), "captures = placed orders");
    for k in &captured_keys {
        assert!(placed_attempts.contains(k), "capture {k} without a placed order");
    }
    assert_eq!(placed_attempts.len(), placed.len(), "every placed order has one captured attempt");
    // Refunds: every one answered is there and succeeded; each succeeded refund was made once
    // at the provider with its amount, and the provider made none without a record; the
    // order's totals are the sums of its refunds and never pass what it cost.
    let staff_acks = std::mem::take(&mut *staff_acks.lock().unwrap());
    let succeeded: HashSet<String> =
        common::strings(&db, "SELECT id FROM order_refunds WHERE status = 'succeeded'").await.into_iter().collect();
    for (key, id) in &staff_acks.refunds {
        assert!(succeeded.contains(id), "acknowledged refund {id} ({key}) did not succeed");
    }
    let checks: [(&str, &'static str); 5] = [
        (
            "succeeded refunds without exactly one provider refund of their amount",
            "SELECT COUNT(*) FROM order_refunds r WHERE r.status = 'succeeded' AND 1 <> \
             (SELECT COUNT(*) FROM test_provider_refunds p WHERE p.idempotency_key = r.id AND p.amount = r.amount)",
        ),
        (
            "provider refunds without a succeeded refund on the order",
            "SELECT COUNT(*) FROM test_provider_refunds p WHERE NOT EXISTS \
             (SELECT 1 FROM order_refunds r WHERE r.id = p.idempotency_key AND r.status = 'succeeded')",
        ),
        (
            "orders whose refunded_total is not the sum of their succeeded refunds",
            "SELECT COUNT(*) FROM orders o WHERE o.refunded_total <> \
             (SELECT COALESCE(SUM(r.amount), 0) FROM order_refunds r WHERE r.order_id = o.id AND r.status = 'succeeded')",
        ),
        (
            "orders whose refunds_held is not the sum of their refunds that did not fail",
            "SELECT COUNT(*) FROM orders o WHERE o.refunds_held <> \
             (SELECT COALESCE(SUM(r.amount), 0) FROM order_refunds r WHERE r.order_id = o.id AND r.status <> 'failed')",
        ),
        ("orders refunded beyond their total", "SELECT COUNT(*) FROM orders WHERE refunded_total > total"),
    ];
    for (what, sql) in checks {
        assert_eq!(scalar(&db, sql).await, 0, "{what}");
    }
    let refunded = scalar(&db, "SELECT COALESCE(CAST(SUM(refunded_total) AS BIGINT), 0) FROM orders").await;
    // Fulfilments: every one answered is there; its units left `on_hand` and `allocated`.
    let fulfilments: HashSet<String> =
        common::strings(&db, "SELECT id FROM order_fulfillments").await.into_iter().collect();
    for id in &staff_acks.fulfilments {
        assert!(fulfilments.contains(id), "acknowledged fulfilment {id} is missing");
    }
    let fulfilled: HashMap<String, i64> =
        pairs(&db, "SELECT variant_id, CAST(SUM(quantity) AS BIGINT) FROM order_fulfillment_items GROUP BY variant_id")
            .await
            .into_iter()
            .collect();
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
        let out = fulfilled.get(v).copied().unwrap_or(0);
        assert_eq!(levels[v], counted_in - out, "on_hand of {v}: counted in less fulfilled");
        assert_eq!(reserved[v], 0, "nothing stays reserved for {v}");
        assert_eq!(allocated[v], sold.get(v).copied().unwrap_or(0) - out, "allocated = sold less fulfilled for {v}");
        assert!(allocated[v] <= levels[v], "no oversell of {v}");
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
    eprintln!(
        "staff: {} refund requests sent, {} answered 201, {} refunds succeeded ({refunded} cents), {} refused as \
         exceeding; {} fulfilments answered, {} in the database, {} refused",
        staff_acks.sent.len(),
        staff_acks.refunds.len(),
        succeeded.len(),
        staff_acks.exceeded,
        staff_acks.fulfilments.len(),
        fulfilments.len(),
        staff_acks.fulfil_refused
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
