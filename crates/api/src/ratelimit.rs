//! Rate limits on `/store/*`, per client address ([`crate::client::ClientAddr`]), in three
//! classes:
//!
//! | class | requests | default |
//! |---|---|---|
//! | `login` | `POST /store/auth/token`, `POST /store/customers` | 30 a minute |
//! | `checkout` | `POST /store/carts/{id}/checkout` | 120 a minute |
//! | `browse` | every other `/store` request | 1200 a minute |
//!
//! Each class is a GCRA bucket per address ([`governor`]): the whole quota may be spent at
//! once, and it comes back evenly over the window (1200 a minute is one every 50 ms). IPv6
//! addresses count by their /64, what one subscriber is usually given, so one client cannot
//! escape its limit by walking its own network.
//!
//! Every `/store` answer carries the class's policy and the client's state in the IETF
//! draft's fields (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy: "browse";q=1200;w=60`
//! and `RateLimit: "browse";r=1187;t=0`, where `r` is what is left and `t` the seconds until
//! one more request is allowed (`0` while some are left). Past the limit the answer is
//! [`rate_limited`]: `429 rate_limited` with `Retry-After`, and nothing else runs.
//!
//! `BACKROOM_RATE_LIMITS=off` turns them off (load tests, benchmarks). The limiters forget an
//! address once its bucket is full again (`retain_recent`, at most once a minute, on a
//! request's way through), so their memory stays bounded by the addresses seen recently.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};

use crate::client::ClientAddr;
use crate::error::ApiError;

/// `RateLimit-Policy`: the quota policy of the class a request falls in.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what the client has left of it.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// How often, at most, addresses whose buckets are full again are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// A rate-limit class of store requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Logging in and registering: the strictest.
    Login,
    /// Checking a cart out.
    Checkout,
    /// Everything else under `/store`.
    Browse,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Login, Class::Checkout, Class::Browse];

    /// The class of a request, or `None` outside `/store`.
    pub fn of(method: &Method, path: &str) -> Option<Class> {
        let rest = path.strip_prefix("/store").filter(|r| r.is_empty() || r.starts_with('/'))?;
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        Some(match (method, segments.as_slice()) {
            (&Method::POST, ["auth", "token"] | ["customers"]) => Class::Login,
            (&Method::POST, ["carts", _, "checkout"]) => Class::Checkout,
            _ => Class::Browse,
        })
    }

    /// The name in the headers and the metric's `class` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Class::Login => "login",
            Class::Checkout => "checkout",
            Class::Browse => "browse",
        }
    }
}

/// One class's limit: `quota` requests per `window`, all of which may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub quota: NonZeroU32,
    pub window: Duration,
}

impl Limit {
    /// `quota` requests a minute.
    pub const fn per_minute(quota: NonZeroU32) -> Self {
        Limit { quota, window: Duration::from_secs(60) }
    }
}

/// The store's rate limits (`BACKROOM_RATE_LIMITS`); [`Default`] is what production runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `false`: no limits at all (load tests and benchmarks).
    pub enabled: bool,
    pub login: Limit,
    pub checkout: Limit,
    pub browse: Limit,
}

impl RateLimits {
    /// Default of the `login` class: 30 a minute.
    pub const LOGIN: Limit = Limit::per_minute(NonZeroU32::new(30).unwrap());
    /// Default of the `checkout` class: 120 a minute.
    pub const CHECKOUT: Limit = Limit::per_minute(NonZeroU32::new(120).unwrap());
    /// Default of the `browse` class: 1200 a minute.
    pub const BROWSE: Limit = Limit::per_minute(NonZeroU32::new(1200).unwrap());

    /// No limits.
    pub fn off() -> Self {
        RateLimits { enabled: false, ..Self::default() }
    }

    /// The limit of `class`.
    pub fn limit(&self, class: Class) -> Limit {
        match class {
            Class::Login => self.login,
            Class::Checkout => self.checkout,
            Class::Browse => self.browse,
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits { enabled: true, login: Self::LOGIN, checkout: Self::CHECKOUT, browse: Self::BROWSE }
    }
}

type KeyedLimiter = RateLimiter<
    IpAddr,
    governor::state::keyed::DefaultKeyedStateStore<IpAddr>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// One class's limiter.
struct ClassLimiter {
    class: Class,
    limiter: KeyedLimiter,
    /// The `RateLimit-Policy` value, the same on every answer.
    policy: HeaderValue,
    /// The time one request comes back in.
    interval: Duration,
}

/// The store's limiters: one per class, keyed by client address.
pub struct Limiters {
    enabled: bool,
    classes: Vec<ClassLimiter>,
    started: Instant,
    /// When addresses were last forgotten (ms since `started`).
    forgotten_at: AtomicU64,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters").field("enabled", &self.enabled).finish_non_exhaustive()
    }
}

/// The state of one client in one class after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let through; `remaining` more may come now, and when none is left one more may come
    /// after `next`.
    Allowed { remaining: u32, next: Duration },
    /// Over the limit: retry after this long.
    Limited { retry_after: Duration },
}

impl Limiters {
    pub fn new(limits: RateLimits) -> Self {
        let classes = Class::ALL
            .into_iter()
            .map(|class| {
                let Limit { quota, window } = limits.limit(class);
                let interval = (window / quota.get()).max(Duration::from_nanos(1));
                let q = Quota::with_period(interval).expect("a non-zero period").allow_burst(quota);
                let policy = format!("\"{}\";q={};w={}", class.as_str(), quota, window.as_secs().max(1));
                ClassLimiter {
                    class,
                    limiter: RateLimiter::dashmap(q).with_middleware::<StateInformationMiddleware>(),
                    policy: HeaderValue::from_str(&policy).expect("ASCII"),
                    interval,
                }
            })
            .collect();
        Limiters { enabled: limits.enabled, classes, started: Instant::now(), forgotten_at: AtomicU64::new(0) }
    }

    fn class(&self, class: Class) -> &ClassLimiter {
        self.classes.iter().find(|c| c.class == class).expect("one limiter per class")
    }

    /// Whether limits are on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Counts one request of `class` from `addr`.
    pub fn check(&self, class: Class, addr: IpAddr) -> Decision {
        self.forget_idle();
        let c = self.class(class);
        match c.limiter.check_key(&key(addr)) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Decision::Allowed { remaining, next: if remaining == 0 { c.interval } else { Duration::ZERO } }
            }
            Err(not_until) => Decision::Limited { retry_after: not_until.wait_time_from(c.limiter.clock().now()) },
        }
    }

    /// Addresses the limiters hold state for, over every class.
    pub fn tracked(&self) -> usize {
        self.classes.iter().map(|c| c.limiter.len()).sum()
    }

    /// Forgets the addresses whose buckets are full again, at most once per [`FORGET_EVERY`]
    /// (the request that finds it due does it, in a few microseconds per thousand addresses).
    fn forget_idle(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.forgotten_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < FORGET_EVERY.as_millis() as u64 {
            return;
        }
        if self.forgotten_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.forget_now();
        }
    }

    /// Forgets every address whose buckets are full again.
    pub fn forget_now(&self) {
        for c in &self.classes {
            c.limiter.retain_recent();
            c.limiter.shrink_to_fit();
        }
    }
}

/// The key of an address: itself for IPv4, its /64 for IPv6.
fn key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// Whole seconds to wait, at least 1.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `429 rate_limited` with `Retry-After` (whole seconds, at least 1): for any limit, this
/// layer's and others' (the login-failure limit).
pub fn rate_limited(retry_after: Duration) -> Response {
    ApiError::RateLimited { retry_after }.into_response()
}

/// The `Retry-After` value of a wait: whole seconds, at least 1.
pub fn retry_after_value(retry_after: Duration) -> HeaderValue {
    HeaderValue::from(whole_seconds(retry_after).max(1))
}

/// The rate limits of `/store/*` (see the module's description).
pub async fn layer(State(limiters): State<Arc<Limiters>>, req: Request, next: Next) -> Response {
    if !limiters.enabled {
        return next.run(req).await;
    }
    let Some(class) = Class::of(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let addr = ClientAddr::of(req.extensions()).0;
    let c = limiters.class(class);
    let (mut res, remaining, reset) = match limiters.check(class, addr) {
        Decision::Allowed { remaining, next: wait } => (next.run(req).await, remaining, whole_seconds(wait)),
        Decision::Limited { retry_after } => {
            metrics::counter!("http_rate_limited_total", "class" => class.as_str()).increment(1);
            tracing::info!(class = class.as_str(), client = %addr, "rate limited");
            (rate_limited(retry_after), 0, whole_seconds(retry_after).max(1))
        }
    };
    let state = format!("\"{}\";r={remaining};t={reset}", class.as_str());
    let headers = res.headers_mut();
    headers.insert(RATELIMIT_POLICY.clone(), c.policy.clone());
    if let Ok(v) = HeaderValue::from_str(&state) {
        headers.insert(RATELIMIT.clone(), v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(quota: u32, secs: u64) -> Limit {
        Limit { quota: NonZeroU32::new(quota).unwrap(), window: Duration::from_secs(secs) }
    }

    #[test]
    fn requests_fall_in_classes() {
        let c = |m: Method, p: &str| Class::of(&m, p);
        assert_eq!(c(Method::POST, "/store/auth/token"), Some(Class::Login));
        assert_eq!(c(Method::POST, "/store/customers"), Some(Class::Login));
        assert_eq!(c(Method::POST, "/store/carts/cart_1/checkout"), Some(Class::Checkout));
        assert_eq!(c(Method::DELETE, "/store/auth/token"), Some(Class::Browse));
        assert_eq!(c(Method::GET, "/store/customers/me"), Some(Class::Browse));
        assert_eq!(c(Method::POST, "/store/carts/cart_1/items"), Some(Class::Browse));
        assert_eq!(c(Method::GET, "/store/carts/cart_1/checkout"), Some(Class::Browse));
        assert_eq!(c(Method::GET, "/store/products"), Some(Class::Browse));
        assert_eq!(c(Method::GET, "/store"), Some(Class::Browse));
        assert_eq!(c(Method::GET, "/storefront"), None);
        assert_eq!(c(Method::POST, "/admin/products"), None);
        assert_eq!(c(Method::GET, "/healthz"), None);
    }

    #[test]
    fn a_burst_then_the_limit() {
        let limits = RateLimits { login: limit(3, 60), ..RateLimits::default() };
        let l = Limiters::new(limits);
        let a: IpAddr = "203.0.113.9".parse().unwrap();
        let b: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(l.check(Class::Login, a), Decision::Allowed { remaining: 2, next: Duration::ZERO });
        assert_eq!(l.check(Class::Login, a), Decision::Allowed { remaining: 1, next: Duration::ZERO });
        assert_eq!(l.check(Class::Login, a), Decision::Allowed { remaining: 0, next: Duration::from_secs(20) });
        let Decision::Limited { retry_after } = l.check(Class::Login, a) else { panic!("not limited") };
        assert!(retry_after > Duration::from_secs(19) && retry_after <= Duration::from_secs(20), "{retry_after:?}");
        // Another address, another class: their own buckets.
        assert!(matches!(l.check(Class::Login, b), Decision::Allowed { remaining: 2, .. }));
        assert!(matches!(l.check(Class::Browse, a), Decision::Allowed { .. }));
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let l = Limiters::new(RateLimits { checkout: limit(2, 60), ..RateLimits::default() });
        for addr in ["2001:db8:1:2::1", "2001:db8:1:2::ffff"] {
            assert!(matches!(l.check(Class::Checkout, addr.parse().unwrap()), Decision::Allowed { .. }));
        }
        assert!(matches!(l.check(Class::Checkout, "2001:db8:1:2:9::9".parse().unwrap()), Decision::Limited { .. }));
        assert!(matches!(l.check(Class::Checkout, "2001:db8:1:3::1".parse().unwrap()), Decision::Allowed { .. }));
        assert_eq!(key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let l = Limiters::new(RateLimits { browse: limit(1000, 1), ..RateLimits::default() });
        for i in 0..500u32 {
            l.check(Class::Browse, IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(l.tracked(), 500);
        std::thread::sleep(Duration::from_millis(20));
        l.forget_now();
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_value(Duration::ZERO), "1");
        assert_eq!(retry_after_value(Duration::from_millis(10)), "1");
        assert_eq!(retry_after_value(Duration::from_millis(1500)), "2");
        assert_eq!(retry_after_value(Duration::from_secs(20)), "20");
        let res = rate_limited(Duration::from_millis(2500));
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "3");
    }

    #[test]
    fn the_policy_names_quota_and_window() {
        let l = Limiters::new(RateLimits::default());
        assert_eq!(l.class(Class::Browse).policy, "\"browse\";q=1200;w=60");
        assert_eq!(l.class(Class::Login).policy, "\"login\";q=30;w=60");
        assert_eq!(l.class(Class::Checkout).policy, "\"checkout\";q=120;w=60");
    }
}
