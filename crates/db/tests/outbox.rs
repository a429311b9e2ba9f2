//! The outbox on both databases: events committed with their transaction only, claims that
//! never hand one event to two workers, backoff, and the dead-letter list.

use std::collections::HashSet;
use std::time::Duration;

use backroom_db::outbox::{Action, Event, ProductChanged, StockChanged};
use backroom_db::{ConnectOptions, Db, outbox};

async fn check(db: Db) {
    db.migrate().await.unwrap();
    // An event written in a rolled-back transaction never exists.
    {
        let mut tx = db.begin().await.unwrap();
        let rolled_back =
            Event::ProductChanged(ProductChanged { product_id: "prd_gone".into(), action: Action::Created });
        outbox::enqueue(&mut tx.conn(), &rolled_back).await.unwrap();
    }
    let mut tx = db.begin().await.unwrap();
    for i in 0..40 {
        let event = Event::StockChanged(StockChanged { variant_ids: vec![format!("var_{i}")], order_id: None });
        outbox::enqueue(&mut tx.conn(), &event).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(outbox::list(&db, "product.changed").await.unwrap().len(), 0);
    assert_eq!(outbox::stats(&db).await.unwrap().pending, 40);

    // Four workers claim at once: every event goes to exactly one of them.
    let claims = futures_join(&db).await;
    let mut seen = HashSet::new();
    let mut total = 0;
    for batch in &claims {
        for e in batch {
            assert!(seen.insert(e.id), "event {} claimed twice", e.id);
            total += 1;
        }
    }
    assert_eq!(total, 40);
    // Claimed events are leased: nothing more to claim now.
    assert!(outbox::claim(&db, 100, Duration::from_secs(60)).await.unwrap().is_empty());

    // Deliver all but one; fail that one until it is dead-lettered.
    let all: Vec<_> = claims.into_iter().flatten().collect();
    let (bad, good) = all.split_first().unwrap();
    for e in good {
        outbox::delivered(&db, e.id).await.unwrap();
    }
    let mut event = bad.clone();
    for attempt in 1..=outbox::MAX_ATTEMPTS {
        assert_eq!(event.attempts, attempt);
        outbox::failed(&db, &event, "consumer said no").await.unwrap();
        if attempt == outbox::MAX_ATTEMPTS {
            break;
        }
        // Backoff: not claimable at once. Pretend time passed by moving its due time back.
        assert!(outbox::claim(&db, 10, Duration::from_secs(60)).await.unwrap().is_empty());
        let mut tx = db.begin().await.unwrap();
        backroom_db::sql::query("UPDATE outbox SET next_attempt_at = created_at WHERE id = $1")
            .bind(event.id)
            .execute(&mut tx.conn())
            .await
            .map(|_| ())
            .unwrap();
        tx.commit().await.unwrap();
        event = outbox::claim(&db, 10, Duration::from_secs(60)).await.unwrap().pop().expect("due again");
    }
    let stats = outbox::stats(&db).await.unwrap();
    assert_eq!((stats.pending, stats.dead), (0, 1));
    let dead = outbox::dead(&db, 10).await.unwrap();
    assert_eq!(dead[0].last_error.as_deref(), Some("consumer said no"));
}

async fn futures_join(db: &Db) -> Vec<Vec<outbox::StoredEvent>> {
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = outbox::claim(&db, 3, Duration::from_secs(60)).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch);
                }
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    check(Db::connect(&ConnectOptions::new(backroom_db::sqlite_url_in(dir.path()))).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_on_postgres() {
    if let Some(pg) = backroom_db::testing::fresh_postgres().await {
        let url = pg.url().to_owned();
        check(Db::connect(&ConnectOptions::new(url)).await.unwrap()).await;
    }
}
