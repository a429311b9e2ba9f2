//! The background worker that runs inside `serve`: payment recovery (checkout), outbox
//! dispatch, and outbox metrics. Each loop stops when the shutdown signal fires.

use std::time::Duration;

use backroom_checkout::Checkout;
use backroom_db::{Db, outbox};
use tokio::sync::watch;

/// A consumer of outbox events (search, webhooks, connectors come in later issues).
/// Delivery is at least once: a consumer de-duplicates by `event_id`.
pub trait Consumer: Send + Sync {
    fn topics(&self) -> &[&str];
    fn deliver<'a>(&'a self, event: &'a outbox::Event) -> backroom_payments::BoxFuture<'a, Result<(), String>>;
}

/// Resolves when `stop` turns true.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Starts the worker's loops; they end when `stop` turns true.
pub fn spawn(
    db: Db,
    checkout: Checkout,
    consumers: Vec<Box<dyn Consumer>>,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let recovery = tokio::spawn(checkout.run_recovery(stopped(stop.clone())));
    let dispatch = tokio::spawn(dispatch(db, consumers, stop));
    vec![recovery, dispatch]
}

/// Claims due events, hands each to the consumers of its topic, records the result.
async fn dispatch(db: Db, consumers: Vec<Box<dyn Consumer>>, stop: watch::Receiver<bool>) {
    let mut last_stats: Option<std::time::Instant> = None;
    let mut last_prune = std::time::Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        let events = match outbox::claim(&db, 100, Duration::from_secs(60)).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "outbox claim failed");
                Vec::new()
            }
        };
        for event in &events {
            let mut result = Ok(());
            for c in consumers.iter().filter(|c| c.topics().contains(&event.topic.as_str())) {
                if let Err(e) = c.deliver(event).await {
                    result = Err(e);
                    break;
                }
            }
            let recorded = match result {
                Ok(()) => outbox::delivered(&db, event.id).await,
                Err(e) => {
                    tracing::warn!(event = event.event_id, error = %e, "outbox delivery failed; will retry");
                    outbox::failed(&db, event, &e).await
                }
            };
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "could not record an outbox delivery");
            }
        }
        if last_prune.elapsed() >= Duration::from_secs(3600) {
            last_prune = std::time::Instant::now();
            match outbox::prune(&db).await {
                Ok(n) if n > 0 => tracing::info!(events = n, "pruned delivered outbox events"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox prune failed"),
            }
        }
        if last_stats.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            last_stats = Some(std::time::Instant::now());
            if let Ok(s) = outbox::stats(&db).await {
                metrics::gauge!("outbox_pending_events").set(s.pending as f64);
                metrics::gauge!("outbox_dead_events").set(s.dead as f64);
                metrics::gauge!("outbox_lag_seconds").set(s.oldest_pending_seconds);
            }
        }
        if events.is_empty() {
            let mut s = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = s.changed() => {}
            }
        }
    }
}
