//! Group commit: one writer per database that runs whatever write jobs are queued in one
//! transaction and answers each job only after that transaction has committed.
//!
//! Hot writes (checkout, carts, the test provider's ledger) go through [`Db::write`] instead
//! of [`Db::begin`]. Contention is beaten by batching in front of one writer, not by smarter
//! locks: on SQLite one `fsync` then serves a whole batch; on PostgreSQL a hot stock row is
//! locked once per batch instead of once per order.
//!
//! - Each job runs inside its own `SAVEPOINT`: a job that fails (or asks for
//!   [`Done::Rollback`]) is rolled back alone and its neighbours in the batch still commit.
//! - Nobody is answered before the batch's `COMMIT` returned, so an acknowledged write is as
//!   durable as the database's settings make it (`synchronous=FULL`, `synchronous_commit=on`),
//!   and an answer never rests on a neighbour's write that did not commit. If the commit
//!   fails, every job in the batch gets `Unavailable` and nothing of the batch is kept.
//! - A job runs to its end even if the request that queued it is gone (the client hung up):
//!   its writes are as atomic as a transaction's, and the caller simply never reads the answer.
//! - A job that panics is rolled back like a failed one; the writer carries on.
//! - Load is shed, not queued without end: at most [`Limits::queue`] new jobs wait; past that
//!   [`Db::write`](crate::Db::write) answers [`Error::Overloaded`] at once, with nothing done.
//!   Follow-up jobs (finishing work already admitted, such as a checkout's settlement) have a
//!   lane of their own that is never shed and is served first, so admitted work drains.
//! - Every job has a deadline ([`Limits::job_timeout`]): a new job not started that long after
//!   it was queued is answered `Overloaded` without running; a job still running that long
//!   after its start (after its queueing, for new work) is cancelled and rolled back alone.
//!   Follow-ups always start, since their answer may tell of money that moved.
//! - A job that calls `Db::write` or `Db::begin` itself would wait for the writer it is
//!   blocking: that call is refused with an error instead ([`refuse_nested`]).
//!
//! - On SQLite the writer owns a connection of its own on a thread of its own, and jobs' statements
//!   ([`crate::sql`]) run synchronously there; a job that never awaits anything else cannot be
//!   cancelled half-way, so its deadline applies when it starts. On PostgreSQL jobs run on a
//!   pooled connection from a task, and the deadline also cancels a running job.
//!
//! Written here rather than taken from a crate: group commit has to sit on top of both
//! databases' transactions and savepoints, which no general-purpose crate does.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use backroom_kernel::Error;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::{Conn, Pools, Tx, on_conn, storage};

/// A boxed, sendable future, as write jobs return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a write job wants done with its writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done<T> {
    /// Keep the writes; answer `T` once the batch has committed.
    Commit(T),
    /// Undo this job's writes (only this job's); answer `T` once the batch has committed.
    Rollback(T),
}

/// Most jobs in one commit by default. Bounded so that one batch's latency stays small and a
/// failing `COMMIT` affects a bounded number of requests.
pub const MAX_BATCH: usize = 512;

/// Most new jobs waiting for the writer by default: about a second of work at the writer's
/// measured limit on a small machine (docs/benchmarks.md), a few MiB of memory at most.
pub const QUEUE: usize = 4096;

/// A job's deadline by default (see [`Limits::job_timeout`]).
pub const JOB_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most jobs in one transaction.
    pub max_batch: usize,
    /// Most new jobs waiting; past it new jobs are shed.
    pub queue: usize,
    /// A job's deadline: counted from its queueing for new work (not started by then, it is
    /// shed; still running, cancelled), from its start for a follow-up.
    pub job_timeout: Duration,
}

/// Which queue a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// New work: shed when the queue is full.
    New,
    /// Work that finishes something already admitted: never shed, served first.
    Followup,
}

tokio::task_local! {
    /// Set while a write job runs: a nested `Db::write`/`Db::begin` would deadlock.
    static IN_JOB: ();
}

/// Refuses `what` (a write) when called from inside a write job, where it would wait for the
/// writer that is waiting for it.
pub(crate) fn refuse_nested(what: &str) -> Result<(), Error> {
    if IN_JOB.try_with(|_| ()).is_ok() {
        tracing::error!(what, "a write job tried to start another write; refused (it would deadlock)");
        return Err(Error::internal(format!("{what} called inside a write job (it would deadlock)")));
    }
    Ok(())
}

/// A job's answer, sent once the batch's fate is known.
type Reply = Box<dyn FnOnce(Result<(), &Error>) + Send>;
/// How the writer starts a job: on the batch's connection, or not at all (past its deadline).
enum Start<'c> {
    Run(Conn<'c>),
    Expired,
}
/// A type-erased job: runs on the batch's connection, says whether to keep its writes, and
/// leaves a [`Reply`] to call after the commit. Told `Expired`, it answers `Overloaded` at once.
type JobFn = Box<dyn for<'c> FnOnce(Start<'c>) -> BoxFuture<'c, (bool, Reply)> + Send>;

/// A job with the moment it was queued.
struct Job {
    run: JobFn,
    queued: Instant,
    lane: Lane,
}

struct Senders {
    new: mpsc::Sender<Job>,
    followup: mpsc::UnboundedSender<Job>,
}

/// The queue in front of the writer. The task starts on first use, on the caller's runtime.
pub(crate) struct Batcher {
    tx: OnceLock<Senders>,
    stats: Arc<Counters>,
    limits: Limits,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    jobs: AtomicU64,
    failed_batches: AtomicU64,
    shed: AtomicU64,
    expired: AtomicU64,
}

/// What the writer has done since the process started (benchmarks and tests read it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Transactions committed or attempted.
    pub batches: u64,
    /// Jobs run in them.
    pub jobs: u64,
    /// Batches whose commit failed (every job in them was answered with an error).
    pub failed_batches: u64,
    /// Jobs refused because the queue was full.
    pub shed: u64,
    /// Jobs answered `Overloaded` or cancelled because they passed their deadline.
    pub expired: u64,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("started", &self.tx.get().is_some()).finish()
    }
}

impl Batcher {
    pub(crate) fn new(limits: Limits) -> Self {
        Self { tx: OnceLock::new(), stats: Arc::default(), limits }
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            jobs: self.stats.jobs.load(Ordering::Relaxed),
            failed_batches: self.stats.failed_batches.load(Ordering::Relaxed),
            shed: self.stats.shed.load(Ordering::Relaxed),
            expired: self.stats.expired.load(Ordering::Relaxed),
        }
    }

    fn senders(&self, pools: &Pools) -> &Senders {
        self.tx.get_or_init(|| {
            let (new, new_rx) = mpsc::channel(self.limits.queue);
            let (followup, followup_rx) = mpsc::unbounded_channel();
            let (stats, limits) = (self.stats.clone(), self.limits);
            match pools {
                Pools::Sqlite { own, gate, .. } => {
                    let (own, gate) = (own.clone(), gate.clone());
                    spawn_sqlite_writer(
                        move |conn| run(Store::Lite(conn, gate), new_rx, followup_rx, stats, limits),
                        own,
                    )
                }
                Pools::Postgres(pool) => {
                    drop(tokio::spawn(run(Store::Postgres(pool.clone()), new_rx, followup_rx, stats, limits)))
                }
            }
            Senders { new, followup }
        })
    }

    pub(crate) async fn write<T, F>(&self, pools: &Pools, lane: Lane, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Conn<'c>) -> BoxFuture<'c, Result<Done<T>, Error>> + Send + 'static,
    {
        refuse_nested("Db::write")?;
        let (answer, answered) = oneshot::channel::<Result<T, Error>>();
        let run: JobFn = Box::new(move |start: Start<'_>| {
            Box::pin(async move {
                let conn = match start {
                    Start::Run(conn) => conn,
                    Start::Expired => {
                        let _ = answer.send(Err(Error::Overloaded("a write waited past its deadline")));
                        return (false, Box::new(|_: Result<(), &Error>| {}) as Reply);
                    }
                };
                let result = AssertUnwindSafe(IN_JOB.scope((), f(conn))).catch_unwind().await.unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(panic = what, "a write job panicked; its writes are rolled back");
                    Err(Error::internal(format!("a write job panicked: {what}")))
                });
                let (keep, value) = match result {
                    Ok(Done::Commit(v)) => (true, Ok(v)),
                    Ok(Done::Rollback(v)) => (false, Ok(v)),
                    Err(e) => (false, Err(e)),
                };
                let reply: Reply = Box::new(move |committed: Result<(), &Error>| {
                    let out = match committed {
                        Ok(()) => value,
                        Err(e) => Err(batch_failed(e)),
                    };
                    // The caller may be gone (client hung up); its writes stand regardless.
                    let _ = answer.send(out);
                });
                (keep, reply)
            }) as BoxFuture<'_, (bool, Reply)>
        });
        let job = Job { run, queued: Instant::now(), lane };
        let senders = self.senders(pools);
        let stopped = || Error::Unavailable("the database writer has stopped".into());
        match lane {
            Lane::Followup => senders.followup.send(job).map_err(|_| stopped())?,
            Lane::New => match senders.new.try_send(job) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.stats.shed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("db_writer_shed_total", "why" => "queue_full").increment(1);
                    return Err(Error::Overloaded("the write queue is full"));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(stopped()),
            },
        }
        // A dropped answer: the writer stopped, or cancelled the job at its deadline (then
        // its writes were rolled back).
        answered.await.map_err(|_| Error::Unavailable("the write was cancelled or the writer stopped".into()))?
    }
}

fn batch_failed(e: &Error) -> Error {
    Error::Unavailable(format!("the write could not be committed: {e}").into())
}

/// SQLite's writer runs on a thread of its own and owns its connection (rusqlite, not sqlx):
/// a job's statements run synchronously right there, a few microseconds each. Through sqlx,
/// every statement was a hand-off to the connection's own thread and back, two wake-ups
/// (~35 µs a statement on a 2-core VM, docs/benchmarks.md), and only one of the two threads
/// ever ran at a time. Jobs are still futures (they are written once for both databases), but
/// on this connection they never wait: the thread's single-threaded runtime polls them through.
fn spawn_sqlite_writer<Fut>(
    task: impl FnOnce(Arc<std::sync::Mutex<rusqlite::Connection>>) -> Fut + Send + 'static,
    own: Arc<std::sync::Mutex<Option<rusqlite::Connection>>>,
) where
    Fut: Future<Output = ()>,
{
    let spawned = std::thread::Builder::new().name("backroom-writer".into()).spawn(move || {
        let conn = own.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let Some(conn) = conn else {
            tracing::error!("the SQLite writer's connection is gone; writes will fail");
            return;
        };
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "the database writer cannot start its runtime");
                return;
            }
        };
        rt.block_on(task(Arc::new(std::sync::Mutex::new(conn))));
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the database writer thread cannot start");
    }
}

/// Where the writer writes: PostgreSQL through the pool, or SQLite's writer connection (with
/// the turn queue it shares with `Db::begin`).
enum Store {
    Postgres(sqlx::PgPool),
    Lite(Arc<std::sync::Mutex<rusqlite::Connection>>, Arc<tokio::sync::Mutex<()>>),
}

/// A batch's open transaction.
enum Outer<'s> {
    Postgres(Tx),
    Lite(&'s std::sync::Mutex<rusqlite::Connection>, tokio::sync::MutexGuard<'s, ()>),
}

impl Store {
    /// `BEGIN` and the first job's savepoint. On SQLite `BEGIN IMMEDIATE`: the write lock
    /// from the start, so a transaction of another connection (`Db::begin`) waits for the
    /// batch (busy timeout) instead of failing on a snapshot it cannot upgrade.
    async fn begin(&self) -> Result<Outer<'_>, Error> {
        match self {
            Store::Postgres(pool) => {
                let mut tx = Tx::Postgres(pool.begin().await.map_err(storage)?);
                savepoint_sql(&mut tx, "SAVEPOINT job").await?;
                Ok(Outer::Postgres(tx))
            }
            Store::Lite(c, gate) => {
                let turn = gate.lock().await;
                lite(c, "BEGIN IMMEDIATE; SAVEPOINT job").inspect_err(|_| abort_lite(c))?;
                Ok(Outer::Lite(c, turn))
            }
        }
    }
}

impl Outer<'_> {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Outer::Postgres(tx) => tx.conn(),
            Outer::Lite(c, _) => Conn::Local(c),
        }
    }

    /// Savepoint statements: one round trip on PostgreSQL (a simple query may hold several
    /// statements without parameters), a direct call on SQLite.
    async fn savepoint(&mut self, sql: &'static str) -> Result<(), Error> {
        match self {
            Outer::Postgres(tx) => savepoint_sql(tx, sql).await,
            Outer::Lite(c, _) => lite(c, sql),
        }
    }

    async fn commit(self) -> Result<(), Error> {
        match self {
            Outer::Postgres(tx) => tx.commit().await,
            Outer::Lite(c, _turn) => lite(c, "COMMIT").inspect_err(|_| abort_lite(c)),
        }
    }

    /// Gives the transaction up (dropping a sqlx transaction rolls it back).
    fn abort(self) {
        if let Outer::Lite(c, _turn) = self {
            abort_lite(c);
        }
    }
}

/// Runs statements without arguments on the SQLite writer's connection.
fn lite(c: &std::sync::Mutex<rusqlite::Connection>, sql: &str) -> Result<(), Error> {
    let c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    c.execute_batch(sql).map_err(|e| storage(crate::sql::from_lite(e)))
}

/// Rolls back whatever transaction the SQLite writer's connection still has open.
fn abort_lite(c: &std::sync::Mutex<rusqlite::Connection>) {
    let c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !c.is_autocommit()
        && let Err(e) = c.execute_batch("ROLLBACK")
    {
        tracing::error!(error = %e, "the SQLite writer could not roll back a failed batch");
    }
}

async fn run(
    store: Store,
    mut new: mpsc::Receiver<Job>,
    mut followup: mpsc::UnboundedReceiver<Job>,
    stats: Arc<Counters>,
    limits: Limits,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(limits.max_batch);
    loop {
        // Follow-ups first: they finish work that holds stock and money in between.
        let first = tokio::select! {
            biased;
            Some(j) = followup.recv() => j,
            Some(j) = new.recv() => j,
            else => return,
        };
        jobs.push(first);
        while jobs.len() < limits.max_batch {
            match followup.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => match new.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                },
            }
        }
        metrics::gauge!("db_writer_queued_jobs").set(new.len() as f64);
        stats.jobs.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        if !run_batch(&store, &mut jobs, &stats, limits.job_timeout).await {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs one batch: `BEGIN`, every job in its own savepoint, `COMMIT`, then the answers.
/// Whether the batch committed.
async fn run_batch(store: &Store, jobs: &mut Vec<Job>, stats: &Counters, job_timeout: Duration) -> bool {
    let started = Instant::now();
    let size = jobs.len();
    let mut replies: Vec<Reply> = Vec::with_capacity(size);
    let mut outer = match store.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            // The jobs never ran; dropping them drops their answer channels, which their
            // callers read as Unavailable.
            tracing::error!(error = %e, jobs = size, "the writer cannot start a transaction");
            jobs.clear();
            return false;
        }
    };
    let mut broken = None;
    for job in jobs.drain(..) {
        if broken.is_some() {
            // The transaction is gone: dropping the job drops its answer channel, which its
            // caller reads as "the writer has stopped" (Unavailable).
            continue;
        }
        let left = match job.lane {
            // New work whose caller has waited too long already (and may have given up) is
            // shed below. A follow-up finishes work whose money may have moved: it always
            // starts, with the full deadline for running.
            Lane::New => job_timeout.checked_sub(job.queued.elapsed()),
            Lane::Followup => Some(job_timeout),
        };
        let Some(left) = left else {
            stats.expired.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("db_writer_shed_total", "why" => "deadline").increment(1);
            let (_, answered) = (job.run)(Start::Expired).await;
            drop(answered);
            continue;
        };
        match in_savepoint(&mut outer, job.run, left).await {
            Ok(Some(reply)) => replies.push(reply),
            Ok(None) => {
                stats.expired.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("db_writer_shed_total", "why" => "cancelled").increment(1);
            }
            Err(e) => broken = Some(e),
        }
    }
    let committed = match broken {
        Some(e) => {
            outer.abort();
            Err(e)
        }
        None => {
            let committing = Instant::now();
            let r = outer.commit().await;
            metrics::histogram!("db_writer_commit_seconds").record(committing.elapsed().as_secs_f64());
            r
        }
    };
    if let Err(e) = &committed {
        tracing::error!(error = %e, jobs = size, "a write batch failed; every job in it is answered with an error");
    }
    metrics::histogram!("db_writer_batch_size").record(size as f64);
    metrics::histogram!("db_writer_batch_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("db_writer_batches_total", "result" => if committed.is_ok() { "committed" } else { "failed" })
        .increment(1);
    for reply in replies {
        reply(committed.as_ref().map(|_| ()));
    }
    committed.is_ok()
}

/// Runs one job inside the open savepoint `job` of `outer`, then keeps its writes (release
/// the savepoint and open the next one, in one round trip) or undoes them (roll back to the
/// savepoint, which stays open for the next job). One statement per job besides its own.
/// A job still running after `left` is cancelled and rolled back (`Ok(None)`: its caller's
/// answer channel is dropped with it). `Err` means the batch's transaction itself is broken
/// (the savepoint could not be rolled back), so nothing of the batch may be kept.
async fn in_savepoint(outer: &mut Outer<'_>, job: JobFn, left: Duration) -> Result<Option<Reply>, Error> {
    let ran = tokio::time::timeout(left, job(Start::Run(outer.conn()))).await;
    let (keep, reply) = match ran {
        Ok((keep, reply)) => (keep, Some(reply)),
        Err(_) => {
            tracing::warn!(limit = ?left, "a write job ran past its deadline; cancelled and rolled back");
            (false, None)
        }
    };
    let sql = if keep { "RELEASE SAVEPOINT job; SAVEPOINT job" } else { "ROLLBACK TO SAVEPOINT job" };
    outer.savepoint(sql).await?;
    Ok(reply)
}

/// Savepoint statements on a sqlx transaction, sent as one simple query (both drivers accept
/// several statements without parameters in one round trip).
async fn savepoint_sql(outer: &mut Tx, sql: &'static str) -> Result<(), Error> {
    on_conn!(&mut outer.conn(), c => sqlx::raw_sql(sql).execute(&mut *c).await.map(|_| ()).map_err(storage))
}
