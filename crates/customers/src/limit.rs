//! The login-failure limit: after [`FAILURES`] failed sign-ins for one e-mail, or from one
//! client address, within [`WINDOW`], every further sign-in for it is refused (`429
//! rate_limited` with `Retry-After`: the seconds until the oldest failure leaves the window)
//! until the window frees a slot. It holds whatever `BACKROOM_RATE_LIMITS` says.
//!
//! - E-mails are keyed by their keyed hash (the vault's e-mail index), so no e-mail is held in
//!   memory. Unknown e-mails count like known ones.
//! - Addresses are keyed by the IPv4 address, or the /64 prefix of an IPv6 address (one
//!   subscriber's usual allocation: a client cannot dodge the limit by walking its prefix).
//! - Each sign-in takes a slot before its password is checked and gives it back when the
//!   password was right or when the sign-in ended without an answer (an error, a shed hash):
//!   concurrent guesses cannot slip past the limit together. A right password also forgets
//!   that e-mail's failures (not the address's: one account of one's own must not reset the
//!   count of guesses from that address).
//! - Per process and in memory: with several processes each counts its own (the limit is
//!   then at most that many times looser), and a restart forgets. Memory is bounded: at most
//!   [`KEYS`] e-mails and as many addresses, each with at most [`FAILURES`] instants; when one
//!   map is full, keys whose failures all left the window go first, then the tenth of keys
//!   least recently failed.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed within the window; the next sign-in is refused.
pub const FAILURES: usize = 10;
/// How far back failures count.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Keys kept per map at most.
pub const KEYS: usize = 100_000;

/// Failures per key, oldest first.
#[derive(Debug)]
struct Map<K>(HashMap<K, VecDeque<Instant>>);

impl<K: Hash + Eq + Clone> Map<K> {
    /// The key's failures still in the window (older ones dropped).
    fn live(&mut self, key: &K, now: Instant, window: Duration) -> usize {
        match self.0.get_mut(key) {
            Some(q) => {
                while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                    q.pop_front();
                }
                q.len()
            }
            None => 0,
        }
    }

    /// When the key's oldest failure leaves the window.
    fn frees_in(&self, key: &K, now: Instant, window: Duration) -> Duration {
        self.0.get(key).and_then(|q| q.front()).map_or(Duration::ZERO, |t| (*t + window).saturating_duration_since(now))
    }

    fn push(&mut self, key: &K, at: Instant, now: Instant, window: Duration, capacity: usize) {
        if !self.0.contains_key(key) && self.0.len() >= capacity {
            self.0.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
            if self.0.len() >= capacity {
                let mut by_age: Vec<(Instant, K)> =
                    self.0.iter().map(|(k, q)| (q.back().copied().unwrap_or(now), k.clone())).collect();
                by_age.sort_unstable_by_key(|(t, _)| *t);
                for (_, k) in by_age.into_iter().take((capacity / 10).max(1)) {
                    self.0.remove(&k);
                }
            }
        }
        self.0.entry(key.clone()).or_default().push_back(at);
    }

    /// Takes back one slot taken at `at`.
    fn take_back(&mut self, key: &K, at: Instant) {
        if let Some(q) = self.0.get_mut(key) {
            if let Some(i) = q.iter().rposition(|t| *t == at) {
                q.remove(i);
            }
            if q.is_empty() {
                self.0.remove(key);
            }
        }
    }
}

/// The address a limit counts: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
fn addr_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

#[derive(Debug)]
struct State {
    emails: Map<String>,
    addrs: Map<IpAddr>,
}

/// The login-failure limit of this process.
#[derive(Debug)]
pub struct LoginLimiter {
    state: Mutex<State>,
    failures: usize,
    window: Duration,
    capacity: usize,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(FAILURES, WINDOW, KEYS)
    }
}

/// A sign-in that holds a slot; see [`LoginLimiter::begin`].
#[derive(Debug)]
#[must_use = "a slot is given back when dropped: call failed() or succeeded()"]
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    email: String,
    addr: Option<IpAddr>,
    at: Instant,
    kept: bool,
}

impl Attempt<'_> {
    /// The password was wrong (or no customer has the e-mail): the slot stays taken.
    pub fn failed(mut self) {
        self.kept = true;
    }

    /// The password was right: the e-mail's failures are forgotten and the address's slot
    /// given back.
    pub fn succeeded(mut self) {
        self.kept = true;
        let mut s = self.limiter.lock();
        s.emails.0.remove(&self.email);
        if let Some(a) = self.addr {
            s.addrs.take_back(&a, self.at);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.kept {
            let mut s = self.limiter.lock();
            s.emails.take_back(&self.email, self.at);
            if let Some(a) = self.addr {
                s.addrs.take_back(&a, self.at);
            }
        }
    }
}

impl LoginLimiter {
    /// A limit of `failures` within `window`, keeping at most `capacity` keys per map.
    pub fn new(failures: usize, window: Duration, capacity: usize) -> Self {
        LoginLimiter {
            state: Mutex::new(State { emails: Map(HashMap::new()), addrs: Map(HashMap::new()) }),
            failures: failures.max(1),
            window,
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a slot for a sign-in for `email_key` from `addr`, or answers how long until one
    /// frees (at least a second) when either has used up its failures.
    pub fn begin(&self, email_key: &str, addr: Option<IpAddr>) -> Result<Attempt<'_>, Duration> {
        let now = Instant::now();
        let email = email_key.to_owned();
        let addr = addr.map(addr_key);
        let mut s = self.lock();
        let mut wait = Duration::ZERO;
        if s.emails.live(&email, now, self.window) >= self.failures {
            wait = wait.max(s.emails.frees_in(&email, now, self.window));
        }
        if let Some(a) = &addr
            && s.addrs.live(a, now, self.window) >= self.failures
        {
            wait = wait.max(s.addrs.frees_in(a, now, self.window));
        }
        if wait > Duration::ZERO {
            // Whole seconds, rounded up: a client that waits that long finds a free slot.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(Duration::from_secs(secs.max(1)));
        }
        s.emails.push(&email, now, now, self.window, self.capacity);
        if let Some(a) = &addr {
            s.addrs.push(a, now, now, self.window, self.capacity);
        }
        Ok(Attempt { limiter: self, email, addr, at: now, kept: false })
    }

    /// Keys held now (e-mails, addresses), for tests.
    pub fn len(&self) -> (usize, usize) {
        let s = self.lock();
        (s.emails.0.len(), s.addrs.0.len())
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_eleventh_failure_for_an_email_is_refused_from_any_address() {
        let l = LoginLimiter::default();
        for i in 0..10 {
            l.begin("e1", ip(&format!("10.0.0.{i}"))).unwrap().failed();
        }
        let wait = l.begin("e1", ip("10.0.1.1")).unwrap_err();
        assert!(wait > Duration::from_secs(14 * 60) && wait <= WINDOW, "{wait:?}");
        // Another e-mail from a fresh address is not affected.
        l.begin("e2", ip("10.0.1.1")).unwrap().failed();
    }

    #[test]
    fn the_eleventh_failure_from_an_address_is_refused_for_any_email() {
        let l = LoginLimiter::default();
        for i in 0..10 {
            l.begin(&format!("e{i}"), ip("192.0.2.7")).unwrap().failed();
        }
        assert!(l.begin("someone-else", ip("192.0.2.7")).is_err());
        assert!(l.begin("someone-else", ip("::ffff:192.0.2.7")).is_err(), "IPv4-mapped is the same address");
        l.begin("someone-else", ip("192.0.2.8")).unwrap().failed();
    }

    #[test]
    fn ipv6_counts_by_64_prefix() {
        let l = LoginLimiter::default();
        for i in 0..10 {
            l.begin(&format!("e{i}"), ip(&format!("2001:db8:0:1::{i:x}"))).unwrap().failed();
        }
        assert!(l.begin("x", ip("2001:db8:0:1:ffff::1")).is_err());
        l.begin("x", ip("2001:db8:0:2::1")).unwrap().failed();
    }

    #[test]
    fn success_forgets_the_emails_failures_but_not_the_addresss() {
        let l = LoginLimiter::default();
        for _ in 0..9 {
            l.begin("e", ip("10.0.0.1")).unwrap().failed();
        }
        l.begin("e", ip("10.0.0.1")).unwrap().succeeded();
        // The address still has 9 failures: one more, then refused.
        l.begin("other", ip("10.0.0.1")).unwrap().failed();
        assert!(l.begin("e", ip("10.0.0.1")).is_err());
        // The e-mail itself starts over.
        for _ in 0..10 {
            l.begin("e", ip("10.0.0.2")).unwrap().failed();
        }
        assert!(l.begin("e", ip("10.0.0.3")).is_err());
    }

    #[test]
    fn an_abandoned_attempt_gives_its_slot_back() {
        let l = LoginLimiter::new(2, WINDOW, 100);
        let a = l.begin("e", ip("10.0.0.1")).unwrap();
        let b = l.begin("e", ip("10.0.0.1")).unwrap();
        // Two in flight hold both slots: a third is refused even before they end.
        assert!(l.begin("e", ip("10.0.0.1")).is_err());
        drop(a);
        b.failed();
        l.begin("e", ip("10.0.0.1")).unwrap().failed();
        assert!(l.begin("e", ip("10.0.0.1")).is_err());
    }

    #[test]
    fn failures_leave_the_window() {
        let l = LoginLimiter::new(1, Duration::from_millis(50), 100);
        l.begin("e", None).unwrap().failed();
        let wait = l.begin("e", None).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1), "at least a second, rounded up");
        std::thread::sleep(Duration::from_millis(60));
        l.begin("e", None).unwrap().failed();
    }

    #[test]
    fn memory_is_bounded() {
        let l = LoginLimiter::new(10, WINDOW, 1000);
        for i in 0..5000 {
            l.begin(&format!("e{i}"), ip(&format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)))
                .unwrap()
                .failed();
            let (e, a) = l.len();
            assert!(e <= 1000 && a <= 1000, "{e} {a}");
        }
    }
}
