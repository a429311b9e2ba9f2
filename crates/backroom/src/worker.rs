//! The background worker that runs inside `serve`: payment recovery (checkout) and outbox
//! delivery (with its pruning and metrics). Each loop stops when the shutdown signal fires.

use std::sync::Arc;

use backroom_checkout::Checkout;
use backroom_db::{Db, outbox};
use tokio::sync::watch;

/// Resolves when `stop` turns true.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Starts the worker's loops; they end when `stop` turns true. `consumers` are run by the
/// outbox's at-least-once [`outbox::Delivery`] runner (the webhooks' fan-out; connectors later),
/// whose claims last `lease` (`BACKROOM_WEBHOOK_LEASE`): events a dead worker claimed are
/// handed again after it.
pub fn spawn(
    db: Db,
    checkout: Checkout,
    consumers: Vec<Arc<dyn outbox::Consumer>>,
    lease: std::time::Duration,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let recovery = tokio::spawn(checkout.run_recovery(stopped(stop.clone())));
    let mut runner = outbox::Delivery::new(db, consumers);
    runner.lease = lease;
    let delivery = tokio::spawn(runner.run(stopped(stop)));
    vec![recovery, delivery]
}
