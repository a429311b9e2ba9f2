//! Every metric the process exports, in one list: its name, kind, help text, and the label
//! sets known in advance.
//!
//! [`describe`] runs when the recorder is installed: each metric gets its `# HELP` and
//! `# TYPE` lines, and each counter and gauge whose labels are known up front is registered at
//! zero, so `/metrics` shows the whole set from the first scrape (a rate over a counter that
//! appears only at its first event is wrong for that first interval, and an alert on "absent"
//! cannot tell "none yet" from "not exported"). A test checks that every metric the code
//! records is listed here.

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric.
#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// The label sets registered at zero at start (`&[&[]]` for an unlabelled metric;
    /// empty when the labels are only known when it is recorded, such as a route).
    pub zero: &'static [&'static [(&'static str, &'static str)]],
}

const NONE: &[&[(&str, &str)]] = &[&[]];

macro_rules! metric {
    ($kind:ident $name:literal, $help:literal) => {
        metric!($kind $name, $help, NONE)
    };
    ($kind:ident $name:literal, $help:literal, $zero:expr) => {
        Metric { name: $name, kind: Kind::$kind, help: $help, zero: $zero }
    };
}

/// Every metric, by subsystem.
pub static METRICS: &[Metric] = &[
    // HTTP
    metric!(Counter "http_requests_total", "HTTP requests answered, by method, matched route and status", &[]),
    metric!(Histogram "http_request_duration_seconds", "Time to answer an HTTP request, by method and matched route", &[]),
    metric!(Counter "http_requests_shed_total", "Requests answered 503 overloaded because too many were in flight"),
    metric!(Counter "http_request_timeouts_total", "Requests answered 503 request_timeout at the request deadline"),
    metric!(Counter "http_connections_refused_total", "Connections closed at once because the connection cap was reached"),
    metric!(Gauge "http_open_connections", "Client connections open now"),
    metric!(Counter "card_data_refused_total", "Requests refused because they carried something shaped like a card number"),
    metric!(
        Counter "catalog_cache_total",
        "Public catalog answers served from this process's cache (hit) or computed (miss)",
        &[&[("result", "hit")], &[("result", "miss")]]
    ),
    metric!(Gauge "product_views", "Published products whose storefront view this process holds (search pages are made of them)"),
    metric!(Counter "product_views_db_loads_total", "Searches that had to load storefront views from the database (products without a current view)"),
    metric!(Gauge "price_book_lists", "Price lists this process holds in its price book (members' storefront prices)"),
    metric!(Counter "price_book_loads_total", "Loads of the price book from the database (at start, and after a price-list change)"),
    metric!(
        Counter "http_rate_limited_total",
        "Store requests answered 429 rate_limited, by rate-limit class (login, checkout, browse)",
        &[&[("class", "login")], &[("class", "checkout")], &[("class", "browse")]]
    ),
    metric!(
        Counter "stock_batch_rows_total",
        "Rows of POST /admin/stock/batch by result (applied, refused)",
        &[&[("result", "applied")], &[("result", "refused")]]
    ),
    // Staff
    metric!(Counter "audit_log_failures_total", "Successful staff writes that could not be recorded in the audit log (logged as errors)"),
    // Checkout and payments
    metric!(
        Counter "checkout_outcomes_total",
        "Checkout requests by outcome (placed, payment_declined, insufficient_stock, replayed, error, …)",
        &[
            &[("result", "placed")],
            &[("result", "payment_pending")],
            &[("result", "payment_declined")],
            &[("result", "insufficient_stock")],
            &[("result", "price_changed")],
            &[("result", "replayed")],
            &[("result", "error")],
        ]
    ),
    metric!(Counter "stock_conflicts_total", "Checkouts refused because a line was not in stock"),
    metric!(
        Counter "risk_decisions_total",
        "Checkouts scored by risk scoring, by decision (allow, review, block)",
        &[&[("decision", "allow")], &[("decision", "review")], &[("decision", "block")]]
    ),
    metric!(Counter "payment_provider_timeouts_total", "Payment provider calls cut at the provider deadline, by provider", &[]),
    metric!(
        Counter "recovery_settled_total",
        "Unsettled payment attempts that recovery settled, by result",
        &[&[("result", "placed")], &[("result", "failed")]]
    ),
    metric!(Gauge "recovery_unreachable_attempts", "Payment attempts recovery could not settle because the provider did not answer"),
    metric!(Gauge "recovery_expired_attempts", "Payment attempts past their reservation's time, waiting for recovery"),
    // Customers
    metric!(
        Counter "customer_logins_total",
        "Customer sign-ins by result (success, invalid_credentials, rate_limited)",
        &[&[("result", "success")], &[("result", "invalid_credentials")], &[("result", "rate_limited")]]
    ),
    metric!(Histogram "password_hash_seconds", "Time a password hash or check took on the password pool, waiting excluded", &[]),
    metric!(Counter "password_hashes_shed_total", "Registrations and sign-ins shed with 503 because the password pool's queue was full"),
    metric!(Counter "customers_erased_total", "Customers whose personal data was erased"),
    // Shipping
    metric!(Gauge "carrier_breaker_state", "The breaker of each carrier quote URL, by host: 0 closed, 1 open (no request sent), 2 half-open (one trial in flight)", &[]),
    metric!(
        Counter "carrier_quotes_total",
        "Carrier quotes by result (ok; timeout, error, refused, breaker_open answered the fallback)",
        &[&[("result", "ok")], &[("result", "timeout")], &[("result", "error")], &[("result", "refused")], &[("result", "breaker_open")]]
    ),
    metric!(Histogram "carrier_quote_seconds", "Time a carrier quote took, fallback included", &[]),
    // Outgoing webhooks
    metric!(
        Counter "webhook_deliveries_total",
        "Webhook delivery attempts by result (delivered; retry: failed, tried again later; failed: the last attempt failed)",
        &[&[("result", "delivered")], &[("result", "retry")], &[("result", "failed")]]
    ),
    metric!(Counter "webhook_endpoint_failures_total", "Webhook attempts that failed (no 2xx answer within the timeout), all endpoints together"),
    metric!(Counter "webhook_endpoints_disabled_total", "Webhook endpoints disabled after failing for BACKROOM_WEBHOOK_DISABLE_AFTER"),
    metric!(Histogram "webhook_delivery_lag_seconds", "Time from an event to its webhook's delivery (retries included)", &[]),
    // The write path
    metric!(Gauge "db_writer_queued_jobs", "Write jobs waiting for the writer"),
    metric!(Counter "db_writer_retries_total", "Write jobs run again after losing a lock conflict (a deadlock victim, a serialization failure)"),
    metric!(
        Counter "db_writer_shed_total",
        "Write jobs refused before running, by reason (queue_full, deadline, cancelled)",
        &[&[("why", "queue_full")], &[("why", "deadline")], &[("why", "cancelled")]]
    ),
    metric!(
        Counter "db_writer_batches_total",
        "Write transactions (group commits) by result",
        &[&[("result", "committed")], &[("result", "failed")]]
    ),
    metric!(Histogram "db_writer_batch_size", "Write jobs per group commit", &[]),
    metric!(Histogram "db_writer_batch_seconds", "Time a group commit took, jobs and commit together", &[]),
    metric!(Histogram "db_writer_commit_seconds", "Time the COMMIT of a group commit took", &[]),
    // The outbox
    metric!(Counter "outbox_product_loads_total", "Loads of changed products (catalog rows and availability) by this process's outbox follower, for the search index and the storefront views"),
    metric!(Gauge "outbox_pending_events", "Outbox events not yet delivered"),
    metric!(Gauge "outbox_dead_events", "Outbox events given up on after too many failed deliveries"),
    metric!(Gauge "outbox_lag_seconds", "Age of the oldest undelivered outbox event"),
    // Stripe
    metric!(
        Counter "stripe_webhooks_total",
        "Stripe webhook deliveries, by result (applied, refunds, duplicate, unmatched, ignored, invalid_signature, malformed, error)",
        &[&[("result", "applied")], &[("result", "duplicate")], &[("result", "invalid_signature")]]
    ),
    metric!(Counter "stripe_refunds_seen_total", "Refunds that Stripe reported in charge.refunded events"),
    metric!(Counter "stripe_api_errors_total", "Failed calls to Stripe's API (before any retry), by call and kind (transport, server)", &[]),
];

/// Gives every metric its help text and registers the known label sets at zero. Called
/// once, when the recorder is installed.
pub fn describe() {
    for m in METRICS {
        match m.kind {
            Kind::Counter => {
                metrics::describe_counter!(m.name, m.help);
                for labels in m.zero {
                    metrics::counter!(m.name, labels_of(labels)).increment(0);
                }
            }
            Kind::Gauge => {
                metrics::describe_gauge!(m.name, m.help);
                for labels in m.zero {
                    metrics::gauge!(m.name, labels_of(labels)).increment(0.0);
                }
            }
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

fn labels_of(labels: &[(&'static str, &'static str)]) -> Vec<metrics::Label> {
    labels.iter().map(|&(k, v)| metrics::Label::new(k, v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `metrics::counter!/gauge!/histogram!("name"…)` in the workspace's sources names
    /// a metric of [`METRICS`], of that kind; every listed metric is recorded somewhere.
    #[test]
    fn every_recorded_metric_is_listed() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut sources = Vec::new();
        collect(&root.join("crates"), &mut sources);
        let mut recorded = std::collections::BTreeSet::new();
        for (path, text) in &sources {
            for (kind, mac) in
                [(Kind::Counter, "counter!("), (Kind::Gauge, "gauge!("), (Kind::Histogram, "histogram!(")]
            {
                for (at, _) in text.match_indices(mac) {
                    let rest = text[at + mac.len()..].trim_start();
                    let Some(rest) = rest.strip_prefix('"') else { continue };
                    let name = &rest[..rest.find('"').expect("a closed string")];
                    let listed = METRICS.iter().find(|m| m.name == name);
                    assert!(listed.is_some(), "{}: metric {name} is not in telemetry::METRICS", path.display());
                    assert_eq!(listed.unwrap().kind, kind, "{}: {name} recorded as another kind", path.display());
                    recorded.insert(name.to_owned());
                }
            }
        }
        for m in METRICS {
            assert!(recorded.contains(m.name), "{} is listed but never recorded", m.name);
        }
        let mut names: Vec<_> = METRICS.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), METRICS.len(), "a metric is listed twice");
    }

    fn collect(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).expect("a readable source tree") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target" && n != "tests") {
                    collect(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("telemetry.rs") {
                out.push((path.clone(), std::fs::read_to_string(&path).expect("readable")));
            }
        }
    }
}
