//! The outbox's readers on both databases: the broadcast reader (every process reads every
//! event, never skipping one that commits late, skipping ones it cannot read) and the two
//! runners that hand typed events to consumers: broadcast, and at-least-once delivery.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backroom_db::outbox::{
    self, Action, Batch, BoxFuture, Broadcast, Consumer, Delivery, Event, ProductChanged, StockChanged,
};
use backroom_db::{ConnectOptions, Db};
use backroom_kernel::{Error, Result};

/// Runs `check` on a fresh SQLite database and on a fresh PostgreSQL one.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let url = backroom_db::sqlite_url_in(dir.path());
                super::$name(super::open(&url).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                if let Some(pg) = backroom_db::testing::fresh_postgres().await {
                    super::$name(super::open(pg.url()).await).await;
                }
            }
        }
    };
}

async fn open(url: &str) -> Db {
    let db = Db::connect(&ConnectOptions::new(url)).await.unwrap();
    db.migrate().await.unwrap();
    db
}

fn stock(variant: &str) -> Event {
    Event::StockChanged(StockChanged { variant_ids: vec![variant.to_owned()], order_id: None })
}

fn product(id: &str) -> Event {
    Event::ProductChanged(ProductChanged { product_id: id.to_owned(), action: Action::Updated })
}

async fn enqueue(db: &Db, events: &[Event]) {
    let mut tx = db.begin().await.unwrap();
    for e in events {
        outbox::enqueue(&mut tx.conn(), e).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// Writes a row as another build might have: any topic, any payload.
async fn enqueue_raw(db: &Db, topic: &str, payload: &str) {
    let mut tx = db.begin().await.unwrap();
    let ts = backroom_kernel::now();
    let event_id = backroom_kernel::id::new("evt");
    backroom_db::sql::query(
        "INSERT INTO outbox (event_id, topic, payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(event_id)
    .bind(topic)
    .bind(payload)
    .bind(ts)
    .execute(&mut tx.conn())
    .await
    .map(|_| ())
    .unwrap();
    tx.commit().await.unwrap();
}

/// Waits until at least `n` events after `position` are visible to a broadcast reader. On
/// PostgreSQL the reader's horizon waits for every transaction still running on the server,
/// those of tests running alongside included.
async fn visible(db: &Db, position: &str, n: usize) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while outbox::broadcast::read(db, position).await.unwrap().0.len() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("events become visible within 20 s");
}

/// The variant ids of stock events, in the order given.
fn variants(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .flat_map(|e| match e {
            Event::StockChanged(s) => s.variant_ids.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// What consumers were handed: who, the event, the batch's position.
type Log = Arc<Mutex<Vec<(&'static str, Event, Option<String>)>>>;

/// A consumer that writes what it was handed into a log shared with others, and fails
/// while `failures` is above zero.
struct Recorder {
    name: &'static str,
    only_stock: bool,
    log: Log,
    failures: AtomicUsize,
    resume_from: Option<String>,
}

impl Recorder {
    fn new(name: &'static str, log: &Log) -> Self {
        Recorder { name, only_stock: false, log: log.clone(), failures: AtomicUsize::new(0), resume_from: None }
    }
}

impl Consumer for Recorder {
    fn name(&self) -> &'static str {
        self.name
    }

    fn wants(&self, event: &Event) -> bool {
        !self.only_stock || matches!(event, Event::StockChanged(_))
    }

    fn handle<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(Error::internal(format!("{} was told to fail", self.name)));
            }
            let mut log = self.log.lock().unwrap();
            for e in batch.events {
                log.push((self.name, e.event.clone(), batch.position.map(str::to_owned)));
            }
            Ok(())
        })
    }

    fn resume<'a>(&'a self, head: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move { Ok(self.resume_from.clone().unwrap_or_else(|| head.to_owned())) })
    }
}

/// A transaction that takes the first id and commits after a later one never has its
/// event skipped: on PostgreSQL the sequence hands out ids in one order and transactions
/// may commit in another; on SQLite the single writer makes the two orders the same.
async fn late_commits_are_not_skipped(db: Db) {
    let start = outbox::broadcast::head(&db).await.unwrap();
    // A takes the first id and stays open; B takes the next id and commits first.
    let mut a = db.begin().await.unwrap();
    outbox::enqueue(&mut a.conn(), &stock("var_a")).await.unwrap();
    let b_done = {
        let db = db.clone();
        // On SQLite the single writer makes B wait for A: commit A from here first.
        async move {
            let mut b = db.begin().await.unwrap();
            outbox::enqueue(&mut b.conn(), &stock("var_b")).await.unwrap();
            b.commit().await.unwrap();
        }
    };
    let mut seen = Vec::new();
    let mut position = start.clone();
    if db.dialect() == backroom_db::Dialect::Postgres {
        b_done.await;
        let (events, next) = outbox::broadcast::read(&db, &position).await.unwrap();
        seen.extend(events);
        position = next;
        a.commit().await.unwrap();
    } else {
        a.commit().await.unwrap();
        b_done.await;
    }
    visible(&db, &position, 2 - seen.len()).await;
    for _ in 0..3 {
        let (events, next) = outbox::broadcast::read(&db, &position).await.unwrap();
        seen.extend(events);
        position = next;
    }
    let mut who = variants(&seen.into_iter().map(|e| e.event).collect::<Vec<_>>());
    who.sort();
    assert_eq!(who, ["var_a", "var_b"], "each event read exactly once, the late one included");
}
both!(late_commits_are_not_skipped);

/// Events of an unknown topic, of a newer version, or not JSON at all are passed over: the
/// reader hands on the ones around them and its position moves past them.
async fn events_it_cannot_read_are_skipped(db: Db) {
    let start = outbox::broadcast::head(&db).await.unwrap();
    enqueue(&db, &[stock("var_1")]).await;
    enqueue_raw(&db, "order.shipped", r#"{"v":1,"order_id":"ord_1"}"#).await;
    enqueue_raw(&db, "product.changed", r#"{"v":2,"product_id":"prd_1","renamed":true}"#).await;
    enqueue_raw(&db, "stock.changed", "not json").await;
    // Written before payloads had a version: still read, as version 1.
    enqueue_raw(&db, "stock.changed", r#"{"variant_ids":["var_old"]}"#).await;
    enqueue(&db, &[stock("var_2")]).await;

    visible(&db, &start, 3).await;
    let (events, next) = outbox::broadcast::read(&db, &start).await.unwrap();
    let events: Vec<Event> = events.into_iter().map(|e| e.event).collect();
    assert_eq!(variants(&events), ["var_1", "var_old", "var_2"]);
    assert_eq!(events.len(), 3);
    let (again, _) = outbox::broadcast::read(&db, &next).await.unwrap();
    assert!(again.is_empty(), "the position moved past every event, the skipped ones too");

    // A runner does not stop on them either.
    let log: Log = Arc::default();
    let mut recorder = Recorder::new("recorder", &log);
    recorder.resume_from = Some(start);
    let runner = Broadcast::new(db.clone()).with(Arc::new(recorder));
    let position = runner.start().await.unwrap();
    let position = runner.step(&position).await.unwrap();
    enqueue(&db, &[stock("var_3")]).await;
    visible(&db, &position, 1).await;
    runner.step(&position).await.unwrap();
    let seen: Vec<Event> = log.lock().unwrap().iter().map(|(_, e, _)| e.clone()).collect();
    assert_eq!(variants(&seen), ["var_1", "var_old", "var_2", "var_3"]);
}
both!(events_it_cannot_read_are_skipped);

/// The broadcast runner hands each consumer the events it wants, in the order consumers were
/// added, with the position after them; a failure hands the whole batch again to all.
async fn broadcast_hands_typed_events_in_order(db: Db) {
    let before = outbox::broadcast::head(&db).await.unwrap();
    enqueue(&db, &[product("prd_early")]).await;

    let log: Log = Arc::default();
    let mut index = Recorder::new("index", &log);
    index.only_stock = true;
    // The index saved a position from before the early event: the runner starts there.
    index.resume_from = Some(before.clone());
    let index = Arc::new(index);
    let cache = Arc::new(Recorder::new("cache", &log));
    let runner = Broadcast::new(db.clone()).with(index.clone()).with(cache.clone());
    let position = runner.start().await.unwrap();
    assert_eq!(position, before, "the earliest position any consumer resumes from");

    enqueue(&db, &[stock("var_1"), product("prd_1")]).await;
    visible(&db, &position, 3).await;
    // The index fails once: nobody moves on, the cache does not see the batch yet.
    index.failures.store(1, Ordering::SeqCst);
    assert!(runner.step(&position).await.is_err());
    assert!(log.lock().unwrap().is_empty());
    let next = runner.step(&position).await.unwrap();
    let log = log.lock().unwrap().clone();
    let seen: Vec<(&str, Event)> = log.iter().map(|(name, e, _)| (*name, e.clone())).collect();
    assert_eq!(
        seen,
        [
            ("index", stock("var_1")),
            ("cache", product("prd_early")),
            ("cache", stock("var_1")),
            ("cache", product("prd_1")),
        ]
    );
    assert!(log.iter().all(|(_, _, p)| p.as_deref() == Some(next.as_str())), "each batch carries the new position");
    assert!(runner.step(&next).await.is_ok());
}
both!(broadcast_hands_typed_events_in_order);

/// The delivery runner hands each event to the consumers that want it, typed; a failure is
/// retried after the backoff, and an event this build cannot read is never handed on.
async fn delivery_retries_failed_events(db: Db) {
    let log: Log = Arc::default();
    let mut webhook = Recorder::new("webhook", &log);
    webhook.only_stock = true;
    let webhook = Arc::new(webhook);
    let delivery = Delivery::new(db.clone(), vec![webhook.clone()]);

    enqueue(&db, &[stock("var_1"), product("prd_1")]).await;
    enqueue_raw(&db, "order.shipped", r#"{"v":1}"#).await;
    webhook.failures.store(1, Ordering::SeqCst);
    assert_eq!(delivery.step().await.unwrap(), 3);
    assert!(log.lock().unwrap().is_empty(), "the failed attempt recorded nothing");
    let stats = outbox::stats(&db).await.unwrap();
    assert_eq!(stats.pending, 2, "the stock event waits for a retry, so does the unreadable one");
    // Backoff: nothing due now. Pretend time passed by moving the due times back.
    assert_eq!(delivery.step().await.unwrap(), 0);
    let mut tx = db.begin().await.unwrap();
    backroom_db::sql::query("UPDATE outbox SET next_attempt_at = created_at WHERE delivered_at IS NULL")
        .execute(&mut tx.conn())
        .await
        .map(|_| ())
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(delivery.step().await.unwrap(), 2);
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen, [("webhook", stock("var_1"), None)]);
    assert_eq!(outbox::stats(&db).await.unwrap().pending, 1, "only the unreadable event is left");

    // The runner itself (claims in a loop until stopped) delivers what comes in.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(Delivery::new(db.clone(), vec![webhook.clone()]).run(async {
        let _ = stop_rx.await;
    }));
    enqueue(&db, &[stock("var_2")]).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while log.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the runner delivers within 10 s");
    stop_tx.send(()).unwrap();
    running.await.unwrap();
    assert_eq!(log.lock().unwrap()[1].1, stock("var_2"));
}
both!(delivery_retries_failed_events);
