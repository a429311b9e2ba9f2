//! Risk scoring (docs/risk.md): every checkout is scored before anything is reserved or
//! charged. Owns `risk_signals`.
//!
//! The module has two halves:
//!
//! - [`assess`], a pure function: what is known about one checkout ([`Inputs`]: its total,
//!   countries and what the last hour's [`Recent`] signals say about its e-mail, client address
//!   and payment tokens) and the [`Settings`] give an [`Assessment`]: a score from 0 to 100, a
//!   [`Decision`] and the stable reasons that led to it.
//! - [`store`]: the signals themselves (one row per checkout attempt and per declined
//!   payment), the counts [`assess`] needs, and pruning. Signals hold keyed hashes only: of the
//!   e-mail (the index the orders already use), of the client address and of the payment
//!   token. Never a clear e-mail, address or token.

pub mod store;

use backroom_kernel::{Currency, Money};
use serde::{Deserialize, Serialize};

/// What the store does with a checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Charged and placed as usual.
    Allow,
    /// The payment is authorised only; the order waits `on_hold` for a person.
    Review,
    /// Refused (`403 checkout_blocked`): nothing reserved or charged.
    Block,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Review => "review",
            Decision::Block => "block",
        }
    }
}

/// A checkout's risk: what the order shows as `risk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Assessment {
    /// 0 (nothing suspicious) to 100.
    #[schema(minimum = 0, maximum = 100, example = 0)]
    pub score: u8,
    pub decision: Decision,
    /// The rules that added to the score or forced the decision, as stable snake_case names
    /// (see [`reason`]); empty when none did.
    #[schema(example = json!([]))]
    pub reasons: Vec<String>,
}

/// The reasons an [`Assessment`] may give (documented in docs/risk.md; never renamed).
pub mod reason {
    /// `BACKROOM_RISK_MAX_DECLINES` or more declined payments for this e-mail in the last hour.
    pub const DECLINES_EMAIL: &str = "declines_email";
    /// `BACKROOM_RISK_MAX_DECLINES` or more declined payments from this client address in the
    /// last hour.
    pub const DECLINES_CLIENT: &str = "declines_client";
    /// Some declined payments (for the e-mail or from the client address) in the last hour,
    /// fewer than the limit.
    pub const RECENT_DECLINES: &str = "recent_declines";
    /// More than `BACKROOM_RISK_MAX_ATTEMPTS` checkouts (this one included) for the e-mail or
    /// from the client address in the last hour.
    pub const VELOCITY: &str = "velocity";
    /// More than `BACKROOM_RISK_MAX_CARDS` different payment tokens (this one included) for
    /// the e-mail in the last hour.
    pub const MANY_CARDS: &str = "many_cards";
    /// The shipping country is not the client's country (from the trusted header).
    pub const COUNTRY_MISMATCH: &str = "country_mismatch";
    /// The order's total is above `BACKROOM_RISK_REVIEW_ABOVE` for its currency.
    pub const AMOUNT_ABOVE_REVIEW: &str = "amount_above_review";

    /// Every reason, in the order an assessment lists them.
    pub const ALL: [&str; 7] =
        [DECLINES_EMAIL, DECLINES_CLIENT, RECENT_DECLINES, VELOCITY, MANY_CARDS, COUNTRY_MISMATCH, AMOUNT_ABOVE_REVIEW];
}

/// Points each rule adds to the score (the total is capped at 100).
pub mod points {
    /// A decline limit reached: the score is 100.
    pub const DECLINE_LIMIT: u32 = 100;
    /// Per declined payment below the limit, up to [`RECENT_DECLINES_MAX`].
    pub const PER_RECENT_DECLINE: u32 = 10;
    pub const RECENT_DECLINES_MAX: u32 = 40;
    pub const VELOCITY: u32 = 20;
    pub const MANY_CARDS: u32 = 50;
    pub const COUNTRY_MISMATCH: u32 = 25;
    pub const AMOUNT_ABOVE_REVIEW: u32 = 30;
}

/// The operator's settings (docs/risk.md has the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `BACKROOM_RISK`: `off` scores nothing and records no signal (load tests, benchmarks).
    pub enabled: bool,
    /// `BACKROOM_RISK_MAX_DECLINES`: this many declines for one e-mail or from one client
    /// address within an hour block the next checkout.
    pub max_declines: u32,
    /// `BACKROOM_RISK_MAX_ATTEMPTS`: more checkouts than this per e-mail or client address
    /// within an hour add [`points::VELOCITY`].
    pub max_attempts: u32,
    /// `BACKROOM_RISK_MAX_CARDS`: more different payment tokens than this for one e-mail
    /// within an hour send the checkout to review.
    pub max_cards: u32,
    /// `BACKROOM_RISK_REVIEW_ABOVE`: an order whose total is above its currency's amount is
    /// reviewed. Currencies not listed have no limit.
    pub review_above: Vec<Money>,
    /// `BACKROOM_RISK_COUNTRY_HEADER`: the request header a trusted proxy or CDN sets to the
    /// client's country (such as `CF-IPCountry`), lower-cased; `None`: not used.
    pub country_header: Option<String>,
    /// `BACKROOM_RISK_REVIEW_SCORE`: a score at or above it is reviewed.
    pub review_score: u8,
    /// `BACKROOM_RISK_BLOCK_SCORE`: a score at or above it is blocked.
    pub block_score: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            max_declines: 5,
            max_attempts: 20,
            max_cards: 4,
            review_above: Vec::new(),
            country_header: None,
            review_score: 70,
            block_score: 90,
        }
    }
}

impl Settings {
    /// Scoring off.
    pub fn off() -> Self {
        Settings { enabled: false, ..Settings::default() }
    }

    /// The review limit of `currency`, if one is set.
    pub fn review_limit(&self, currency: Currency) -> Option<i64> {
        self.review_above.iter().find(|m| m.currency() == currency).map(|m| m.amount())
    }

    /// Checks the settings together: scores within 1–100, review below block, limits at
    /// least 1. The error is one line for the operator.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.review_score) || !(1..=100).contains(&self.block_score) {
            return Err("BACKROOM_RISK_REVIEW_SCORE and BACKROOM_RISK_BLOCK_SCORE must be from 1 to 100".into());
        }
        if self.review_score > self.block_score {
            return Err(format!(
                "BACKROOM_RISK_REVIEW_SCORE ({}) must not be above BACKROOM_RISK_BLOCK_SCORE ({})",
                self.review_score, self.block_score
            ));
        }
        for (name, v) in [
            ("BACKROOM_RISK_MAX_DECLINES", self.max_declines),
            ("BACKROOM_RISK_MAX_ATTEMPTS", self.max_attempts),
            ("BACKROOM_RISK_MAX_CARDS", self.max_cards),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Parses `BACKROOM_RISK_REVIEW_ABOVE`: a comma list of `CUR:amount` (minor units, at least
/// 0), each currency once, such as `EUR:100000,USD:100000`. Empty items are skipped.
pub fn parse_review_above(raw: &str) -> Result<Vec<Money>, String> {
    let mut out: Vec<Money> = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = || format!("`{item}` is not CURRENCY:AMOUNT such as EUR:100000 (minor units)");
        let (code, amount) = item.split_once(':').ok_or_else(bad)?;
        let currency = Currency::parse(code.trim()).map_err(|_| format!("`{}` is not a currency code", code.trim()))?;
        let amount: i64 = amount.trim().parse().ok().filter(|a| *a >= 0).ok_or_else(bad)?;
        if out.iter().any(|m| m.currency() == currency) {
            return Err(format!("{currency} is listed twice"));
        }
        out.push(Money::new(amount, currency).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Parses a header name for `BACKROOM_RISK_COUNTRY_HEADER` (letters, digits and `-`),
/// lower-cased.
pub fn parse_header_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("`{raw}` is not a header name such as CF-IPCountry"));
    }
    Ok(name.to_ascii_lowercase())
}

/// A client country as a header gives it: two letters (upper-cased); `XX` (unknown) and
/// anything else count as not given.
pub fn client_country(value: &str) -> Option<String> {
    let v = value.trim().to_ascii_uppercase();
    (v.len() == 2 && v.bytes().all(|b| b.is_ascii_uppercase()) && v != "XX").then_some(v)
}

/// What the last hour's signals say, before this checkout (see [`store::recent`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recent {
    /// Declined payments for the e-mail.
    pub email_declines: u32,
    /// Declined payments from the client address.
    pub client_declines: u32,
    /// Checkouts for the e-mail.
    pub email_attempts: u32,
    /// Checkouts from the client address.
    pub client_attempts: u32,
    /// Different payment tokens for the e-mail, this checkout's included.
    pub email_cards: u32,
}

/// What is known about one checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub total: Money,
    /// The shipping address's country (ISO 3166-1 alpha-2).
    pub shipping_country: String,
    /// The client's country, when a trusted header gave it.
    pub client_country: Option<String>,
    pub recent: Recent,
}

/// Scores one checkout. Pure: the same inputs and settings always give the same assessment.
///
/// Each rule adds its [`points`] and may force a decision (a decline limit blocks; a total
/// above the review limit and too many cards review); the decision is the stricter of the
/// forced one and the score's (at or above `block_score` blocks, at or above `review_score`
/// reviews).
pub fn assess(settings: &Settings, inputs: &Inputs) -> Assessment {
    let r = &inputs.recent;
    let mut score: u32 = 0;
    let mut forced = Decision::Allow;
    let mut reasons: Vec<String> = Vec::new();
    let mut add = |reason: &str, pts: u32, decision: Decision, forced: &mut Decision| {
        reasons.push(reason.to_owned());
        score += pts;
        *forced = (*forced).max(decision);
    };
    let email_limit = r.email_declines >= settings.max_declines;
    let client_limit = r.client_declines >= settings.max_declines;
    if email_limit {
        add(reason::DECLINES_EMAIL, points::DECLINE_LIMIT, Decision::Block, &mut forced);
    }
    if client_limit {
        add(reason::DECLINES_CLIENT, points::DECLINE_LIMIT, Decision::Block, &mut forced);
    }
    let declines = r.email_declines.max(r.client_declines);
    if !email_limit && !client_limit && declines > 0 {
        let pts = (declines.saturating_mul(points::PER_RECENT_DECLINE)).min(points::RECENT_DECLINES_MAX);
        add(reason::RECENT_DECLINES, pts, Decision::Allow, &mut forced);
    }
    if r.email_attempts.max(r.client_attempts) >= settings.max_attempts {
        add(reason::VELOCITY, points::VELOCITY, Decision::Allow, &mut forced);
    }
    if r.email_cards > settings.max_cards {
        add(reason::MANY_CARDS, points::MANY_CARDS, Decision::Review, &mut forced);
    }
    if inputs.client_country.as_ref().is_some_and(|c| *c != inputs.shipping_country) {
        add(reason::COUNTRY_MISMATCH, points::COUNTRY_MISMATCH, Decision::Allow, &mut forced);
    }
    if settings.review_limit(inputs.total.currency()).is_some_and(|limit| inputs.total.amount() > limit) {
        add(reason::AMOUNT_ABOVE_REVIEW, points::AMOUNT_ABOVE_REVIEW, Decision::Review, &mut forced);
    }
    let score = score.min(100) as u8;
    let by_score = if score >= settings.block_score {
        Decision::Block
    } else if score >= settings.review_score {
        Decision::Review
    } else {
        Decision::Allow
    };
    Assessment { score, decision: forced.max(by_score), reasons }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::parse("EUR").unwrap()).unwrap()
    }

    fn inputs(recent: Recent) -> Inputs {
        Inputs { total: eur(4900), shipping_country: "PT".into(), client_country: None, recent }
    }

    #[test]
    fn a_quiet_checkout_is_allowed_with_no_reason() {
        let a = assess(&Settings::default(), &inputs(Recent { email_cards: 1, ..Recent::default() }));
        assert_eq!(a, Assessment { score: 0, decision: Decision::Allow, reasons: vec![] });
    }

    #[test]
    fn the_decline_limit_blocks_per_email_and_per_client() {
        let s = Settings::default();
        let a = assess(&s, &inputs(Recent { email_declines: 5, ..Recent::default() }));
        assert_eq!(
            (a.score, a.decision, a.reasons.as_slice()),
            (100, Decision::Block, &["declines_email".to_owned()][..])
        );
        let a = assess(&s, &inputs(Recent { client_declines: 5, ..Recent::default() }));
        assert_eq!(a.decision, Decision::Block);
        assert_eq!(a.reasons, ["declines_client"]);
        // One short of the limit: points, not a block.
        let a = assess(&s, &inputs(Recent { email_declines: 4, client_declines: 4, ..Recent::default() }));
        assert_eq!((a.score, a.decision), (40, Decision::Allow));
        assert_eq!(a.reasons, ["recent_declines"]);
    }

    #[test]
    fn a_total_above_the_review_limit_is_reviewed() {
        let s = Settings { review_above: parse_review_above("EUR:100000,USD:5").unwrap(), ..Settings::default() };
        let mut i = inputs(Recent::default());
        i.total = eur(100_000);
        assert_eq!(assess(&s, &i).decision, Decision::Allow, "at the limit is not above it");
        i.total = eur(100_001);
        let a = assess(&s, &i);
        assert_eq!((a.score, a.decision), (30, Decision::Review));
        assert_eq!(a.reasons, ["amount_above_review"]);
        // Another currency has its own limit, or none.
        i.total = Money::new(1_000_000, Currency::parse("JPY").unwrap()).unwrap();
        assert_eq!(assess(&s, &i).decision, Decision::Allow);
    }

    #[test]
    fn many_cards_are_reviewed_and_a_country_mismatch_adds_points() {
        let s = Settings::default();
        let a = assess(&s, &inputs(Recent { email_cards: 5, ..Recent::default() }));
        assert_eq!((a.score, a.decision), (50, Decision::Review));
        let mut i = inputs(Recent::default());
        i.client_country = Some("US".into());
        let a = assess(&s, &i);
        assert_eq!((a.score, a.decision, a.reasons.clone()), (25, Decision::Allow, vec!["country_mismatch".into()]));
        i.client_country = Some("PT".into());
        assert!(assess(&s, &i).reasons.is_empty());
    }

    #[test]
    fn scores_reach_the_thresholds() {
        // 4 declines (40) + velocity (20) + mismatch (25) = 85: reviewed; with block at 80, blocked.
        let mut i = inputs(Recent { email_declines: 4, email_attempts: 20, ..Recent::default() });
        i.client_country = Some("ES".into());
        assert_eq!(assess(&Settings::default(), &i).decision, Decision::Review);
        let strict = Settings { block_score: 80, ..Settings::default() };
        assert_eq!(assess(&strict, &i).decision, Decision::Block);
        // The defaults never review on velocity and a few declines alone.
        i.client_country = None;
        assert_eq!(
            assess(&Settings::default(), &i),
            Assessment {
                score: 60,
                decision: Decision::Allow,
                reasons: vec!["recent_declines".into(), "velocity".into()]
            }
        );
    }

    #[test]
    fn settings_are_parsed_and_checked() {
        assert_eq!(
            parse_review_above("EUR:100000, USD:5").unwrap(),
            vec![eur(100_000), Money::new(5, Currency::parse("USD").unwrap()).unwrap()]
        );
        assert!(parse_review_above("").unwrap().is_empty());
        for bad in ["EUR", "EUR:-1", "EUR:1.5", "XYZ:10", "EUR:1,EUR:2", "EUR:abc"] {
            assert!(parse_review_above(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_header_name(" CF-IPCountry ").unwrap(), "cf-ipcountry");
        assert!(parse_header_name("bad header").is_err());
        assert!(parse_header_name("").is_err());
        assert!(Settings::default().check().is_ok());
        assert!(Settings { review_score: 95, ..Settings::default() }.check().is_err());
        assert!(Settings { block_score: 0, ..Settings::default() }.check().is_err());
        assert!(Settings { max_declines: 0, ..Settings::default() }.check().is_err());
        assert_eq!(client_country(" pt "), Some("PT".into()));
        assert_eq!(client_country("XX"), None);
        assert_eq!(client_country("PRT"), None);
    }

    fn recent() -> impl Strategy<Value = Recent> {
        (0u32..12, 0u32..12, 0u32..40, 0u32..40, 1u32..10).prop_map(|(ed, cd, ea, ca, cards)| Recent {
            email_declines: ed,
            client_declines: cd,
            email_attempts: ea,
            client_attempts: ca,
            email_cards: cards,
        })
    }

    fn settings() -> impl Strategy<Value = Settings> {
        (1u32..8, 1u32..30, 1u32..6, proptest::option::of(0i64..200_000), 1u8..=100, 1u8..=100).prop_map(
            |(max_declines, max_attempts, max_cards, limit, a, b)| Settings {
                max_declines,
                max_attempts,
                max_cards,
                review_above: limit.map(eur).into_iter().collect(),
                review_score: a.min(b),
                block_score: a.max(b),
                ..Settings::default()
            },
        )
    }

    fn country() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(prop_oneof![Just("PT".to_owned()), Just("ES".to_owned()), Just("US".to_owned())])
    }

    proptest! {
        #[test]
        fn score_and_reasons_follow_the_rules(s in settings(), r in recent(), total in 0i64..300_000, cc in country()) {
            let i = Inputs { total: eur(total), shipping_country: "PT".into(), client_country: cc.clone(), recent: r };
            let a = assess(&s, &i);
            prop_assert!(a.score <= 100);
            let has = |reason: &str| a.reasons.iter().any(|x| x == reason);
            let email_limit = r.email_declines >= s.max_declines;
            let client_limit = r.client_declines >= s.max_declines;
            prop_assert_eq!(has(reason::DECLINES_EMAIL), email_limit);
            prop_assert_eq!(has(reason::DECLINES_CLIENT), client_limit);
            prop_assert_eq!(has(reason::RECENT_DECLINES),
                !email_limit && !client_limit && r.email_declines.max(r.client_declines) > 0);
            prop_assert_eq!(has(reason::VELOCITY), r.email_attempts.max(r.client_attempts) >= s.max_attempts);
            prop_assert_eq!(has(reason::MANY_CARDS), r.email_cards > s.max_cards);
            prop_assert_eq!(has(reason::COUNTRY_MISMATCH), cc.as_deref().is_some_and(|c| c != "PT"));
            prop_assert_eq!(has(reason::AMOUNT_ABOVE_REVIEW), s.review_limit(i.total.currency()).is_some_and(|l| total > l));
            // Each reason once, in the documented order.
            let order: Vec<usize> = a.reasons.iter().map(|x| reason::ALL.iter().position(|r| r == x).unwrap()).collect();
            prop_assert!(order.windows(2).all(|w| w[0] < w[1]));
            if email_limit || client_limit {
                prop_assert_eq!(a.decision, Decision::Block);
            }
            if has(reason::MANY_CARDS) || has(reason::AMOUNT_ABOVE_REVIEW) {
                prop_assert!(a.decision >= Decision::Review);
            }
            if a.reasons.is_empty() {
                prop_assert_eq!((a.score, a.decision), (0, Decision::Allow));
            }
        }

        /// One more decline (for the e-mail or from the client) never lowers the score or
        /// softens the decision.
        #[test]
        fn monotonic_in_declines(s in settings(), r in recent(), more_email in any::<bool>(), cc in country()) {
            let i = Inputs { total: eur(4900), shipping_country: "PT".into(), client_country: cc, recent: r };
            let mut j = i.clone();
            if more_email { j.recent.email_declines += 1 } else { j.recent.client_declines += 1 }
            let (a, b) = (assess(&s, &i), assess(&s, &j));
            prop_assert!(b.score >= a.score, "{:?} -> {:?}", a, b);
            prop_assert!(b.decision >= a.decision, "{:?} -> {:?}", a, b);
        }
    }
}
