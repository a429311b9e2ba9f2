//! `bench login-flood`: purchases alone, then the same purchases while a flood of
//! wrong-password logins hits the server, on a server with its rate limits on (as in
//! production). Reports checkout p99 with and without the flood, and how the flood was answered.
//!
//! Every purchase comes from its own client address and the flood from a few, all through
//! `X-Forwarded-For` from a trusted proxy (the bench), so the per-address limits treat them as
//! the separate clients they stand for: the shoppers stay under theirs, the flood does not.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::load::{self, LoadOptions, Report, Run, Server};

/// Addresses the flood comes from (TEST-NET-3, RFC 5737).
const FLOOD_ADDRESSES: usize = 8;

/// The client address of the `i`th purchase: one of 2²⁴ in 10.0.0.0/8.
fn shopper_address(i: u64) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

/// Runs the scenario: `flooders` login requests in flight during the second phase, at most
/// `rate` a second together (0: unbounded).
pub async fn login_flood(opts: &LoadOptions, flooders: usize, rate: u32) -> anyhow::Result<Report> {
    let mut env = opts.server_env();
    env.push(("BACKROOM_RATE_LIMITS", "on".into()));
    env.push(("BACKROOM_TRUSTED_PROXIES", "127.0.0.1".into()));
    let server = Server::start_with_env(opts, &env, |_| async { Ok(()) }).await?;
    load::progress_line("creating 100 products with stock and one customer");
    let variants = Arc::new(server.products(100, 100_000_000, "flood").await?);
    let victim = "flood.victim@example.com";
    let registered = server
        .client
        .post(server.url("/store/customers"))
        .header("X-Forwarded-For", "198.51.100.1")
        .json(&json!({"email": victim, "password": "correct horse battery staple",
                      "first_name": "Flood", "last_name": "Victim"}))
        .send()
        .await?;
    anyhow::ensure!(registered.status().as_u16() == 201, "registering the customer: {}", registered.status());

    let seconds = opts.seconds as f64;
    let next = Arc::new(AtomicU64::new(0));
    let alone = purchases("purchase, no flood", opts, &server, &variants, &next, seconds).await;

    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (client, url, stop) = (server.client.clone(), server.url("/store/auth/token"), stop.clone());
        tokio::spawn(async move { run_flood(client, url, stop, flooders.max(1), rate, victim).await })
    };
    let flooded = purchases("purchase, during the flood", opts, &server, &variants, &next, seconds).await;
    stop.store(true, Ordering::Relaxed);
    let flood = flood.await?;

    let ratio = flooded.checkout.p99_ms / alone.checkout.p99_ms.max(1e-9);
    let limited = flood.errors.get("429 rate_limited").copied().unwrap_or(0);
    let answered = flood.ok + flood.errors.values().sum::<usize>();
    let summary = format!(
        "summary: checkout p99 {:.1} ms alone, {:.1} ms during a flood of {:.0} wrong-password logins/s ({:.2}×; \
         the promise is at most 2×); {:.1}% of the flood answered 429 rate_limited; purchases {:.0}/s alone, {:.0}/s \
         during the flood",
        alone.checkout.p99_ms,
        flooded.checkout.p99_ms,
        flood.throughput_per_s,
        ratio,
        limited as f64 * 100.0 / answered.max(1) as f64,
        alone.purchase.throughput_per_s,
        flooded.purchase.throughput_per_s,
    );
    Ok(Report {
        scenario: format!(
            "login flood ({flooders} wrong-password logins in flight from {FLOOD_ADDRESSES} addresses, {})",
            if rate == 0 { "unbounded".to_owned() } else { format!("at most {rate}/s") }
        ),
        database: load::database_name(&server),
        baselines: server.baselines(opts.concurrency, (seconds / 2.0).max(1.0)).await?,
        runs: vec![alone.purchase, alone.checkout, flooded.purchase, flooded.checkout, flood],
        flash_sale: None,
        server_memory: None,
        server_cpu_ms_per_op: None,
        summary,
    })
}

/// One phase of purchases: the whole purchase, and its checkout request alone.
struct Phase {
    purchase: Run,
    checkout: Run,
}

async fn purchases(
    name: &str,
    opts: &LoadOptions,
    server: &Server,
    variants: &Arc<Vec<String>>,
    next: &Arc<AtomicU64>,
    seconds: f64,
) -> Phase {
    let checkout_lat: Arc<std::sync::Mutex<Vec<Duration>>> = Arc::default();
    let body = Arc::new(json!({"email": "buyer@example.com",
        "shipping_address": {"name": "Bench Buyer", "line1": "1 Load St", "city": "Porto", "postal_code": "4000", "country": "PT"},
        "payment": {"provider": "test", "token": "tok_visa"}}));
    let purchase = {
        let (client, base, variants, next, lat) =
            (server.client.clone(), server.base.clone(), variants.clone(), next.clone(), checkout_lat.clone());
        load::drive(name, opts.load(), seconds, None, move |_| {
            let (client, base, variants, lat, body) =
                (client.clone(), base.clone(), variants.clone(), lat.clone(), body.clone());
            let i = next.fetch_add(1, Ordering::Relaxed);
            async move {
                let from = shopper_address(i);
                let variant = &variants[i as usize % variants.len()];
                let (_, cart) = load::status_of(
                    client
                        .post(format!("{base}/store/carts"))
                        .header("X-Forwarded-For", &from)
                        .json(&json!({"currency": "EUR"})),
                )
                .await?;
                let cart = cart["id"].as_str().ok_or("no cart id")?.to_owned();
                load::status_of(
                    client
                        .post(format!("{base}/store/carts/{cart}/items"))
                        .header("X-Forwarded-For", &from)
                        .json(&json!({"variant_id": variant, "quantity": 1})),
                )
                .await?;
                let t0 = Instant::now();
                let (status, _) = load::status_of(
                    client
                        .post(format!("{base}/store/carts/{cart}/checkout"))
                        .header("X-Forwarded-For", &from)
                        .header("Idempotency-Key", format!("flood-{i}"))
                        .json(&*body),
                )
                .await?;
                lat.lock().expect("latencies").push(t0.elapsed());
                if status != 201 { Err(format!("{status} not placed")) } else { Ok(()) }
            }
        })
        .await
    };
    let lat = std::mem::take(&mut *checkout_lat.lock().expect("latencies"));
    let checkout = Run::new(
        "  of which the checkout request",
        purchase.load,
        lat,
        BTreeMap::new(),
        Duration::from_secs_f64(purchase.seconds),
    );
    Phase { purchase, checkout }
}

/// Latencies of `401`s, and the count of every other answer.
type Answers = (Vec<Duration>, BTreeMap<String, usize>);

/// Wrong-password logins, `flooders` in flight, until `stop`: for the registered e-mail and for
/// unknown ones, from [`FLOOD_ADDRESSES`] addresses. Every answer counts (`401` is "ok" here).
async fn run_flood(
    client: reqwest::Client,
    url: String,
    stop: Arc<AtomicBool>,
    flooders: usize,
    rate: u32,
    victim: &str,
) -> Run {
    let started = Instant::now();
    let results: Arc<std::sync::Mutex<Answers>> = Arc::default();
    let tasks: Vec<_> = (0..flooders)
        .map(|w| {
            let (client, url, stop, results, victim) =
                (client.clone(), url.clone(), stop.clone(), results.clone(), victim.to_owned());
            tokio::spawn(async move {
                // Each flooder's share of the rate.
                let mut pace = (rate > 0).then(|| {
                    let every = Duration::from_secs_f64(flooders as f64 / f64::from(rate));
                    let mut t = tokio::time::interval(every);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    t
                });
                let mut n: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(p) = pace.as_mut() {
                        p.tick().await;
                    }
                    n += 1;
                    let email =
                        if n.is_multiple_of(2) { victim.clone() } else { format!("nobody-{w}-{n}@example.com") };
                    let from = format!("203.0.113.{}", (w + n as usize) % FLOOD_ADDRESSES + 1);
                    let t0 = Instant::now();
                    let answer: Result<(u16, Value), String> = async {
                        let res = client
                            .post(&url)
                            .header("X-Forwarded-For", from)
                            .json(&json!({"email": email, "password": "wrong password, again"}))
                            .send()
                            .await
                            .map_err(|_| "transport".to_owned())?;
                        let status = res.status().as_u16();
                        let body: Value = res.json().await.unwrap_or(Value::Null);
                        Ok((status, body))
                    }
                    .await;
                    let mut r = results.lock().expect("flood results");
                    match answer {
                        Ok((401, _)) => r.0.push(t0.elapsed()),
                        Ok((status, body)) => {
                            *r.1.entry(format!("{status} {}", body["code"].as_str().unwrap_or(""))).or_default() += 1
                        }
                        Err(e) => *r.1.entry(e).or_default() += 1,
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let (lat, errors) = std::mem::take(&mut *results.lock().expect("flood results"));
    let took = started.elapsed();
    let mut run =
        Run::new("flood: 401 invalid_credentials", load::Load::Closed { concurrency: flooders }, lat, errors, took);
    // Throughput of the flood counts every answer, refused or not.
    run.throughput_per_s = (run.ok + run.errors.values().sum::<usize>()) as f64 / took.as_secs_f64().max(1e-9);
    run
}
