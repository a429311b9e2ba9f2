//! Carrier quotes: the price of a shipping option that a carrier computes per destination.
//!
//! [`Carriers::quote`] answers a shipping option's price for a destination, always within the
//! option's `timeout_ms` (plus a few milliseconds of bookkeeping):
//!
//! - a flat option (no carrier) answers its `price`, not estimated, with no I/O;
//! - a carrier option `POST`s `{"currency", "country", "postal_code", "items": [{"sku",
//!   "quantity", "weight_g"}]}` to its `quote_url` and takes a `2xx` answer `{"amount"}`
//!   (minor units of the destination's currency, `0 ..= Money::MAX_AMOUNT`, the body at most
//!   64 KiB) as the price, not estimated; that price is remembered as the last good quote for
//!   (option, country, postal code);
//! - anything else (past the timeout, a connection error, a non-`2xx` status, a bad body, an
//!   address refused by the rule below, an open breaker) answers the last good quote for that
//!   destination if there is one, else the flat `price`, marked estimated.
//!
//! **The breaker.** Each quote URL has a circuit breaker: closed, it opens after
//! [`FAILURE_THRESHOLD`] failures in a row; open, no request is sent (the fallback answers at
//! once); after the cool-down ([`COOL_DOWN`]) it is half-open: one trial request goes out while
//! the others get the fallback; the trial's success closes it, its failure opens it again.
//!
//! **Addresses.** Unless private addresses are allowed (`BACKROOM_WEBHOOKS_ALLOW_PRIVATE`),
//! a quote URL on a loopback, private, link-local, unspecified or otherwise non-public address
//! ([`is_public`]) is refused: at creation when the host is such an address written out, or a
//! `localhost` name ([`check_url`]), and at every quote on the addresses the name resolves to
//! (the connection is made to the addresses checked, so a name that changes its answer between
//! two lookups cannot slip through). Redirects are never followed, and no proxy is used.
//!
//! **Metrics.** `carrier_breaker_state{carrier}` (0 closed, 1 open, 2 half-open, per host),
//! `carrier_quotes_total{result}` (`ok`, `timeout`, `error`, `refused`, `breaker_open`) and
//! `carrier_quote_seconds` (the whole call, fallback included).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backroom_kernel::{Currency, Money, net};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::{Deserialize, Serialize};

use crate::model::ShippingOption;

/// Failures in a row that open a quote URL's breaker.
pub const FAILURE_THRESHOLD: u32 = 5;
/// How long an open breaker waits before it lets one trial request through.
pub const COOL_DOWN: Duration = Duration::from_secs(30);
/// Last good quotes remembered (the oldest is forgotten first).
pub const MEMORY: usize = 10_000;
/// The largest carrier answer read.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The longest quote URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// The range of a carrier's `timeout_ms`.
pub const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 50..=10_000;

/// How the [`Carriers`] service behaves.
#[derive(Debug, Clone)]
pub struct CarrierConfig {
    /// Quote URLs may be on loopback, private and link-local addresses
    /// (`BACKROOM_WEBHOOKS_ALLOW_PRIVATE`; `false` in production).
    pub allow_private: bool,
    /// How long an open breaker stays open before its half-open trial ([`COOL_DOWN`]).
    pub cool_down: Duration,
    /// Failures in a row that open a breaker ([`FAILURE_THRESHOLD`]).
    pub failure_threshold: u32,
    /// Last good quotes remembered ([`MEMORY`]).
    pub memory: usize,
}

impl Default for CarrierConfig {
    fn default() -> Self {
        CarrierConfig {
            allow_private: false,
            cool_down: COOL_DOWN,
            failure_threshold: FAILURE_THRESHOLD,
            memory: MEMORY,
        }
    }
}

/// One line of a quote request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuoteItem {
    pub sku: String,
    pub quantity: i64,
    /// The variant's weight in grams, when known.
    pub weight_g: Option<i64>,
}

/// Where a cart ships to, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The cart's currency: the carrier answers in its minor units.
    pub currency: Currency,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    pub postal_code: String,
    pub items: Vec<QuoteItem>,
}

/// A shipping option's price for a destination. The price shown is the price charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub price: Money,
    /// Not the carrier's answer to this request: its last good quote for the destination, or
    /// the option's flat price, because the carrier did not answer well in time.
    pub estimated: bool,
}

/// How a quote was arrived at (the `result` label of `carrier_quotes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A flat option: no carrier was asked.
    Flat,
    /// The carrier answered well in time.
    Ok,
    /// The carrier did not answer within `timeout_ms`.
    Timeout,
    /// A connection error, a non-`2xx` status or a bad answer.
    Error,
    /// The quote URL's address is not public (and private addresses are not allowed).
    Refused,
    /// The breaker is open (or half-open with its trial in flight): nothing was sent.
    BreakerOpen,
}

impl Outcome {
    /// The metric label; `None` for a flat option, which is not counted.
    pub fn label(self) -> Option<&'static str> {
        Some(match self {
            Outcome::Flat => return None,
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
            Outcome::Refused => "refused",
            Outcome::BreakerOpen => "breaker_open",
        })
    }
}

/// The state of a quote URL's breaker (the value of `carrier_breaker_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

/// Asks carriers for quotes. Cheap to clone: every clone shares one HTTP client, the
/// breakers and the memory of last good quotes.
#[derive(Clone)]
pub struct Carriers(Arc<Inner>);

struct Inner {
    config: CarrierConfig,
    /// `None` only when the TLS stack could not start: every carrier quote then falls back.
    client: Option<reqwest::Client>,
    breakers: Mutex<HashMap<String, Breaker>>,
    memory: Mutex<Memory>,
}

impl Default for Carriers {
    /// Production's behaviour: private addresses refused, 30 s cool-down, 5 failures.
    fn default() -> Self {
        Carriers::new(CarrierConfig::default())
    }
}

impl std::fmt::Debug for Carriers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carriers").field("config", &self.0.config).finish_non_exhaustive()
    }
}

impl Carriers {
    /// The service with its own HTTP client (no proxy, no redirects, host names resolved and
    /// checked by this module). Should the TLS stack fail to start, it logs the error and
    /// every carrier quote falls back, rather than stopping the store.
    pub fn new(config: CarrierConfig) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect to addresses this process never checked.
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver { allow_private: config.allow_private }))
            .user_agent(concat!("backroom/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build();
        let client = match client {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "the HTTP client for carrier quotes could not start: every carrier quote falls back");
                None
            }
        };
        let memory = Memory::new(config.memory);
        Carriers(Arc::new(Inner { config, client, breakers: Mutex::new(HashMap::new()), memory: Mutex::new(memory) }))
    }

    /// Whether quote URLs may be on private addresses (`BACKROOM_WEBHOOKS_ALLOW_PRIVATE`).
    pub fn allow_private(&self) -> bool {
        self.0.config.allow_private
    }

    /// The option's price for `dest`; see the module documentation. Never fails, and never
    /// takes much longer than the option's `timeout_ms`.
    pub async fn quote(&self, option: &ShippingOption, dest: &Destination) -> Quote {
        self.quote_with_outcome(option, dest).await.0
    }

    /// [`Carriers::quote`], with how the quote was arrived at.
    pub async fn quote_with_outcome(&self, option: &ShippingOption, dest: &Destination) -> (Quote, Outcome) {
        let Some(carrier) = &option.carrier else {
            return (Quote { price: option.price, estimated: false }, Outcome::Flat);
        };
        let started = Instant::now();
        let timeout = Duration::from_millis(carrier.timeout_ms.clamp(*TIMEOUT_MS.start(), *TIMEOUT_MS.end()));
        let outcome = self.ask(&carrier.quote_url, timeout, dest).await;
        let (quote, outcome) = match outcome {
            Ok(price) => {
                self.0.memory().remember(&option.id, dest, price);
                (Quote { price, estimated: false }, Outcome::Ok)
            }
            Err(outcome) => {
                let price = self.0.memory().recall(&option.id, dest).unwrap_or(option.price);
                (Quote { price, estimated: true }, outcome)
            }
        };
        if let Some(result) = outcome.label() {
            metrics::counter!("carrier_quotes_total", "result" => result).increment(1);
        }
        metrics::histogram!("carrier_quote_seconds").record(started.elapsed().as_secs_f64());
        match outcome {
            Outcome::Ok | Outcome::Flat => {}
            // Every quote while a breaker is open: the opening was logged once.
            Outcome::BreakerOpen => tracing::debug!(option_id = %option.id, "carrier quote fell back: breaker open"),
            _ => {
                tracing::info!(option_id = %option.id, result = outcome.label().unwrap_or_default(), "carrier quote fell back")
            }
        }
        (quote, outcome)
    }

    /// The state of the breaker of `quote_url` (closed for one never called).
    pub fn breaker_state(&self, quote_url: &str) -> BreakerState {
        let key = Url::parse(quote_url).map(|u| breaker_key(&u)).unwrap_or_else(|_| quote_url.to_owned());
        self.0.breakers().get(&key).map_or(BreakerState::Closed, |b| b.state(Instant::now()))
    }

    /// One carrier request, within `timeout`: the price, or why there is none.
    async fn ask(&self, quote_url: &str, timeout: Duration, dest: &Destination) -> Result<Money, Outcome> {
        let Ok(url) = Url::parse(quote_url) else { return Err(Outcome::Error) };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Outcome::Error);
        }
        // Addresses written out are checked here (the resolver sees names only).
        if !self.0.config.allow_private
            && (url.host_str().is_none() || literal_ip(&url).is_some_and(|ip| !is_public(ip)))
        {
            return Err(Outcome::Refused);
        }
        let Some(client) = &self.0.client else { return Err(Outcome::Error) };
        let Some(permit) = self.admit(&url) else { return Err(Outcome::BreakerOpen) };
        let request = client.post(url).timeout(timeout).json(&QuoteRequest {
            currency: dest.currency.code(),
            country: &dest.country,
            postal_code: &dest.postal_code,
            items: &dest.items,
        });
        let result = match tokio::time::timeout(timeout, call(request, dest.currency)).await {
            Ok(r) => r,
            Err(_) => Err(Outcome::Timeout),
        };
        permit.finish(result.is_ok());
        result
    }

    /// A permit to send a request to `url`, or `None` while its breaker is open.
    fn admit(&self, url: &Url) -> Option<Permit> {
        let key = breaker_key(url);
        let now = Instant::now();
        let mut breakers = self.0.breakers();
        let breaker =
            breakers.entry(key.clone()).or_insert_with(|| Breaker::new(url.host_str().unwrap_or_default().to_owned()));
        let trial = match breaker.state {
            State::Closed { .. } => false,
            State::Open { until } if now >= until => {
                breaker.set(State::HalfOpen);
                true
            }
            State::Open { .. } | State::HalfOpen => return None,
        };
        Some(Permit { carriers: self.0.clone(), key, trial, done: false })
    }
}

impl Inner {
    fn breakers(&self) -> MutexGuard<'_, HashMap<String, Breaker>> {
        self.breakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the end of a request let through the breaker of `key`.
    fn record(&self, key: &str, trial: bool, ok: bool) {
        let mut breakers = self.breakers();
        let Some(b) = breakers.get_mut(key) else { return };
        let open = State::Open { until: Instant::now() + self.config.cool_down };
        match (b.state, trial, ok) {
            (State::HalfOpen, true, true) => b.set(State::Closed { failures: 0 }),
            (State::HalfOpen, true, false) => b.set(open),
            (State::Closed { .. }, false, true) => b.state = State::Closed { failures: 0 },
            (State::Closed { failures }, false, false) => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    tracing::warn!(carrier = %b.host, failures, "carrier breaker opened");
                    b.set(open);
                } else {
                    b.state = State::Closed { failures };
                }
            }
            // A request let through before the breaker opened, ending after: it says nothing
            // about the carrier now.
            _ => {}
        }
    }
}

/// The breaker of one quote URL.
struct Breaker {
    /// The `carrier` label.
    host: String,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial request is in flight.
    HalfOpen,
}

impl Breaker {
    fn new(host: String) -> Self {
        metrics::gauge!("carrier_breaker_state", "carrier" => host.clone()).set(BreakerState::Closed as i32 as f64);
        Breaker { host, state: State::Closed { failures: 0 } }
    }

    fn set(&mut self, state: State) {
        self.state = state;
        let shown = match state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        };
        metrics::gauge!("carrier_breaker_state", "carrier" => self.host.clone()).set(shown as i32 as f64);
    }

    fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            // Past its cool-down, the next request is the half-open trial.
            State::Open { until } if now >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }
}

/// A request let through a breaker. Dropped unfinished (the caller gave up on the quote), a
/// trial counts as failed, so that the breaker is not left half-open for ever.
struct Permit {
    carriers: Arc<Inner>,
    key: String,
    trial: bool,
    done: bool,
}

impl Permit {
    fn finish(mut self, ok: bool) {
        self.done = true;
        self.carriers.record(&self.key, self.trial, ok);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done && self.trial {
            self.carriers.record(&self.key, true, false);
        }
    }
}

/// The breaker of a URL: one per quote URL (without its fragment).
fn breaker_key(url: &Url) -> String {
    let mut u = url.clone();
    u.set_fragment(None);
    u.to_string()
}

#[derive(Serialize)]
struct QuoteRequest<'a> {
    currency: &'static str,
    country: &'a str,
    postal_code: &'a str,
    items: &'a [QuoteItem],
}

/// A carrier's answer; other members are ignored.
#[derive(Deserialize)]
struct QuoteAnswer {
    amount: i64,
}

/// Sends the request and reads a good answer, or says why there is none.
async fn call(request: reqwest::RequestBuilder, currency: Currency) -> Result<Money, Outcome> {
    let mut res = request.send().await.map_err(|e| classify(&e))?;
    if !res.status().is_success() {
        return Err(Outcome::Error);
    }
    if res.content_length().is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
        return Err(Outcome::Error);
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| classify(&e))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(Outcome::Error);
        }
        body.extend_from_slice(&chunk);
    }
    let answer: QuoteAnswer = serde_json::from_slice(&body).map_err(|_| Outcome::Error)?;
    Money::new(answer.amount, currency).map_err(|_| Outcome::Error)
}

fn classify(e: &reqwest::Error) -> Outcome {
    if e.is_timeout() {
        return Outcome::Timeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<RefusedAddress>() {
            return Outcome::Refused;
        }
        source = s.source();
    }
    Outcome::Error
}

/// Resolves carrier host names, refusing (unless allowed) a name with any non-public address;
/// reqwest connects to exactly the addresses answered here.
struct CheckedResolver {
    allow_private: bool,
}

/// A carrier's host name resolved to a non-public address.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves to a non-public address")]
struct RefusedAddress(String);

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private && addrs.iter().any(|a| !is_public(a.ip())) {
                return Err(Box::new(RefusedAddress(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Whether a carrier quote may go to `ip` when private addresses are not allowed: the shared
/// rule of [`backroom_kernel::net::is_public`].
pub fn is_public(ip: IpAddr) -> bool {
    net::is_public(ip)
}

/// The host of `url` when it is an IP address ([`net::literal_ip`]).
fn literal_ip(url: &Url) -> Option<IpAddr> {
    net::literal_ip(url.host_str()?)
}

/// Checks a carrier quote URL as it is set: an absolute `http` or `https` URL of at most
/// [`MAX_URL_LEN`] characters and, unless `allow_private`, whose host is neither a non-public
/// address written out (in any form the URL standard reads as one, such as `2130706433` for
/// 127.0.0.1) nor `localhost`. Answers the URL as it will be called (normalised), or the
/// message for the client.
pub fn check_url(raw: &str, allow_private: bool) -> Result<String, &'static str> {
    let raw = raw.trim();
    if raw.is_empty() || raw.chars().count() > MAX_URL_LEN {
        return Err("must be an absolute http or https URL of at most 2048 characters");
    }
    let url = Url::parse(raw).map_err(|_| "must be an absolute http or https URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an absolute http or https URL");
    }
    let private = "must not be on a loopback, private or link-local address (BACKROOM_WEBHOOKS_ALLOW_PRIVATE)";
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err("must be an absolute http or https URL");
    };
    if !allow_private {
        match literal_ip(&url) {
            Some(ip) if !is_public(ip) => return Err(private),
            Some(_) => {}
            None if net::is_localhost_name(host) => return Err(private),
            None => {}
        }
    }
    let normalised = url.to_string();
    if normalised.chars().count() > MAX_URL_LEN {
        return Err("must be an absolute http or https URL of at most 2048 characters");
    }
    Ok(normalised)
}

/// The last good quote per (option, country, postal code), at most `cap` of them; the oldest
/// is forgotten first.
struct Memory {
    cap: usize,
    seq: u64,
    quotes: HashMap<MemoryKey, (Money, u64)>,
    /// Keys in the order they were last set, with the `seq` they were set at (an entry whose
    /// `seq` no longer matches was set again later and is skipped).
    order: VecDeque<(MemoryKey, u64)>,
}

type MemoryKey = (String, String, String);

fn memory_key(option_id: &str, dest: &Destination) -> MemoryKey {
    let postal: String = dest.postal_code.chars().filter(|c| !c.is_whitespace()).collect();
    (option_id.to_owned(), dest.country.trim().to_ascii_uppercase(), postal.to_uppercase())
}

impl Memory {
    fn new(cap: usize) -> Self {
        Memory { cap, seq: 0, quotes: HashMap::new(), order: VecDeque::new() }
    }

    fn remember(&mut self, option_id: &str, dest: &Destination, price: Money) {
        if self.cap == 0 {
            return;
        }
        let key = memory_key(option_id, dest);
        self.seq += 1;
        self.quotes.insert(key.clone(), (price, self.seq));
        self.order.push_back((key, self.seq));
        while self.quotes.len() > self.cap {
            let Some((key, seq)) = self.order.pop_front() else { break };
            if self.quotes.get(&key).is_some_and(|(_, s)| *s == seq) {
                self.quotes.remove(&key);
            }
        }
        // Keys set again leave stale entries behind: drop them before they outgrow the map.
        if self.order.len() > 2 * self.cap.max(16) {
            let quotes = &self.quotes;
            self.order.retain(|(k, seq)| quotes.get(k).is_some_and(|(_, s)| s == seq));
        }
    }

    fn recall(&self, option_id: &str, dest: &Destination) -> Option<Money> {
        self.quotes.get(&memory_key(option_id, dest)).map(|(m, _)| *m).filter(|m| m.currency() == dest.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_urls_are_checked_as_set() {
        for bad in [
            "http://127.0.0.1/q",
            "http://localhost:8080/q",
            "http://LOCALHOST./q",
            "http://api.localhost/q",
            "http://[::1]/q",
            "http://0.0.0.0/q",
            "http://169.254.169.254/latest",
            "http://10.0.0.1/q",
            "http://2130706433/q",
            "http://0x7f.1/q",
            "http://017700000001/q",
            "http://[::ffff:7f00:1]/q",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad} accepted");
            assert!(check_url(bad, true).is_ok(), "{bad} refused though private addresses are allowed");
        }
        for bad in ["", "rates.example/q", "/q", "ftp://rates.example/q", "mailto:a@b.example", "http://"] {
            assert!(check_url(bad, true).is_err(), "{bad:?} accepted");
        }
        assert!(check_url(&format!("https://rates.example/{}", "a".repeat(2100)), false).is_err());
        assert_eq!(check_url(" https://Rates.Example/q ", false).unwrap(), "https://rates.example/q");
    }

    fn dest(country: &str, postal: &str) -> Destination {
        Destination {
            currency: Currency::parse("EUR").unwrap(),
            country: country.into(),
            postal_code: postal.into(),
            items: vec![],
        }
    }

    #[test]
    fn the_memory_forgets_the_oldest_first() {
        let eur = Currency::parse("EUR").unwrap();
        let m = |a| Money::new(a, eur).unwrap();
        let mut mem = Memory::new(2);
        mem.remember("so_1", &dest("PT", "1100-048"), m(100));
        mem.remember("so_1", &dest("PT", "4000-001"), m(200));
        // Set again: now the newest.
        mem.remember("so_1", &dest("pt", " 1100-048"), m(150));
        mem.remember("so_1", &dest("ES", "28001"), m(300));
        assert_eq!(mem.recall("so_1", &dest("PT", "1100-048")), Some(m(150)));
        assert_eq!(mem.recall("so_1", &dest("PT", "4000-001")), None);
        assert_eq!(mem.recall("so_1", &dest("ES", "28001")), Some(m(300)));
        assert_eq!(mem.recall("so_2", &dest("ES", "28001")), None);
        for i in 0..1000 {
            mem.remember("so_1", &dest("ES", "28001"), m(i));
        }
        assert!(mem.order.len() <= 2 * 16 + 1);
        assert_eq!(mem.quotes.len(), 2);
    }
}
