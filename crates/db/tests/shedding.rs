//! The group-commit writer sheds load instead of growing (both databases): a full queue
//! answers `Overloaded` at once with nothing done, follow-up jobs are never shed, a job past
//! its deadline is shed or cancelled and rolled back alone, and a write started inside a job
//! is refused instead of deadlocking.

use std::time::Duration;

use backroom_db::writer::Done;
use backroom_db::{ConnectOptions, Db, storage};
use backroom_kernel::Error;
use tokio::sync::oneshot;

async fn setup(url: String, queue: usize, job_timeout: Duration) -> Db {
    let db = Db::connect(&ConnectOptions {
        writer_queue: queue,
        writer_job_timeout: job_timeout,
        ..ConnectOptions::new(url)
    })
    .await
    .unwrap();
    db.migrate().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    backroom_db::sql::query("CREATE TABLE shed_test (id BIGINT PRIMARY KEY)")
        .execute(&mut tx.conn())
        .await
        .map(|_| ())
        .unwrap();
    tx.commit().await.unwrap();
    db
}

/// A job that inserts `id`, then waits for `hold` (if any) before answering: it keeps the
/// writer as long as the test wants.
fn job(
    id: i64,
    hold: Option<oneshot::Receiver<()>>,
) -> impl for<'c> FnOnce(backroom_db::Conn<'c>) -> backroom_db::writer::BoxFuture<'c, Result<Done<i64>, Error>>
+ Send
+ 'static {
    move |mut conn| {
        Box::pin(async move {
            backroom_db::sql::query("INSERT INTO shed_test (id) VALUES ($1)")
                .bind(id)
                .execute(&mut conn)
                .await
                .map(|_| ())
                .map_err(storage)?;
            if let Some(hold) = hold {
                let _ = hold.await;
            }
            Ok(Done::Commit(id))
        })
    }
}

async fn insert(db: &Db, id: i64, hold: Option<oneshot::Receiver<()>>, followup: bool) -> Result<i64, Error> {
    if followup { db.write_followup(job(id, hold)).await } else { db.write(job(id, hold)).await }
}

async fn ids(db: &Db) -> Vec<i64> {
    let mut r = db.read().await.unwrap();
    backroom_db::sql::query("SELECT id FROM shed_test ORDER BY id")
        .fetch_all::<(i64,)>(&mut r.conn())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect()
}

/// Waits until `n` jobs have been handed to the writer (queued or running).
async fn until_jobs(db: &Db, n: u64) {
    for _ in 0..500 {
        if db.writer_stats().jobs >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the writer never took {n} jobs: {:?}", db.writer_stats());
}

async fn full_queue_sheds_new_work_but_not_followups(url: String) {
    let db = setup(url, 4, Duration::from_secs(30)).await;
    // Job 1 holds the writer; four more fill the queue.
    let (release, hold) = oneshot::channel();
    let first = tokio::spawn({
        let db = db.clone();
        async move { insert(&db, 1, Some(hold), false).await }
    });
    until_jobs(&db, 1).await;
    let mut queued = Vec::new();
    for id in 2..=5 {
        let db = db.clone();
        queued.push(tokio::spawn(async move { insert(&db, id, None, false).await }));
    }
    // Give the four jobs time to enter the queue (they are not taken while job 1 runs).
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The queue is full: new work is refused at once, with nothing written.
    for id in 100..110 {
        match insert(&db, id, None, false).await {
            Err(Error::Overloaded(_)) => {}
            other => panic!("job {id} on a full queue: {other:?}"),
        }
    }
    // A follow-up (finishing admitted work) is still taken.
    let followup = tokio::spawn({
        let db = db.clone();
        async move { insert(&db, 50, None, true).await }
    });
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    for (i, q) in queued.into_iter().enumerate() {
        assert_eq!(q.await.unwrap().unwrap(), i as i64 + 2);
    }
    assert_eq!(followup.await.unwrap().unwrap(), 50);
    assert_eq!(ids(&db).await, [1, 2, 3, 4, 5, 50]);
    let stats = db.writer_stats();
    assert_eq!(stats.shed, 10, "{stats:?}");
    // Once drained, new work goes through again.
    assert_eq!(insert(&db, 200, None, false).await.unwrap(), 200);
}

async fn deadlines_shed_waiting_jobs_and_cancel_running_ones(url: String) {
    let db = setup(url, 64, Duration::from_millis(300)).await;
    // Two follow-ups that never let go by themselves: each is cancelled 300 ms after it
    // started and its insert undone, so the writer is held for about 600 ms in all.
    let (_never1, hold1) = oneshot::channel::<()>();
    let (_never2, hold2) = oneshot::channel::<()>();
    let spawn = |id: i64, hold: Option<oneshot::Receiver<()>>, followup: bool| {
        let db = db.clone();
        tokio::spawn(async move { insert(&db, id, hold, followup).await })
    };
    let first = spawn(1, Some(hold1), true);
    until_jobs(&db, 1).await;
    let second = spawn(2, Some(hold2), true);
    // Queued behind both: new work waits past its deadline and is shed without running; a
    // follow-up waits as long but still runs (its answer may tell of money that moved).
    let followup = spawn(3, None, true);
    let waiting: Vec<_> = (10..14).map(|id| spawn(id, None, false)).collect();
    for held in [first, second] {
        let cancelled =
            tokio::time::timeout(Duration::from_secs(10), held).await.expect("the deadline ends it").unwrap();
        assert!(matches!(cancelled, Err(Error::Unavailable(_))), "{cancelled:?}");
    }
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), followup).await.unwrap().unwrap().unwrap(), 3);
    for w in waiting {
        match tokio::time::timeout(Duration::from_secs(10), w).await.unwrap().unwrap() {
            Err(Error::Overloaded(_)) => {}
            other => panic!("new work queued past its deadline: {other:?}"),
        }
    }
    assert_eq!(ids(&db).await, [3], "cancelled jobs' writes are rolled back, shed ones never ran");
    assert_eq!(db.writer_stats().expired, 6, "{:?}", db.writer_stats());
    // The writer carries on.
    assert_eq!(insert(&db, 9, None, false).await.unwrap(), 9);
    assert_eq!(ids(&db).await, [3, 9]);
}

async fn a_nested_write_is_an_error_not_a_deadlock(url: String) {
    let db = setup(url, 64, Duration::from_secs(30)).await;
    let inner = db.clone();
    let outer = db.write(move |_conn| {
        Box::pin(async move {
            let nested = inner.write(|_c| Box::pin(async { Ok(Done::Commit(())) })).await;
            let begun = inner.begin().await.map(|_| ());
            Ok(Done::Commit((nested, begun)))
        })
    });
    let (nested, begun) = tokio::time::timeout(Duration::from_secs(10), outer)
        .await
        .expect("no deadlock")
        .expect("the outer job commits");
    assert!(matches!(nested, Err(Error::Internal(_))), "{nested:?}");
    assert!(matches!(begun, Err(Error::Internal(_))), "{begun:?}");
    assert_eq!(insert(&db, 7, None, false).await.unwrap(), 7);
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                super::$name(backroom_db::sqlite_url_in(dir.path())).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(pg) = backroom_db::testing::fresh_postgres().await {
                    let url = pg.url().to_owned();
                    super::$name(url).await;
                }
            }
        }
    };
}

both!(full_queue_sheds_new_work_but_not_followups);
both!(deadlines_shed_waiting_jobs_and_cancel_running_ones);
both!(a_nested_write_is_an_error_not_a_deadlock);
