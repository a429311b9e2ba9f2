//! Store rate limits per client address: the IETF headers on every store answer, `429
//! rate_limited` with `Retry-After` past a class's limit, `X-Forwarded-For` believed only
//! from a trusted proxy, and `BACKROOM_RATE_LIMITS=off`.

use std::num::NonZeroU32;
use std::time::Duration;

use backroom_api::ratelimit::{Limit, RateLimits};
use serde_json::json;

use crate::both;
use crate::support::{Backend, Res, TestApp};

fn limit(quota: u32) -> Limit {
    Limit { quota: NonZeroU32::new(quota).unwrap(), window: Duration::from_secs(60) }
}

/// Limits of `browse`, `checkout` and `login` small enough to reach in a test.
fn small() -> RateLimits {
    RateLimits { enabled: true, browse: limit(5), checkout: limit(2), login: limit(3) }
}

fn header(r: &Res, name: &str) -> String {
    r.headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

both!(every_store_answer_carries_its_class_policy_and_state, |app: TestApp| async move {
    let r = app.get("/store/products").await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "ratelimit-policy"), r#""browse";q=1200;w=60"#);
    assert_eq!(header(&r, "ratelimit"), r#""browse";r=1199;t=0"#);
    let r = app.get("/store/products").await;
    assert_eq!(header(&r, "ratelimit"), r#""browse";r=1198;t=0"#);
    // Problems too, and unknown store paths.
    let r = app.get("/store/carts/cart_nope").await;
    r.headers.get("ratelimit").expect("a 404 is counted and says so");
    let r = app.get("/store/nothing-here").await;
    assert_eq!(header(&r, "ratelimit-policy"), r#""browse";q=1200;w=60"#);
    // Checkout has its own class.
    let p = app.product("tee", &["T-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    let cart = app.cart_with("EUR", &[(&v, 1)]).await;
    let r = app.send(app.checkout_req(&cart, Some("k-1"), "tok_visa")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(header(&r, "ratelimit-policy"), r#""checkout";q=120;w=60"#);
    assert_eq!(header(&r, "ratelimit"), r#""checkout";r=119;t=0"#);
    let r = app.send(app.client.post(app.url("/store/auth/token")).json(&json!({}))).await;
    assert_eq!(header(&r, "ratelimit-policy"), r#""login";q=30;w=60"#);
    // Not on staff or operations routes.
    let r = app.admin_get("/admin/products").await;
    assert!(r.headers.get("ratelimit").is_none() && r.headers.get("ratelimit-policy").is_none());
    assert!(app.get("/healthz").await.headers.get("ratelimit").is_none());
});

both!(
    past_the_limit_is_429_with_retry_after,
    settings = |s: &mut backroom::config::Settings| s.rate_limits = small(),
    |app: TestApp| async move {
        for left in (0..5).rev() {
            let r = app.get("/store/products").await;
            assert_eq!(r.status, 200, "{}", r.body);
            let t = if left == 0 { 12 } else { 0 };
            assert_eq!(header(&r, "ratelimit"), format!(r#""browse";r={left};t={t}"#));
        }
        let r = app.get("/store/products").await;
        let retry: u64 = header(&r, "retry-after").parse().expect("Retry-After in whole seconds");
        assert!((1..=12).contains(&retry), "{retry}");
        assert_eq!(header(&r, "ratelimit"), format!(r#""browse";r=0;t={retry}"#));
        assert_eq!(header(&r, "ratelimit-policy"), r#""browse";q=5;w=60"#);
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        assert!(!header(&r, "x-request-id").is_empty());
        let body = r.problem(429, "rate_limited");
        assert!(body["detail"].as_str().unwrap().contains("retry after"), "{body}");
        // Nothing of the request ran: a cart is not created either.
        app.send(app.client.post(app.url("/store/carts")).json(&json!({"currency": "EUR"})))
            .await
            .problem(429, "rate_limited");
        // The other classes have their own buckets; staff are not limited.
        for _ in 0..3 {
            let r = app.send(app.client.post(app.url("/store/auth/token")).json(&json!({}))).await;
            assert_ne!(r.status, 429, "{}", r.body);
        }
        let r = app.send(app.client.post(app.url("/store/customers")).json(&json!({}))).await;
        r.problem(429, "rate_limited");
        for _ in 0..20 {
            app.admin_get("/admin/products").await.expect(200);
        }
        // Counted by class.
        let (_, _, metrics) = app.send_raw(app.client.get(app.url("/metrics"))).await;
        let metrics = String::from_utf8(metrics).unwrap();
        for class in ["browse", "login"] {
            let line = metrics
                .lines()
                .find(|l| l.starts_with(&format!("http_rate_limited_total{{class=\"{class}\"}}")))
                .unwrap_or_else(|| panic!("no {class} line in {metrics}"));
            let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(n >= 1.0, "{line}");
        }
    }
);

/// Without trusted proxies, `X-Forwarded-For` is ignored: one client spoofing it is still
/// one client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_does_not_escape_the_limit() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.rate_limits = small()).await;
    for i in 0..5 {
        let req = app.client.get(app.url("/store/products")).header("x-forwarded-for", format!("203.0.113.{i}"));
        assert_eq!(app.send(req).await.status, 200);
    }
    let req = app.client.get(app.url("/store/products")).header("x-forwarded-for", "198.51.100.77");
    app.send(req).await.problem(429, "rate_limited");
}

/// Behind a trusted proxy each client has its own bucket, and what a client writes into the
/// header itself (left of what the proxy appended) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_client_counts_alone() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.rate_limits = small();
        s.trusted_proxies = backroom_api::client::TrustedProxies::parse("127.0.0.1, ::1").unwrap();
    })
    .await;
    let via_proxy = |xff: String| app.client.get(app.url("/store/products")).header("x-forwarded-for", xff);
    // Client A forges a new leftmost entry each time; the proxy appends A's real address.
    for i in 0..5 {
        assert_eq!(app.send(via_proxy(format!("10.9.9.{i}, 203.0.113.1"))).await.status, 200);
    }
    app.send(via_proxy("192.0.2.200, 203.0.113.1".into())).await.problem(429, "rate_limited");
    // Client B is not held back by A.
    let r = app.send(via_proxy("203.0.113.2".into())).await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "ratelimit"), r#""browse";r=4;t=0"#);
    // The proxy's own requests (no header) are the proxy's.
    assert_eq!(app.get("/store/products").await.status, 200);
}

both!(
    rate_limits_off_limits_nothing,
    settings = |s: &mut backroom::config::Settings| {
        s.rate_limits = RateLimits { enabled: false, ..small() };
    },
    |app: TestApp| async move {
        for _ in 0..12 {
            let r = app.get("/store/products").await;
            assert_eq!(r.status, 200);
            assert!(r.headers.get("ratelimit").is_none() && r.headers.get("ratelimit-policy").is_none());
        }
    }
);
