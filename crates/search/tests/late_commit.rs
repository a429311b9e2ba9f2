//! A broadcast reader never skips an event whose transaction commits after a later one's.
//! On PostgreSQL the sequence hands out ids in one order and transactions may commit in
//! another; on SQLite the single writer makes the two orders the same.

use backroom_db::{ConnectOptions, Db, outbox};
use backroom_search::follow;

async fn check(db: Db) {
    db.migrate().await.unwrap();
    let start = follow::head(&db).await.unwrap();
    // A takes the first id and stays open; B takes the next id and commits first.
    let mut a = db.begin().await.unwrap();
    outbox::enqueue(&mut a.conn(), "test.late", &serde_json::json!({"who": "a"})).await.unwrap();
    let b_done = {
        let db = db.clone();
        // On SQLite the single writer makes B wait for A: commit A from here first.
        async move {
            let mut b = db.begin().await.unwrap();
            outbox::enqueue(&mut b.conn(), "test.late", &serde_json::json!({"who": "b"})).await.unwrap();
            b.commit().await.unwrap();
        }
    };
    let mut seen = Vec::new();
    let mut position = start.clone();
    if db.dialect() == backroom_db::Dialect::Postgres {
        b_done.await;
        let (rows, next) = follow::read(&db, &position).await.unwrap();
        seen.extend(rows);
        position = next;
        a.commit().await.unwrap();
    } else {
        a.commit().await.unwrap();
        b_done.await;
    }
    for _ in 0..3 {
        let (rows, next) = follow::read(&db, &position).await.unwrap();
        seen.extend(rows);
        position = next;
    }
    let mut who: Vec<String> = seen
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.payload).unwrap()["who"].as_str().unwrap().to_owned())
        .collect();
    who.sort();
    assert_eq!(who, ["a", "b"], "each event read exactly once, the late one included");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_commits_are_not_skipped_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    check(Db::connect(&ConnectOptions::new(backroom_db::sqlite_url_in(dir.path()))).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_commits_are_not_skipped_on_postgres() {
    if let Some(url) = backroom_db::testing::fresh_postgres_url().await {
        check(Db::connect(&ConnectOptions::new(url)).await.unwrap()).await;
    }
}
