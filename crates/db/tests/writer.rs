//! The group-commit writer on both databases: concurrent jobs share commits, a failing,
//! rolled-back or panicking job loses only its own writes, and every answer comes after the
//! commit that made it durable.

use std::sync::Arc;

use backroom_db::writer::Done;
use backroom_db::{ConnectOptions, Db, storage};
use backroom_kernel::{Code, Error};

async fn insert(db: &Db, id: i64, kind: &'static str) -> Result<&'static str, Error> {
    db.write(move |mut conn| {
        Box::pin(async move {
            backroom_db::sql::query("INSERT INTO writer_test (id, kind) VALUES ($1, $2)")
                .bind(id)
                .bind(kind)
                .execute(&mut conn)
                .await
                .map(|_| ())
                .map_err(storage)?;
            match kind {
                "rollback" => Ok(Done::Rollback("rolled back")),
                "fail" => Err(Error::refused(Code::Conflict, "this job fails after writing")),
                "panic" => panic!("this job panics after writing"),
                _ => Ok(Done::Commit("committed")),
            }
        })
    })
    .await
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    let mut r = db.read().await.unwrap();
    backroom_db::sql::query(sql).fetch_scalar(&mut r.conn()).await.unwrap()
}

async fn check(db: Db) {
    db.migrate().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    backroom_db::sql::query("CREATE TABLE writer_test (id BIGINT PRIMARY KEY, kind TEXT NOT NULL)")
        .execute(&mut tx.conn())
        .await
        .map(|_| ())
        .unwrap();
    tx.commit().await.unwrap();

    // 400 jobs at once; every fifth rolls back, every seventh fails, one panics, and every
    // thirteenth collides with an earlier id (a constraint violation inside the batch).
    let db = Arc::new(db);
    let mut tasks = Vec::new();
    for i in 0..400i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let (id, kind) = match i {
                200 => (i, "panic"),
                _ if i % 13 == 12 => (i - 1, "commit"),
                _ if i % 7 == 0 => (i, "fail"),
                _ if i % 5 == 0 => (i, "rollback"),
                _ => (i, "commit"),
            };
            (i, kind, insert(&db, id, kind).await)
        }));
    }
    let mut committed = 0;
    for t in tasks {
        let (i, kind, answer) = t.await.unwrap();
        // Jobs i and i + 1 (when i + 1 is 12 mod 13) insert the same id: whichever runs
        // second gets the violation, and only it fails.
        let shares_id = i % 13 == 12 || (i + 1) % 13 == 12;
        match (kind, &answer) {
            ("commit", Ok("committed")) => committed += 1,
            (_, Err(Error::Internal(_))) if shares_id => {}
            ("rollback", Ok("rolled back")) | ("fail", Err(Error::Refused { code: Code::Conflict, .. })) => {}
            ("panic", Err(Error::Internal(_))) => {}
            other => panic!("job {i}: unexpected answer {other:?}"),
        }
    }
    assert_eq!(count(&db, "SELECT COUNT(*) FROM writer_test").await, committed);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM writer_test WHERE kind <> 'commit'").await, 0);
    let stats = db.writer_stats();
    assert_eq!(stats.jobs, 400);
    assert_eq!(stats.failed_batches, 0);
    assert!(stats.batches < 400, "jobs queued together must share commits: {stats:?}");

    // The writer carries on after all that.
    assert_eq!(insert(&db, 10_000, "commit").await.unwrap(), "committed");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM writer_test WHERE id = 10000").await, 1);

    // Transactions of their own (admin writes) get their turn while batches keep coming: on
    // SQLite the writer's connection and `Db::begin`'s are two writers of one file.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8i64)
        .map(|k| {
            let (db, stop) = (db.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0i64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    insert(&db, 100_000 + k * 100_000 + n, "commit").await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    for i in 0..20i64 {
        let mut tx = db.begin().await.unwrap();
        backroom_db::sql::query("INSERT INTO writer_test (id, kind) VALUES ($1, 'commit')")
            .bind(20_000 + i)
            .execute(&mut tx.conn())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut loaded = 0;
    for t in load {
        loaded += t.await.unwrap();
    }
    assert!(loaded > 0, "the batches ran meanwhile");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM writer_test WHERE id >= 20000 AND id < 20020").await, 20);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM writer_test WHERE id >= 100000").await, loaded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writer_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    check(Db::connect(&ConnectOptions::new(backroom_db::sqlite_url_in(dir.path()))).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writer_on_postgres() {
    if let Some(pg) = backroom_db::testing::fresh_postgres().await {
        let url = pg.url().to_owned();
        check(Db::connect(&ConnectOptions::new(url)).await.unwrap()).await;
    }
}

/// A job that bumps row `first`, waits, then bumps row `second`, counting its runs.
fn bump_both(
    runs: Arc<std::sync::atomic::AtomicU32>,
    first: i64,
    second: i64,
) -> impl for<'c> FnOnce(backroom_db::Conn<'c>) -> backroom_db::writer::BoxFuture<'c, Result<Done<()>, Error>> + Send + 'static
{
    move |mut conn| {
        Box::pin(async move {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let bump = "UPDATE deadlock_test SET n = n + 1 WHERE id = $1";
            backroom_db::sql::query(bump).bind(first).execute(&mut conn).await.map_err(storage)?;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            backroom_db::sql::query(bump).bind(second).execute(&mut conn).await.map_err(storage)?;
            Ok(Done::Commit(()))
        })
    }
}

/// Two processes' writers lock two rows in opposite orders. On PostgreSQL one job is chosen as
/// the deadlock victim and `write_retrying` runs it again, so both answer `Ok` and both
/// increments stay; on SQLite the second simply waits for the first.
async fn deadlock_victims_run_again(url: &str) {
    let (a, b) =
        (Db::connect(&ConnectOptions::new(url)).await.unwrap(), Db::connect(&ConnectOptions::new(url)).await.unwrap());
    a.migrate().await.unwrap();
    let mut tx = a.begin().await.unwrap();
    for sql in [
        "CREATE TABLE deadlock_test (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)",
        "INSERT INTO deadlock_test VALUES (1, 0), (2, 0)",
    ] {
        backroom_db::sql::query(sql).execute(&mut tx.conn()).await.unwrap();
    }
    tx.commit().await.unwrap();
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let job = |first: i64, second: i64| {
        let runs = runs.clone();
        move || bump_both(runs.clone(), first, second)
    };
    let (x, y) = tokio::join!(a.write_retrying(job(1, 2)), b.write_retrying(job(2, 1)));
    x.unwrap();
    y.unwrap();
    assert_eq!(
        count(&a, "SELECT CAST(SUM(n) AS BIGINT) FROM deadlock_test").await,
        4,
        "both jobs' writes stay, once each"
    );
    let runs = runs.load(std::sync::atomic::Ordering::SeqCst);
    match a.dialect() {
        backroom_db::Dialect::Postgres => assert_eq!(runs, 3, "the deadlock victim ran again"),
        backroom_db::Dialect::Sqlite => assert_eq!(runs, 2, "SQLite's writers wait for each other"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deadlock_victims_run_again_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    deadlock_victims_run_again(&backroom_db::sqlite_url_in(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deadlock_victims_run_again_on_postgres() {
    if let Some(pg) = backroom_db::testing::fresh_postgres().await {
        deadlock_victims_run_again(pg.url()).await;
    }
}
