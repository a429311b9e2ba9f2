//! Passwords: argon2id at no less than OWASP's recommended cost, hashed and verified on a
//! small, bounded pool of blocking threads.
//!
//! One hash takes tens of milliseconds of one core and 19 MiB of memory, on purpose. Unbounded,
//! a flood of sign-ins would take every blocking thread and every core from checkout; so at
//! most [`Hasher::permits`] run at once, at most [`Hasher::queue`] more wait for a turn, and a
//! request past that is shed at once with `503 overloaded` (nothing done; `Retry-After`).
//!
//! A sign-in for an e-mail no customer has is verified against [`Hasher::dummy`], a hash of
//! a random password made at start with the same parameters, so that it costs the same time
//! as a wrong password: the answer's timing does not tell registered e-mails apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use backroom_kernel::{Error, Result};
use tokio::sync::Semaphore;

/// Memory cost in KiB: OWASP's Password Storage Cheat Sheet recommends argon2id with at least
/// 19 MiB, 2 iterations and 1 degree of parallelism.
pub const M_COST: u32 = 19 * 1024;
/// Iterations.
pub const T_COST: u32 = 2;
/// Lanes.
pub const P_COST: u32 = 1;

/// Hashes that may run at once by default: half the machine's cores, at least one, so that a
/// flood of sign-ins can never take every core from checkout.
pub fn permits() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get() / 2).max(1)
}
/// Hash requests that may wait for a turn by default; more are shed.
pub const QUEUE: usize = 64;

/// The shortest and longest password accepted, in characters.
pub const MIN_LEN: usize = 10;
pub const MAX_LEN: usize = 256;

/// The argon2id context every hash is made with.
fn argon2() -> Argon2<'static> {
    let params = Params::new(M_COST, T_COST, P_COST, None).expect("OWASP's parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks a new password's length (in characters; anything else is the customer's choice).
pub fn check(password: &str) -> std::result::Result<(), String> {
    let n = password.chars().count();
    if (MIN_LEN..=MAX_LEN).contains(&n) { Ok(()) } else { Err(format!("must be {MIN_LEN}–{MAX_LEN} characters")) }
}

/// Hashes `password` (argon2id, a fresh random salt) into a PHC string. Blocking: call it
/// through [`Hasher`].
pub fn hash_now(password: &str) -> Result<String> {
    argon2().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(Error::internal)
}

/// Whether `password` matches the PHC string `phc`, with the parameters `phc` names. A
/// malformed `phc` is a mismatch. Blocking: call it through [`Hasher`].
pub fn verify_now(password: &str, phc: &str) -> bool {
    argon2().verify_password(password.as_bytes(), phc).is_ok()
}

/// A hash of a random password, made once per process with the parameters of every hash.
fn dummy() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        use rand::RngCore;
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        hash_now(&hex::encode(random)).expect("hashing a random password works")
    })
}

/// The bounded pool that hashes and verifies passwords.
#[derive(Debug)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Requests holding or waiting for a permit.
    pending: AtomicUsize,
    limit: usize,
    /// A hash of a random password, verified against when no customer has the e-mail.
    dummy: String,
}

/// Gives a slot of the pool back when dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hasher {
    /// A pool running at most `permits` hashes at once with at most `queue` more waiting.
    /// Makes the dummy hash on first use in the process (one hash's time).
    pub fn new(permits: usize, queue: usize) -> Self {
        let permits = permits.max(1);
        Hasher {
            permits: Arc::new(Semaphore::new(permits)),
            pending: AtomicUsize::new(0),
            limit: permits + queue,
            dummy: dummy().to_owned(),
        }
    }

    /// Runs `f` on a blocking thread once a permit is free; `503 overloaded` at once when the
    /// queue is full. The permit is held until `f` returns, even when the caller gives up
    /// waiting, so no more than the permits ever run.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("password_hashes_shed_total").increment(1);
            return Err(Error::Overloaded("too many sign-ins and registrations at once"));
        }
        let _slot = Slot(&self.pending);
        let permit = self.permits.clone().acquire_owned().await.map_err(Error::internal)?;
        let started = std::time::Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await
        .map_err(Error::internal)?;
        metrics::histogram!("password_hash_seconds").record(started.elapsed().as_secs_f64());
        Ok(out)
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        self.run(move || hash_now(&password)).await?
    }

    /// Verifies `password` against `phc`, or against the dummy hash when there is none (the
    /// answer is then `false`, after the same work).
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool> {
        let (password, known) = (password.to_owned(), phc.is_some());
        let phc = phc.unwrap_or(&self.dummy).to_owned();
        let matched = self.run(move || verify_now(&password, &phc)).await?;
        Ok(matched && known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_at_owasp_cost_or_more() {
        let phc = hash_now("correct horse battery").unwrap();
        let parsed = argon2::password_hash::phc::PasswordHash::new(&phc).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        let params = Params::try_from(&parsed).unwrap();
        // OWASP: m ≥ 19 MiB with t ≥ 2, p = 1 (or a stronger trade).
        assert!(params.m_cost() >= 19_456, "m = {}", params.m_cost());
        assert!(params.t_cost() >= 2, "t = {}", params.t_cost());
        assert!(params.p_cost() >= 1);
        assert!(parsed.salt.is_some_and(|s| s.len() >= 16), "a salt of 16 bytes or more");
        assert!(verify_now("correct horse battery", &phc));
        assert!(!verify_now("correct horse battery!", &phc));
        assert!(!verify_now("correct horse battery", "not a phc string"));
        // Each hash has its own salt.
        assert_ne!(hash_now("correct horse battery").unwrap(), phc);
    }

    #[test]
    fn password_lengths_count_characters() {
        assert!(check("123456789").is_err());
        assert!(check("1234567890").is_ok());
        assert!(check(&"é".repeat(10)).is_ok());
        assert!(check(&"x".repeat(256)).is_ok());
        assert!(check(&"x".repeat(257)).is_err());
    }

    #[tokio::test]
    async fn an_unknown_account_is_verified_against_the_dummy_and_never_matches() {
        let h = Hasher::new(1, 4);
        let phc = h.hash("a long enough password").await.unwrap();
        assert!(h.verify("a long enough password", Some(&phc)).await.unwrap());
        assert!(!h.verify("a long enough password", None).await.unwrap());
        assert!(!h.verify("wrong", Some(&phc)).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_sheds_at_once() {
        let h = Arc::new(Hasher::new(1, 1));
        let runs: Vec<_> = (0..6)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.hash("a long enough password").await })
            })
            .collect();
        let mut shed = 0;
        let mut done = 0;
        for r in runs {
            match r.await.unwrap() {
                Ok(_) => done += 1,
                Err(Error::Overloaded(_)) => shed += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(done >= 2 && shed >= 1, "done {done}, shed {shed}");
        assert_eq!(h.pending.load(Ordering::Acquire), 0, "every slot is given back");
    }
}
