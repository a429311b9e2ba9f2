//! Carrier quotes against a real HTTP server on loopback: a carrier that answers, then is slow,
//! then fails, then recovers; the fallbacks, the breaker, and the refusal of private addresses.
//!
//! Times are asserted with a generous margin (the quote's timeout plus 300 ms), never tightly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use backroom_kernel::{Currency, Money};
use backroom_pricing::carrier::{BreakerState, Outcome, is_public};
use backroom_pricing::{CarrierConfig, CarrierSettings, Carriers, Destination, QuoteItem, ShippingOption};
use serde_json::{Value, json};

/// What the stub carrier does with the next requests.
#[derive(Debug, Clone)]
enum Mode {
    /// `200 {"amount": n}` after a delay.
    Answer { amount: i64, delay: Duration },
    /// Answers after this long (past any timeout of these tests).
    Slow,
    /// This status, with a JSON body.
    Status(u16),
    /// `200` with this body.
    Body(String),
}

#[derive(Clone)]
struct Stub {
    mode: Arc<Mutex<Mode>>,
    requests: Arc<AtomicUsize>,
    last: Arc<Mutex<Option<Value>>>,
}

impl Stub {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn handle(State(stub): State<Stub>, Json(body): Json<Value>) -> Response {
    stub.requests.fetch_add(1, Ordering::SeqCst);
    *stub.last.lock().unwrap() = Some(body);
    let mode = stub.mode.lock().unwrap().clone();
    match mode {
        Mode::Answer { amount, delay } => {
            tokio::time::sleep(delay).await;
            Json(json!({"amount": amount, "service": "ground"})).into_response()
        }
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Json(json!({"amount": 1})).into_response()
        }
        Mode::Status(s) => (StatusCode::from_u16(s).unwrap(), Json(json!({"error": "down"}))).into_response(),
        Mode::Body(b) => ([("content-type", "application/json")], b).into_response(),
    }
}

/// A stub carrier on 127.0.0.1; its port.
async fn stub(mode: Mode) -> (Stub, u16) {
    let stub = Stub {
        mode: Arc::new(Mutex::new(mode)),
        requests: Arc::new(AtomicUsize::new(0)),
        last: Arc::new(Mutex::new(None)),
    };
    let app = axum::Router::new()
        .route("/quote", axum::routing::post(handle))
        .route("/moved", axum::routing::post(|| async { (StatusCode::FOUND, [("location", "/quote")]) }))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (stub, port)
}

fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap()).unwrap()
}

fn option(quote_url: Option<String>, timeout_ms: u64) -> ShippingOption {
    ShippingOption {
        id: backroom_kernel::id::new("so"),
        name: "Standard".into(),
        region_id: "reg_1".into(),
        price: eur(500),
        free_over: None,
        carrier: quote_url.map(|quote_url| CarrierSettings { quote_url, timeout_ms }),
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    }
}

fn dest(postal_code: &str) -> Destination {
    Destination {
        currency: Currency::parse("EUR").unwrap(),
        country: "PT".into(),
        postal_code: postal_code.into(),
        items: vec![QuoteItem { sku: "TEE-M".into(), quantity: 2, weight_g: Some(180) }],
    }
}

/// The longest a quote may take: its timeout and a generous margin.
fn within(timeout_ms: u64) -> Duration {
    Duration::from_millis(timeout_ms + 300)
}

const TIMEOUT_MS: u64 = 200;
const COOL_DOWN: Duration = Duration::from_millis(400);

fn carriers(allow_private: bool) -> Carriers {
    Carriers::new(CarrierConfig { allow_private, cool_down: COOL_DOWN, ..CarrierConfig::default() })
}

#[tokio::test]
async fn a_flat_option_answers_its_price_without_asking_anyone() {
    let (quote, outcome) = carriers(false).quote_with_outcome(&option(None, 800), &dest("1100-048")).await;
    assert_eq!((quote.price, quote.estimated, outcome), (eur(500), false, Outcome::Flat));
}

#[tokio::test]
async fn a_slow_then_failing_carrier_falls_back_opens_its_breaker_and_recovers() {
    let (stub, port) = stub(Mode::Answer { amount: 1234, delay: Duration::ZERO }).await;
    let url = format!("http://127.0.0.1:{port}/quote");
    let carriers = carriers(true);
    let option = option(Some(url.clone()), TIMEOUT_MS);
    let (home, other) = (dest("1100-048"), dest("4000-001"));
    let quote = |d: Destination| {
        let (carriers, option) = (carriers.clone(), option.clone());
        async move {
            let started = Instant::now();
            let r = carriers.quote_with_outcome(&option, &d).await;
            assert!(started.elapsed() < within(TIMEOUT_MS), "a quote took {:?}", started.elapsed());
            r
        }
    };

    // A good answer is the price, and is remembered for its destination.
    let (q, outcome) = quote(home.clone()).await;
    assert_eq!((q.price, q.estimated, outcome), (eur(1234), false, Outcome::Ok));
    assert_eq!(
        stub.last.lock().unwrap().clone().unwrap(),
        json!({"currency": "EUR", "country": "PT", "postal_code": "1100-048",
               "items": [{"sku": "TEE-M", "quantity": 2, "weight_g": 180}]})
    );

    // Slow: answered in time with the last good quote for that destination, estimated.
    stub.set(Mode::Slow);
    let (q, outcome) = quote(home.clone()).await;
    assert_eq!((q.price, q.estimated, outcome), (eur(1234), true, Outcome::Timeout));
    // Another destination has no good quote yet: the flat price.
    let (q, outcome) = quote(other.clone()).await;
    assert_eq!((q.price, q.estimated, outcome), (eur(500), true, Outcome::Timeout));

    // Failing, three ways: a 503, a body that is not an amount, a negative amount.
    stub.set(Mode::Status(503));
    let (q, outcome) = quote(home.clone()).await;
    assert_eq!((q.price, q.estimated, outcome), (eur(1234), true, Outcome::Error));
    stub.set(Mode::Body("not json".into()));
    let (q, outcome) = quote(other.clone()).await;
    assert_eq!((q.price, q.estimated, outcome), (eur(500), true, Outcome::Error));
    assert_eq!(carriers.breaker_state(&url), BreakerState::Closed, "four failures leave it closed");
    stub.set(Mode::Body(r#"{"amount": -5}"#.into()));
    let (q, outcome) = quote(home.clone()).await;
    assert_eq!((q.price, q.estimated, outcome), (eur(1234), true, Outcome::Error));

    // Five failures in a row: open. Nothing reaches the carrier while it is open.
    assert_eq!(carriers.breaker_state(&url), BreakerState::Open);
    stub.set(Mode::Answer { amount: 1500, delay: Duration::ZERO });
    let sent = stub.requests();
    for d in [home.clone(), other.clone(), home.clone()] {
        let (q, outcome) = quote(d).await;
        assert!(q.estimated);
        assert_eq!(outcome, Outcome::BreakerOpen);
    }
    assert_eq!(stub.requests(), sent, "a request reached the carrier while its breaker was open");

    // After the cool-down: half-open; the trial's success closes it.
    tokio::time::sleep(COOL_DOWN + Duration::from_millis(100)).await;
    assert_eq!(carriers.breaker_state(&url), BreakerState::HalfOpen);
    let (q, outcome) = quote(other.clone()).await;
    assert_eq!((q.price, q.estimated, outcome), (eur(1500), false, Outcome::Ok));
    assert_eq!(stub.requests(), sent + 1);
    assert_eq!(carriers.breaker_state(&url), BreakerState::Closed);
    // The new good quote is the one remembered for that destination.
    stub.set(Mode::Status(500));
    let (q, _) = quote(other.clone()).await;
    assert_eq!((q.price, q.estimated), (eur(1500), true));

    // Open it again; a failed trial opens it again, for another cool-down.
    for _ in 0..4 {
        quote(home.clone()).await;
    }
    assert_eq!(carriers.breaker_state(&url), BreakerState::Open);
    tokio::time::sleep(COOL_DOWN + Duration::from_millis(100)).await;
    let sent = stub.requests();
    let (_, outcome) = quote(home.clone()).await;
    assert_eq!(outcome, Outcome::Error, "the half-open trial is sent");
    assert_eq!(stub.requests(), sent + 1);
    assert_eq!(carriers.breaker_state(&url), BreakerState::Open);

    // Half-open lets one trial through; the others meanwhile get the fallback.
    tokio::time::sleep(COOL_DOWN + Duration::from_millis(100)).await;
    stub.set(Mode::Answer { amount: 1600, delay: Duration::from_millis(300) });
    let sent = stub.requests();
    // The same option with room for the slow answer (the breaker is the quote URL's).
    let patient = ShippingOption {
        carrier: Some(CarrierSettings { quote_url: url.clone(), timeout_ms: 3000 }),
        ..option.clone()
    };
    let trial = tokio::spawn({
        let (carriers, home) = (carriers.clone(), home.clone());
        async move { carriers.quote_with_outcome(&patient, &home).await }
    });
    // Once the trial has reached the carrier:
    let deadline = Instant::now() + Duration::from_secs(2);
    while stub.requests() == sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(stub.requests(), sent + 1, "the trial did not reach the carrier");
    let (q, outcome) = quote(home.clone()).await;
    assert_eq!((q.price, q.estimated, outcome), (eur(1234), true, Outcome::BreakerOpen));
    let (q, outcome) = trial.await.unwrap();
    assert_eq!((q.price, q.estimated, outcome), (eur(1600), false, Outcome::Ok));
    assert_eq!(stub.requests(), sent + 1);
    assert_eq!(carriers.breaker_state(&url), BreakerState::Closed);
}

#[tokio::test]
async fn bad_answers_are_not_prices() {
    let (stub, port) = stub(Mode::Status(200)).await;
    let carriers = carriers(true);
    let too_large = format!(r#"{{"amount": {}}}"#, Money::MAX_AMOUNT + 1);
    let huge = format!(r#"{{"amount": 1, "pad": "{}"}}"#, "x".repeat(70 * 1024));
    let bodies = [r#"{"amount": 12.5}"#, r#"{"amount": "12"}"#, r#"{}"#, too_large.as_str(), huge.as_str(), "[]"];
    for (i, body) in bodies.into_iter().enumerate() {
        stub.set(Mode::Body(body.to_owned()));
        // Another URL each time, so another breaker: this test is about answers.
        let option = option(Some(format!("http://127.0.0.1:{port}/quote?case={i}")), TIMEOUT_MS);
        let (q, outcome) = carriers.quote_with_outcome(&option, &dest("1100-048")).await;
        assert_eq!((q.price, q.estimated, outcome), (eur(500), true, Outcome::Error), "{:.40}", body);
    }
    // A redirect is not followed.
    let moved = option(Some(format!("http://127.0.0.1:{port}/moved")), TIMEOUT_MS);
    let sent = stub.requests();
    let (q, outcome) = carriers.quote_with_outcome(&moved, &dest("1100-048")).await;
    assert_eq!((q.estimated, outcome), (true, Outcome::Error));
    assert_eq!(stub.requests(), sent, "the redirect was followed");
    // Zero is a price (free shipping from the carrier).
    stub.set(Mode::Body(r#"{"amount": 0}"#.into()));
    let free = option(Some(format!("http://127.0.0.1:{port}/quote?case=zero")), TIMEOUT_MS);
    let (q, outcome) = carriers.quote_with_outcome(&free, &dest("1100-048")).await;
    assert_eq!((q.price, q.estimated, outcome), (eur(0), false, Outcome::Ok));
}

#[tokio::test]
async fn private_addresses_are_refused_and_nothing_is_sent() {
    let (stub, port) = stub(Mode::Answer { amount: 999, delay: Duration::ZERO }).await;
    let carriers = carriers(false);
    let urls = [
        format!("http://127.0.0.1:{port}/quote"),
        // A name: refused on the address it resolves to, at the quote.
        format!("http://localhost:{port}/quote"),
        format!("http://[::1]:{port}/quote"),
        format!("http://0.0.0.0:{port}/quote"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/quote".to_owned(),
        format!("http://2130706433:{port}/quote"),
        format!("http://[::ffff:127.0.0.1]:{port}/quote"),
    ];
    for url in urls {
        // No request may ever leave for a private address from a test: the rule must hold
        // for every one of these before any is tried.
        let host = reqwest_host(&url);
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            assert!(!is_public(ip), "{url} would be sent");
        }
        let started = Instant::now();
        let (q, outcome) = carriers.quote_with_outcome(&option(Some(url.clone()), TIMEOUT_MS), &dest("1100-048")).await;
        assert!(started.elapsed() < within(TIMEOUT_MS));
        assert_eq!((q.price, q.estimated, outcome), (eur(500), true, Outcome::Refused), "{url}");
    }
    assert_eq!(stub.requests(), 0, "a request reached a private address");
    // Allowed, the same carrier answers.
    let (q, outcome) = crate::carriers(true)
        .quote_with_outcome(&option(Some(format!("http://localhost:{port}/quote")), TIMEOUT_MS), &dest("1100-048"))
        .await;
    assert_eq!((q.price, q.estimated, outcome), (eur(999), false, Outcome::Ok));
}

/// The host of a URL as the URL standard reads it (`2130706433` is `127.0.0.1`).
fn reqwest_host(url: &str) -> String {
    let host = reqwest::Url::parse(url).unwrap().host_str().unwrap().to_owned();
    host.trim_start_matches('[').trim_end_matches(']').to_owned()
}
