//! Delivering the outbox at least once: of all processes, one worker claims each due event
//! (a lease), hands it to the [`Consumer`]s that want it, and records the result: delivered,
//! or failed and retried after a backoff, dead-lettered after [`super::MAX_ATTEMPTS`].
//! The runner also prunes old delivered events and reports the outbox's gauges.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backroom_kernel::Result;

use super::{Batch, Consumer, StoredEvent};
use crate::Db;

/// Runs [`Consumer`]s that must see each event once (webhooks, connectors): see the module.
pub struct Delivery {
    db: Db,
    consumers: Vec<Arc<dyn Consumer>>,
    /// Most events claimed at once.
    pub batch: i64,
    /// How long a claim holds an event; a worker that dies lets it go after this.
    pub lease: Duration,
    /// How long the runner waits when nothing was due.
    pub idle: Duration,
}

impl Delivery {
    pub fn new(db: Db, consumers: Vec<Arc<dyn Consumer>>) -> Self {
        Delivery { db, consumers, batch: 100, lease: Duration::from_secs(60), idle: Duration::from_millis(250) }
    }

    /// Claims due events once and delivers them; answers how many were claimed.
    pub async fn step(&self) -> Result<usize> {
        let events = super::claim(&self.db, self.batch, self.lease).await?;
        let mut done = Vec::with_capacity(events.len());
        for stored in &events {
            match self.deliver(stored).await {
                Ok(()) => done.push(stored.id),
                Err(e) => {
                    tracing::warn!(event = stored.event_id, topic = stored.topic, error = %e, "outbox delivery failed; will retry");
                    if let Err(e) = super::failed(&self.db, stored, &e).await {
                        tracing::warn!(event = stored.event_id, error = %e, "could not record a failed outbox delivery");
                    }
                }
            }
        }
        // One commit for the whole pass. Should it fail, the claims run out and the events are
        // delivered again: consumers take events at least once.
        if let Err(e) = super::delivered_all(&self.db, &done).await {
            tracing::warn!(events = done.len(), error = %e, "could not record outbox deliveries");
        }
        Ok(events.len())
    }

    /// Hands one event to every consumer that wants it, in order; the first failure stops.
    /// An event this build cannot read fails too: it waits (with backoff) for a worker that
    /// can, and is dead-lettered for a person to see if none comes.
    async fn deliver(&self, stored: &StoredEvent) -> std::result::Result<(), String> {
        let envelope = stored.decode().map_err(|e| format!("cannot read the event: {e}"))?;
        for c in self.consumers.iter().filter(|c| c.wants(&envelope.event)) {
            c.handle(Batch { events: std::slice::from_ref(&envelope), position: None })
                .await
                .map_err(|e| format!("{}: {e}", c.name()))?;
        }
        Ok(())
    }

    /// Delivers due events until `stop`; prunes hourly and sets the `outbox_*` gauges every
    /// few seconds.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut last_stats: Option<Instant> = None;
        let mut last_prune = Instant::now();
        loop {
            let claimed = match self.step().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox claim failed");
                    0
                }
            };
            if last_prune.elapsed() >= Duration::from_secs(3600) {
                last_prune = Instant::now();
                match super::prune(&self.db).await {
                    Ok(n) if n > 0 => tracing::info!(events = n, "pruned delivered outbox events"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "outbox prune failed"),
                }
            }
            if last_stats.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                last_stats = Some(Instant::now());
                if let Ok(s) = super::stats(&self.db).await {
                    metrics::gauge!("outbox_pending_events").set(s.pending as f64);
                    metrics::gauge!("outbox_dead_events").set(s.dead as f64);
                    metrics::gauge!("outbox_lag_seconds").set(s.oldest_pending_seconds);
                }
            }
            let pause = if claimed == 0 { self.idle } else { Duration::ZERO };
            tokio::select! {
                biased;
                _ = &mut stop => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
