//! Storage for every module: one [`Db`] that is either embedded SQLite (one writer connection
//! and a pool of readers, WAL, `synchronous=FULL`) or PostgreSQL, migrations per dialect
//! embedded in the binary, and [`Tx`], a write transaction on either.
//!
//! Module code is written once and run on both databases through [`on_conn!`],
//! which expand the same sqlx calls for each driver (no `sqlx::Any`). SQL that must differ
//! between the dialects sits beside its twin in the module's repository code.

pub mod outbox;
pub mod sql;
pub mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use backroom_kernel::{Code, Error};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A handle on the store's database: its connection pools and its group-commit writer
/// ([`Db::write`]). Cheap to clone; clones share the writer.
#[derive(Debug, Clone)]
pub struct Db {
    pools: Pools,
    batcher: Arc<writer::Batcher>,
}

/// The connection pools behind a [`Db`].
#[derive(Debug, Clone)]
pub enum Pools {
    Sqlite {
        /// One connection for `Db::begin` transactions and migrations. SQLite allows one
        /// writer at a time: these and the group-commit writer's batches take turns (`gate`).
        writer: SqlitePool,
        /// Readers see the last committed state (WAL) and never block the writer.
        reader: SqlitePool,
        /// The group-commit writer's own connection (rusqlite, see [`writer`]), until the
        /// writer's thread takes it on the first write.
        own: Arc<std::sync::Mutex<Option<rusqlite::Connection>>>,
        /// Taken by each write batch and by each [`Db::begin`] transaction for as long as it
        /// runs: SQLite's own lock only polls (busy timeout), so under a steady stream of
        /// batches a transaction of the other connection could wait for its turn until it
        /// timed out. This queue is fair (first come, first served).
        gate: Arc<tokio::sync::Mutex<()>>,
        /// Readers for [`Db::read_fast`].
        local: Arc<LocalReaders>,
    },
    Postgres(PgPool),
}

/// Options for [`Db::connect`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `sqlite://path`, `sqlite:path`, or `postgres://…`.
    pub url: String,
    /// SQLite only: `synchronous=FULL` (default) so that an acknowledged write survives a
    /// power cut. Tests may turn it down to NORMAL; production never should.
    pub sqlite_synchronous_full: bool,
    pub max_connections: u32,
    /// Most jobs the group-commit writer puts in one transaction (1: no group commit).
    pub writer_max_batch: usize,
    /// Most new write jobs that may wait for the writer; past it [`Db::write`] answers
    /// [`Error::Overloaded`] at once (`BACKROOM_WRITER_QUEUE`).
    pub writer_queue: usize,
    /// How long a write job may take from being queued to its end; a job not started by then
    /// is shed, one still running is cancelled and rolled back (`BACKROOM_WRITER_JOB_TIMEOUT`).
    pub writer_job_timeout: std::time::Duration,
}

impl ConnectOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            sqlite_synchronous_full: true,
            max_connections: 16,
            writer_max_batch: writer::MAX_BATCH,
            writer_queue: writer::QUEUE,
            writer_job_timeout: writer::JOB_TIMEOUT,
        }
    }
}

/// The SQLite URL for a database file in `data_dir`.
pub fn sqlite_url_in(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("backroom.db").display())
}

/// Whether `url` names a database this build can open; the message says why not.
pub fn check_url(url: &str) -> Result<Dialect, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
        Ok(Dialect::Postgres)
    } else if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url).map_err(|e| e.to_string())?;
        Ok(Dialect::Sqlite)
    } else {
        Err("must start with sqlite: or postgres://".into())
    }
}

impl Db {
    /// Opens the database (creating a SQLite file if needed). Does not migrate.
    pub async fn connect(opts: &ConnectOptions) -> Result<Db, sqlx::Error> {
        match check_url(&opts.url).map_err(|e| sqlx::Error::Configuration(e.into()))? {
            Dialect::Postgres => {
                let pg = PgConnectOptions::from_str(&opts.url)?
                    .application_name("backroom")
                    // An acknowledged order must survive a crash of the server too.
                    .options([("synchronous_commit", "on")]);
                let pool = PgPoolOptions::new()
                    .max_connections(opts.max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(pg)
                    .await?;
                Ok(Db::new(Pools::Postgres(pool), opts))
            }
            Dialect::Sqlite => {
                let base = SqliteConnectOptions::from_str(&opts.url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10))
                    .synchronous(if opts.sqlite_synchronous_full {
                        SqliteSynchronous::Full
                    } else {
                        SqliteSynchronous::Normal
                    })
                    .pragma("temp_store", "memory")
                    // Deleted content (a destroyed data key, an emptied row) is overwritten,
                    // not left in free pages of the file.
                    .pragma("secure_delete", "on");
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    // One connection for the life of the process.
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(base.clone())
                    .await?;
                // Each SQLite connection runs on its own thread in sqlx: more readers than
                // twice the cores only adds thread hand-offs.
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
                let reader = SqlitePoolOptions::new()
                    .max_connections(opts.max_connections.min(cores * 2).max(2))
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(base.clone().read_only(true))
                    .await?;
                let own = open_writer(base.get_filename(), opts.sqlite_synchronous_full).map_err(sql::from_lite)?;
                let own = Arc::new(std::sync::Mutex::new(Some(own)));
                let gate = Arc::default();
                let local = Arc::new(LocalReaders { path: base.get_filename().to_owned(), idle: Default::default() });
                Ok(Db::new(Pools::Sqlite { writer, reader, own, gate, local }, opts))
            }
        }
    }

    fn new(pools: Pools, opts: &ConnectOptions) -> Db {
        let limits = writer::Limits {
            max_batch: opts.writer_max_batch.max(1),
            queue: opts.writer_queue.max(1),
            job_timeout: opts.writer_job_timeout,
        };
        Db { pools, batcher: Arc::new(writer::Batcher::new(limits)) }
    }

    /// The pools, for code that needs a driver's own pool (tests, benchmarks).
    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    pub fn dialect(&self) -> Dialect {
        match self.pools {
            Pools::Sqlite { .. } => Dialect::Sqlite,
            Pools::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs `f` as one job of the group-commit writer ([`writer`]): in the next batch's
    /// transaction, in its own savepoint, answered after the batch committed. A full queue
    /// answers [`Error::Overloaded`] at once, with nothing done. `f` must not call
    /// [`Db::write`] or [`Db::begin`] itself (the writer is busy running it): such a call is
    /// refused with an error instead of deadlocking.
    pub async fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Conn<'c>) -> writer::BoxFuture<'c, Result<writer::Done<T>, Error>> + Send + 'static,
    {
        self.batcher.write(&self.pools, writer::Lane::New, f).await
    }

    /// [`Db::write`] for a job that finishes work already admitted (a checkout's settlement
    /// after its reservation committed, the payment ledger in between): never shed by a full
    /// queue, since shedding it would strand committed work. Its queue is bounded by the
    /// admitted jobs themselves. It always starts; the job deadline still bounds its run.
    pub async fn write_followup<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Conn<'c>) -> writer::BoxFuture<'c, Result<writer::Done<T>, Error>> + Send + 'static,
    {
        self.batcher.write(&self.pools, writer::Lane::Followup, f).await
    }

    /// [`Db::write`] of the job `make` builds, run again (up to [`WRITE_TRIES`] times in all)
    /// while it loses a lock conflict: on PostgreSQL two batches of different processes can
    /// lock the same hot stock rows in opposite orders, and one is chosen as the deadlock
    /// victim. Its job was rolled back to its savepoint, so running it again is safe, and
    /// the client gets an answer rather than a `503`.
    pub async fn write_retrying<T, F>(&self, make: impl Fn() -> F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Conn<'c>) -> writer::BoxFuture<'c, Result<writer::Done<T>, Error>> + Send + 'static,
    {
        self.retrying(writer::Lane::New, make).await
    }

    /// [`Db::write_followup`] with the retries of [`Db::write_retrying`].
    pub async fn write_followup_retrying<T, F>(&self, make: impl Fn() -> F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Conn<'c>) -> writer::BoxFuture<'c, Result<writer::Done<T>, Error>> + Send + 'static,
    {
        self.retrying(writer::Lane::Followup, make).await
    }

    async fn retrying<T, F>(&self, lane: writer::Lane, make: impl Fn() -> F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Conn<'c>) -> writer::BoxFuture<'c, Result<writer::Done<T>, Error>> + Send + 'static,
    {
        let mut tries = 1;
        loop {
            match self.batcher.write(&self.pools, lane, make()).await {
                Err(e) if tries < WRITE_TRIES && is_lock_conflict(&e) => {
                    metrics::counter!("db_writer_retries_total").increment(1);
                    tracing::debug!(error = %e, tries, "a write job lost a lock conflict; running it again");
                    // The winner's batch commits meanwhile; a short wait keeps the two apart.
                    tokio::time::sleep(Duration::from_millis(2 * tries as u64)).await;
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// What this process's group-commit writer has done so far.
    pub fn writer_stats(&self) -> writer::Stats {
        self.batcher.stats()
    }

    /// Applies every embedded migration not yet applied. Safe to run concurrently with
    /// other processes: sqlx takes an advisory lock on PostgreSQL, and SQLite's single
    /// writer serialises.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => SQLITE_MIGRATIONS.run(writer).await,
            Pools::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
        }
    }

    /// Whether the database answers and every embedded migration is applied (`/readyz`).
    pub async fn is_ready(&self) -> bool {
        let expected = match self.pools {
            Pools::Sqlite { .. } => SQLITE_MIGRATIONS.iter().count(),
            Pools::Postgres(_) => POSTGRES_MIGRATIONS.iter().count(),
        } as i64;
        let sql = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";
        let applied: Result<i64, sqlx::Error> = match &self.pools {
            Pools::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_one(reader).await,
            Pools::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        };
        matches!(applied, Ok(n) if n >= expected)
    }

    /// A reader connection for queries that change nothing.
    pub async fn read(&self) -> Result<ReadConn, Error> {
        Ok(match &self.pools {
            Pools::Sqlite { reader, .. } => ReadConn::Sqlite(reader.acquire().await.map_err(storage)?),
            Pools::Postgres(pool) => ReadConn::Postgres(pool.acquire().await.map_err(storage)?),
        })
    }

    /// A reader for [`sql`] statements only (not [`on_conn!`]): on SQLite one that runs them in
    /// the calling thread (see [`LocalReaders`]), on PostgreSQL a pooled connection. For the
    /// short reads of hot paths; do not hold it across awaits of other work.
    pub async fn read_fast(&self) -> Result<ReadConn, Error> {
        match &self.pools {
            Pools::Sqlite { local, .. } => local.take().map(ReadConn::Local),
            Pools::Postgres(_) => self.read().await,
        }
    }

    /// Starts a write transaction of its own (admin writes, the worker). On SQLite it runs on
    /// the single writer connection, between the group-commit writer's batches. Hot paths use
    /// [`Db::write`] instead.
    pub async fn begin(&self) -> Result<Tx, Error> {
        writer::refuse_nested("Db::begin")?;
        self.pools.begin().await
    }

    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { writer, reader, .. } => {
                reader.close().await;
                writer.close().await;
            }
            Pools::Postgres(pool) => pool.close().await,
        }
    }
}

impl Pools {
    async fn begin(&self) -> Result<Tx, Error> {
        Ok(match self {
            // IMMEDIATE: the write lock from the start, waiting (busy timeout) while the
            // group-commit writer's connection holds it, rather than failing later on a
            // snapshot that cannot be upgraded.
            Pools::Sqlite { writer, gate, .. } => {
                // Bounded like the pool's acquire was: a transaction that waits on one its own
                // task holds is an error, not a hang.
                let turn = tokio::time::timeout(Duration::from_secs(30), gate.clone().lock_owned())
                    .await
                    .map_err(|_| Error::Unavailable("no turn at the SQLite write lock within 30 s".into()))?;
                Tx::Sqlite(writer.begin_with("BEGIN IMMEDIATE").await.map_err(storage)?, turn)
            }
            Pools::Postgres(pool) => Tx::Postgres(pool.begin().await.map_err(storage)?),
        })
    }
}

/// A write transaction on either database. Dropped without [`Tx::commit`], it rolls back,
/// so a refused request never leaves half its writes behind.
pub enum Tx {
    /// With its turn at SQLite's write lock (see `Pools::Sqlite::gate`), given back when the
    /// transaction ends.
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>, tokio::sync::OwnedMutexGuard<()>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    pub async fn commit(self) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx, _turn) => tx.commit().await.map_err(storage),
            Tx::Postgres(tx) => tx.commit().await.map_err(storage),
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(..) => Dialect::Sqlite,
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// A connection of either driver, borrowed from a [`ReadConn`] or a [`Tx`]. Repository
/// functions take `&mut Conn` and run their SQL through [`on_conn!`].
pub enum Conn<'a> {
    Sqlite(&'a mut sqlx::SqliteConnection),
    Postgres(&'a mut sqlx::PgConnection),
    /// A SQLite connection of this thread's own (rusqlite): the writer's, which write jobs
    /// get, or a reader of [`Db::read_fast`]. Statements on it run synchronously in the
    /// calling thread, without a hand-off to a connection thread. Only [`sql`] statements run
    /// here; the sqlx calls of [`on_conn!`] refuse it with an error.
    Local(&'a std::sync::Mutex<rusqlite::Connection>),
}

impl Conn<'_> {
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) | Conn::Local(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// The error of sqlx code handed a thread's own SQLite connection (see [`Conn::Local`]): a bug
/// that the tests on SQLite find, answered as an internal error rather than a panic.
#[doc(hidden)]
pub fn sqlx_on_local(at: &'static str) -> Error {
    tracing::error!(at, "sqlx code ran on a thread's own SQLite connection (Conn::Local); use backroom_db::sql there");
    Error::internal(format!("{at}: sqlx code on a Conn::Local (use backroom_db::sql)"))
}

/// A reader connection taken from the pool (on SQLite, from the read-only pool, or one of
/// the in-thread readers of [`Db::read_fast`]).
pub enum ReadConn {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Local(LocalReader),
}

impl ReadConn {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            ReadConn::Sqlite(c) => Conn::Sqlite(&mut *c),
            ReadConn::Postgres(c) => Conn::Postgres(&mut *c),
            ReadConn::Local(r) => Conn::Local(r.conn.as_ref().expect("held until dropped")),
        }
    }
}

/// Read-only SQLite connections that run statements in the calling thread (rusqlite), kept
/// for reuse. A read of the hot path (a cart, a variant's price, stock) is a few indexed
/// rows, microseconds of SQLite: through sqlx each statement was a hand-off to a connection
/// thread and back, which cost more than the statement. As many are open as are used at
/// once, which is bounded by the runtime's threads when readers are not held across awaits.
#[derive(Debug)]
pub struct LocalReaders {
    path: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

/// Idle in-thread readers kept at most; more in use at once are opened and closed again.
const LOCAL_READERS_KEPT: usize = 32;

impl LocalReaders {
    fn take(self: &Arc<Self>) -> Result<LocalReader, Error> {
        let idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let conn = match idle {
            Some(c) => c,
            None => open_reader(&self.path).map_err(|e| storage(sql::from_lite(e)))?,
        };
        Ok(LocalReader { conn: Some(std::sync::Mutex::new(conn)), home: self.clone() })
    }
}

/// One in-thread reader, given back to its pool when dropped.
#[derive(Debug)]
pub struct LocalReader {
    conn: Option<std::sync::Mutex<rusqlite::Connection>>,
    home: Arc<LocalReaders>,
}

impl Drop for LocalReader {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let c = c.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut idle = self.home.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < LOCAL_READERS_KEPT {
                idle.push(c);
            }
        }
    }
}

impl Tx {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Sqlite(tx, _) => Conn::Sqlite(&mut *tx),
            Tx::Postgres(tx) => Conn::Postgres(&mut *tx),
        }
    }
}

/// Runs `$body` with `$c` bound to the `&mut` connection inside the [`Conn`] `$conn`
/// (pass `&mut *$c` as the executor). The body is compiled once per driver, so it must
/// use SQL that both dialects accept; the three-argument form also names the driver type
/// (`sqlx::Sqlite` or `sqlx::Postgres`) for a `QueryBuilder::<$db>`.
#[macro_export]
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::Conn::Sqlite(inner) => {
                let $c: &mut ::sqlx::SqliteConnection = &mut **inner;
                $body
            }
            $crate::Conn::Postgres(inner) => {
                let $c: &mut ::sqlx::PgConnection = &mut **inner;
                $body
            }
            $crate::Conn::Local(_) => return Err($crate::sqlx_on_local(concat!(file!(), ":", line!())).into()),
        }
    };
    ($conn:expr, $c:ident, $db:ident => $body:expr) => {
        match $conn {
            $crate::Conn::Sqlite(inner) => {
                #[allow(dead_code)]
                type $db = ::sqlx::Sqlite;
                let $c: &mut ::sqlx::SqliteConnection = &mut **inner;
                $body
            }
            $crate::Conn::Postgres(inner) => {
                #[allow(dead_code)]
                type $db = ::sqlx::Postgres;
                let $c: &mut ::sqlx::PgConnection = &mut **inner;
                $body
            }
            $crate::Conn::Local(_) => return Err($crate::sqlx_on_local(concat!(file!(), ":", line!())).into()),
        }
    };
}

/// Appends `(?, ?, …)` to a `QueryBuilder`, one bind per id: the id list of an
/// `… IN (…)` written once for both dialects.
#[macro_export]
macro_rules! push_in_list {
    ($qb:expr, $ids:expr) => {{
        $qb.push("(");
        let mut sep = $qb.separated(", ");
        for id in $ids {
            sep.push_bind(id.as_str());
        }
        $qb.push(")");
    }};
}

/// Bytes of the database file mapped into memory by the in-thread connections.
const MMAP_SIZE: u64 = 256 << 20;

/// Opens an in-thread reader (read-only, so it can never take the write lock).
fn open_reader(path: &Path) -> Result<rusqlite::Connection, rusqlite::Error> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Memory-mapped reads: a reader's page cache starts over whenever the database changed
    // (every batch, under load), and re-reading pages through `pread` copies was a twentieth
    // of the server's CPU during a checkout benchmark.
    conn.execute_batch(&format!(
        "PRAGMA query_only = ON; PRAGMA temp_store = MEMORY; PRAGMA mmap_size = {MMAP_SIZE};"
    ))?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// Opens the SQLite writer's own connection with the pragmas of sqlx's connections.
fn open_writer(path: &Path, synchronous_full: bool) -> Result<rusqlite::Connection, rusqlite::Error> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = {}; PRAGMA temp_store = MEMORY; \
         PRAGMA secure_delete = ON;",
        if synchronous_full { "FULL" } else { "NORMAL" }
    ))?;
    // Every statement of the write path stays prepared.
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// Maps a storage error to the domain error: unique violations become `409 conflict`
/// via [`unique_or`], a closed or exhausted pool is `Unavailable`, anything else `Internal`.
pub fn storage(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => Error::Unavailable(Box::new(e)),
        // A deadlock victim, a serialization failure, a lock timeout or SQLITE_BUSY: nothing
        // was written (the write job's savepoint is rolled back) and trying again may work.
        ref other if is_transient(other) => Error::Unavailable(Box::new(e)),
        other => Error::Internal(Box::new(other)),
    }
}

/// Most runs of one job by [`Db::write_retrying`].
pub const WRITE_TRIES: u32 = 4;

/// PostgreSQL's deadlock victim (40P01), serialization failure (40001) and lock timeout (55P03).
const LOCK_CONFLICTS: [&str; 3] = ["40P01", "40001", "55P03"];

/// SQLite's busy and locked, with their extended codes (5, 6, 261, 517).
const SQLITE_BUSY: [&str; 4] = ["5", "6", "261", "517"];

/// The error code the database gave, if any.
fn code_of(e: &sqlx::Error) -> Option<std::borrow::Cow<'_, str>> {
    e.as_database_error().and_then(|d| d.code())
}

/// Whether `e` is a job's loss of a lock conflict ([`LOCK_CONFLICTS`]): nothing of the job
/// was kept, and running it again may work.
pub fn is_lock_conflict(e: &Error) -> bool {
    matches!(e, Error::Unavailable(src) if src
        .downcast_ref::<sqlx::Error>()
        .and_then(code_of)
        .is_some_and(|c| LOCK_CONFLICTS.contains(&&*c)))
}

/// Whether a database error is worth retrying: a lock conflict on PostgreSQL, or SQLite busy.
fn is_transient(e: &sqlx::Error) -> bool {
    code_of(e).is_some_and(|c| LOCK_CONFLICTS.contains(&&*c) || SQLITE_BUSY.contains(&&*c))
}

/// Whether `e` is a unique-constraint violation (on either database).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

/// Maps a unique violation to `409 conflict` with `message` and anything else through [`storage`].
pub fn unique_or(e: sqlx::Error, message: impl FnOnce(&str) -> String) -> Error {
    if let Some(db) = e.as_database_error()
        && db.is_unique_violation()
    {
        // The constraint or column name tells which value clashed.
        let what = db.constraint().map(str::to_owned).unwrap_or_else(|| db.message().to_owned());
        return Error::refused(Code::Conflict, message(&what));
    }
    storage(e)
}

/// Whether connecting failed because the PostgreSQL database named in the URL does not exist
/// (SQLSTATE 3D000).
pub fn is_missing_database(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "3D000")
}

/// Creates the PostgreSQL database `url` names, connecting as its user to the server's
/// `postgres` database. The error says what to run when the user may not.
pub async fn create_postgres_database(url: &str) -> Result<(), String> {
    use sqlx::migrate::MigrateDatabase;
    let opts = PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
    let name = opts.get_database().unwrap_or_default().to_owned();
    sqlx::Postgres::create_database(url).await.map_err(|e| {
        let how = format!("createdb -h {} -p {} -U {} {name}", opts.get_host(), opts.get_port(), opts.get_username());
        format!(
            "the database `{name}` does not exist and could not be created ({}): create it with `{how}` \
             (as a user with the CREATEDB privilege), then start again",
            describe(&e)
        )
    })
}

/// A database error in one line for an operator: the server's message and SQLSTATE, without
/// the server's source location.
pub fn describe(e: &sqlx::Error) -> String {
    match e.as_database_error() {
        Some(d) => match d.code() {
            Some(code) => format!("{} (SQLSTATE {code})", d.message()),
            None => d.message().to_owned(),
        },
        None => e.to_string(),
    }
}

/// Helpers for tests in every crate: fresh databases on either backend.
pub mod testing {
    use sqlx::Connection;

    /// A PostgreSQL database made for one test, dropped (with any session still connected to
    /// it) when this value is dropped, at the end of the test or when it panics.
    #[derive(Debug)]
    pub struct TestDatabase {
        admin: String,
        name: String,
        url: String,
    }

    impl TestDatabase {
        /// The database's URL.
        pub fn url(&self) -> &str {
            &self.url
        }
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            // Drop runs inside the test's runtime, which cannot block on itself: a thread
            // with a runtime of its own drops the database, and the test waits for it.
            let (admin, name) = (self.admin.clone(), self.name.clone());
            let dropped = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                rt.block_on(async {
                    let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let r = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                    let _ = conn.close().await;
                    r.ok()
                })
            })
            .join();
            if !matches!(dropped, Ok(Some(_))) {
                eprintln!("could not drop the test database {}", self.name);
            }
        }
    }

    /// A fresh, empty PostgreSQL database on the server named by `BACKROOM_TEST_DATABASE_URL`
    /// (a superuser URL), or `None` when PostgreSQL is knowingly skipped
    /// (`BACKROOM_TEST_SKIP_POSTGRES=1`, refused under `CI`). Panics otherwise: the
    /// PostgreSQL half of a test is never skipped silently. Keep the value for as long as the
    /// database is used: dropping it drops the database.
    pub async fn fresh_postgres() -> Option<TestDatabase> {
        let admin = match std::env::var("BACKROOM_TEST_DATABASE_URL") {
            Ok(u) => u,
            Err(_) => {
                let skip = std::env::var("BACKROOM_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1");
                if skip && std::env::var("CI").is_err() {
                    eprintln!("PostgreSQL half skipped (BACKROOM_TEST_SKIP_POSTGRES=1)");
                    return None;
                }
                panic!(
                    "BACKROOM_TEST_DATABASE_URL is not set: run ./scripts/test.sh, which starts PostgreSQL \
                     (or set BACKROOM_TEST_SKIP_POSTGRES=1 outside CI to skip the PostgreSQL half knowingly)"
                );
            }
        };
        let name = backroom_kernel::id::new("bk_test");
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b).expect("URL has a database part");
        Some(TestDatabase { url: format!("{base}/{name}"), admin, name })
    }
}
