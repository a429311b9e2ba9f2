//! Statements written once for every connection a [`Conn`] can be: sqlx's SQLite and
//! PostgreSQL connections, and the SQLite writer's own connection ([`Conn::Local`]), on which
//! a statement runs synchronously in the writer's thread (no hand-off to another thread).
//!
//! ```ignore
//! let n = sql::query("UPDATE carts SET status = $3 WHERE id = $1 AND status = $2")
//!     .bind(cart_id).bind(from.as_str()).bind(to.as_str())
//!     .execute(conn).await.map_err(storage)?;
//! ```
//!
//! The SQL uses `$1`, `$2`, … on both databases (SQLite reads `$N` as the N-th argument, as
//! sqlx does). Errors are `sqlx::Error`s whatever the connection, so [`crate::storage`],
//! [`crate::unique_or`] and friends treat them alike. Values are encoded exactly as sqlx
//! encodes them (timestamps as RFC 3339 text on SQLite), so rows written by either driver
//! read back the same and compare in SQL the same.
//!
//! Written here rather than taken from a crate: no crate runs one statement text on sqlx's
//! drivers and on an in-thread rusqlite connection, which is what the writer needs.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::ValueRef;
use sqlx::Row as _;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use crate::Conn;

/// The type of a value, for a `NULL` (PostgreSQL wants typed parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Real,
    Bool,
    Text,
    Time,
}

/// One argument of a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg<'q> {
    Null(Kind),
    Int(i64),
    Real(f64),
    Bool(bool),
    Text(Cow<'q, str>),
    Time(DateTime<Utc>),
}

/// A value that can be an argument.
pub trait Bind<'q> {
    /// Its type when it is `NULL`.
    const KIND: Kind;
    fn arg(self) -> Arg<'q>;
}

macro_rules! bind_as {
    ($kind:ident, $variant:ident, $($t:ty => |$v:ident| $e:expr),+ $(,)?) => {$(
        impl<'q> Bind<'q> for $t {
            const KIND: Kind = Kind::$kind;
            fn arg(self) -> Arg<'q> {
                let $v = self;
                Arg::$variant($e)
            }
        }
    )+};
}

bind_as!(Int, Int, i64 => |v| v, &'q i64 => |v| *v, i32 => |v| i64::from(v), u32 => |v| i64::from(v));
bind_as!(Real, Real, f64 => |v| v);
bind_as!(Bool, Bool, bool => |v| v, &'q bool => |v| *v);
bind_as!(Time, Time, DateTime<Utc> => |v| v, &'q DateTime<Utc> => |v| *v);
bind_as!(Text, Text,
    &'q str => |v| Cow::Borrowed(v),
    &'q String => |v| Cow::Borrowed(v.as_str()),
    String => |v| Cow::Owned(v),
    &'q backroom_kernel::id::OrderId => |v| Cow::Borrowed(v.as_str()),
    &'q backroom_kernel::id::AttemptId => |v| Cow::Borrowed(v.as_str()),
    &'q backroom_kernel::id::CustomerId => |v| Cow::Borrowed(v.as_str()),
);

impl<'q, T: Bind<'q>> Bind<'q> for Option<T> {
    const KIND: Kind = T::KIND;
    fn arg(self) -> Arg<'q> {
        match self {
            Some(v) => v.arg(),
            None => Arg::Null(T::KIND),
        }
    }
}

/// Timestamps as sqlx writes them to SQLite, so that both drivers' rows compare as text.
fn time_text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// A statement and its arguments.
#[derive(Debug, Clone)]
#[must_use = "a query does nothing until it is executed or fetched"]
pub struct Query<'q> {
    sql: Cow<'q, str>,
    args: Vec<Arg<'q>>,
}

/// A statement to run on a [`Conn`]; bind its `$N` arguments in order.
pub fn query<'q>(sql: impl Into<Cow<'q, str>>) -> Query<'q> {
    Query { sql: sql.into(), args: Vec::new() }
}

/// Binds `args` in order to a sqlx query of either driver.
macro_rules! sqlx_query {
    ($db:ty, $sql:expr, $args:expr) => {{
        let mut q = sqlx::query::<$db>(sqlx::AssertSqlSafe($sql));
        for a in $args {
            q = match a {
                Arg::Null(Kind::Int) => q.bind(None::<i64>),
                Arg::Null(Kind::Real) => q.bind(None::<f64>),
                Arg::Null(Kind::Bool) => q.bind(None::<bool>),
                Arg::Null(Kind::Text) => q.bind(None::<&str>),
                Arg::Null(Kind::Time) => q.bind(None::<DateTime<Utc>>),
                Arg::Int(v) => q.bind(*v),
                Arg::Real(v) => q.bind(*v),
                Arg::Bool(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_ref()),
                Arg::Time(v) => q.bind(*v),
            };
        }
        q
    }};
}

impl<'q> Query<'q> {
    /// Adds the next argument.
    pub fn bind(mut self, value: impl Bind<'q>) -> Self {
        self.args.push(value.arg());
        self
    }

    /// Adds several arguments in order.
    pub fn bind_all<B: Bind<'q>>(mut self, values: impl IntoIterator<Item = B>) -> Self {
        self.args.extend(values.into_iter().map(Bind::arg));
        self
    }

    /// Runs the statement; the number of rows it changed.
    pub async fn execute(self, conn: &mut Conn<'_>) -> Result<u64, sqlx::Error> {
        match conn {
            Conn::Local(w) => {
                let c = lock(w)?;
                let mut stmt = self.prepare(&c)?;
                stmt.raw_execute().map(|n| n as u64).map_err(from_lite)
            }
            Conn::Sqlite(c) => {
                sqlx_query!(sqlx::Sqlite, &*self.sql, &self.args).execute(&mut **c).await.map(|r| r.rows_affected())
            }
            Conn::Postgres(c) => {
                sqlx_query!(sqlx::Postgres, &*self.sql, &self.args).execute(&mut **c).await.map(|r| r.rows_affected())
            }
        }
    }

    /// Every row the statement answers.
    pub async fn fetch_all<R: FromRow>(self, conn: &mut Conn<'_>) -> Result<Vec<R>, sqlx::Error> {
        match conn {
            Conn::Local(w) => {
                let c = lock(w)?;
                let mut stmt = self.prepare(&c)?;
                let mut rows = stmt.raw_query();
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(from_lite)? {
                    out.push(R::from_row(&Row::Local(row))?);
                }
                Ok(out)
            }
            Conn::Sqlite(c) => sqlx_query!(sqlx::Sqlite, &*self.sql, &self.args)
                .fetch_all(&mut **c)
                .await?
                .iter()
                .map(|r| R::from_row(&Row::Sqlite(r)))
                .collect(),
            Conn::Postgres(c) => sqlx_query!(sqlx::Postgres, &*self.sql, &self.args)
                .fetch_all(&mut **c)
                .await?
                .iter()
                .map(|r| R::from_row(&Row::Postgres(r)))
                .collect(),
        }
    }

    /// The first row the statement answers, if any.
    pub async fn fetch_optional<R: FromRow>(self, conn: &mut Conn<'_>) -> Result<Option<R>, sqlx::Error> {
        match conn {
            Conn::Local(w) => {
                let c = lock(w)?;
                let mut stmt = self.prepare(&c)?;
                let mut rows = stmt.raw_query();
                match rows.next().map_err(from_lite)? {
                    Some(row) => R::from_row(&Row::Local(row)).map(Some),
                    None => Ok(None),
                }
            }
            Conn::Sqlite(c) => {
                match sqlx_query!(sqlx::Sqlite, &*self.sql, &self.args).fetch_optional(&mut **c).await? {
                    Some(r) => R::from_row(&Row::Sqlite(&r)).map(Some),
                    None => Ok(None),
                }
            }
            Conn::Postgres(c) => {
                match sqlx_query!(sqlx::Postgres, &*self.sql, &self.args).fetch_optional(&mut **c).await? {
                    Some(r) => R::from_row(&Row::Postgres(&r)).map(Some),
                    None => Ok(None),
                }
            }
        }
    }

    /// The one row the statement answers (`RowNotFound` without one).
    pub async fn fetch_one<R: FromRow>(self, conn: &mut Conn<'_>) -> Result<R, sqlx::Error> {
        self.fetch_optional(conn).await?.ok_or(sqlx::Error::RowNotFound)
    }

    /// The first column of the one row the statement answers.
    pub async fn fetch_scalar<T: Col>(self, conn: &mut Conn<'_>) -> Result<T, sqlx::Error> {
        Ok(self.fetch_one::<(T,)>(conn).await?.0)
    }

    /// Prepares (from the connection's statement cache) and binds, `$N` to the N-th argument.
    fn prepare<'c>(&self, c: &'c rusqlite::Connection) -> Result<rusqlite::CachedStatement<'c>, sqlx::Error> {
        let mut stmt = c.prepare_cached(&self.sql).map_err(from_lite)?;
        for i in 1..=stmt.parameter_count() {
            let n = match stmt.parameter_name(i) {
                Some(name) => name
                    .strip_prefix(['$', '?'])
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| sqlx::Error::Protocol(format!("parameter {name} is not $N")))?,
                None => i,
            };
            let arg = self.args.get(n - 1).ok_or_else(|| {
                sqlx::Error::Protocol(format!("parameter ${n} has no argument ({} bound)", self.args.len()))
            })?;
            let bound = match arg {
                Arg::Null(_) => stmt.raw_bind_parameter(i, rusqlite::types::Null),
                Arg::Int(v) => stmt.raw_bind_parameter(i, v),
                Arg::Real(v) => stmt.raw_bind_parameter(i, v),
                Arg::Bool(v) => stmt.raw_bind_parameter(i, v),
                Arg::Text(v) => stmt.raw_bind_parameter(i, v.as_ref()),
                Arg::Time(v) => stmt.raw_bind_parameter(i, time_text(v)),
            };
            bound.map_err(from_lite)?;
        }
        Ok(stmt)
    }
}

fn lock(
    w: &std::sync::Mutex<rusqlite::Connection>,
) -> Result<std::sync::MutexGuard<'_, rusqlite::Connection>, sqlx::Error> {
    // A job that panicked while holding the lock left no statement half-run (statements are
    // synchronous): the connection itself is sound, and the job's savepoint is rolled back.
    Ok(w.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// `(…), (…)` for a multi-row `VALUES` of `rows` rows of `cols` columns, numbered from
/// `$first`.
pub fn values_list(rows: usize, cols: usize, first: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(first + r * cols + c).to_string());
        }
        s.push(')');
    }
    s
}

/// `($first, …)` with `n` arguments, for `… IN (…)` (`n` ≥ 1).
pub fn in_list(n: usize, first: usize) -> String {
    values_list(1, n, first)
}

/// A row of any connection; columns by position ([`Row::get`]) or name ([`Row::col`]).
pub enum Row<'r> {
    Local(&'r rusqlite::Row<'r>),
    Sqlite(&'r SqliteRow),
    Postgres(&'r PgRow),
}

impl Row<'_> {
    /// The column at `i` (from 0).
    pub fn get<T: Col>(&self, i: usize) -> Result<T, sqlx::Error> {
        match self {
            Row::Local(r) => {
                let v = r.get_ref(i).map_err(from_lite)?;
                T::from_lite(v).map_err(|e| decode_error(i.to_string(), e))
            }
            Row::Sqlite(r) => T::from_sqlite(r, i),
            Row::Postgres(r) => T::from_postgres(r, i),
        }
    }

    /// The column named `name`.
    pub fn col<T: Col>(&self, name: &str) -> Result<T, sqlx::Error> {
        let i = match self {
            Row::Local(r) => r.as_ref().column_index(name).map_err(from_lite)?,
            Row::Sqlite(r) => r.try_column(name).map(sqlx::Column::ordinal)?,
            Row::Postgres(r) => r.try_column(name).map(sqlx::Column::ordinal)?,
        };
        self.get(i).map_err(|e| match e {
            sqlx::Error::ColumnDecode { source, .. } => sqlx::Error::ColumnDecode { index: name.to_owned(), source },
            other => other,
        })
    }
}

fn decode_error(index: String, message: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode { index, source: message.into() }
}

/// A column value of a type both databases hold.
pub trait Col: Sized {
    fn from_lite(v: ValueRef<'_>) -> Result<Self, String>;
    fn from_sqlite(r: &SqliteRow, i: usize) -> Result<Self, sqlx::Error>;
    fn from_postgres(r: &PgRow, i: usize) -> Result<Self, sqlx::Error>;
}

macro_rules! col {
    ($($t:ty => |$v:ident| $lite:expr),+ $(,)?) => {$(
        impl Col for $t {
            fn from_lite($v: ValueRef<'_>) -> Result<Self, String> {
                $lite
            }
            fn from_sqlite(r: &SqliteRow, i: usize) -> Result<Self, sqlx::Error> {
                r.try_get(i)
            }
            fn from_postgres(r: &PgRow, i: usize) -> Result<Self, sqlx::Error> {
                r.try_get(i)
            }
        }
        impl Col for Option<$t> {
            fn from_lite(v: ValueRef<'_>) -> Result<Self, String> {
                match v {
                    ValueRef::Null => Ok(None),
                    v => <$t as Col>::from_lite(v).map(Some),
                }
            }
            fn from_sqlite(r: &SqliteRow, i: usize) -> Result<Self, sqlx::Error> {
                r.try_get(i)
            }
            fn from_postgres(r: &PgRow, i: usize) -> Result<Self, sqlx::Error> {
                r.try_get(i)
            }
        }
    )+};
}

fn lite_text(v: ValueRef<'_>) -> Result<&str, String> {
    match v {
        ValueRef::Text(b) => std::str::from_utf8(b).map_err(|e| e.to_string()),
        other => Err(format!("expected text, found {:?}", other.data_type())),
    }
}

fn lite_int(v: ValueRef<'_>) -> Result<i64, String> {
    match v {
        ValueRef::Integer(n) => Ok(n),
        other => Err(format!("expected an integer, found {:?}", other.data_type())),
    }
}

/// Reads a timestamp in any form sqlx reads from SQLite (RFC 3339 first, as written).
fn lite_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%F %T%.f%#z", "%F %T%.f", "%FT%T%.f"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok(t.with_timezone(&Utc));
        }
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    Err(format!("`{s}` is not a timestamp"))
}

col!(
    i64 => |v| lite_int(v),
    i32 => |v| lite_int(v).and_then(|n| i32::try_from(n).map_err(|e| e.to_string())),
    bool => |v| lite_int(v).map(|n| n != 0),
    f64 => |v| match v {
        ValueRef::Real(x) => Ok(x),
        ValueRef::Integer(n) => Ok(n as f64),
        other => Err(format!("expected a number, found {:?}", other.data_type())),
    },
    String => |v| lite_text(v).map(str::to_owned),
    DateTime<Utc> => |v| lite_time(lite_text(v)?),
    backroom_kernel::id::OrderId => |v| lite_text(v).map(|s| backroom_kernel::id::OrderId::from_stored(s.to_owned())),
    backroom_kernel::id::AttemptId => |v| lite_text(v).map(|s| backroom_kernel::id::AttemptId::from_stored(s.to_owned())),
    backroom_kernel::id::CustomerId => |v| lite_text(v).map(|s| backroom_kernel::id::CustomerId::from_stored(s.to_owned())),
);

/// A row decoded into a value: tuples of [`Col`]s, or structs through [`from_row!`](crate::from_row).
pub trait FromRow: Sized {
    fn from_row(row: &Row<'_>) -> Result<Self, sqlx::Error>;
}

macro_rules! tuple_from_row {
    ($(($($t:ident $i:tt),+)),+ $(,)?) => {$(
        impl<$($t: Col),+> FromRow for ($($t,)+) {
            fn from_row(row: &Row<'_>) -> Result<Self, sqlx::Error> {
                Ok(($(row.get::<$t>($i)?,)+))
            }
        }
    )+};
}

tuple_from_row!(
    (A 0),
    (A 0, B 1),
    (A 0, B 1, C 2),
    (A 0, B 1, C 2, D 3),
    (A 0, B 1, C 2, D 3, E 4),
    (A 0, B 1, C 2, D 3, E 4, F 5),
);

/// Implements [`FromRow`](crate::sql::FromRow) for a struct whose fields are named like the
/// columns: `from_row!(LevelRow { variant_id, location_id, on_hand });`.
#[macro_export]
macro_rules! from_row {
    ($t:ident { $($field:ident),+ $(,)? }) => {
        impl $crate::sql::FromRow for $t {
            fn from_row(row: &$crate::sql::Row<'_>) -> Result<Self, ::sqlx::Error> {
                Ok(Self { $($field: row.col(stringify!($field))?),+ })
            }
        }
    };
}

/// A rusqlite error as sqlx would report the same failure, so that one set of error helpers
/// ([`crate::storage`], [`crate::is_unique_violation`]) serves every connection.
pub(crate) fn from_lite(e: rusqlite::Error) -> sqlx::Error {
    match e {
        rusqlite::Error::SqliteFailure(err, message) => sqlx::Error::Database(Box::new(LiteError {
            code: err.extended_code,
            message: message.unwrap_or_else(|| err.to_string()),
        })),
        rusqlite::Error::QueryReturnedNoRows => sqlx::Error::RowNotFound,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// A failure reported by SQLite to the writer's connection.
#[derive(Debug)]
struct LiteError {
    code: i32,
    message: String,
}

impl std::fmt::Display for LiteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for LiteError {}

impl sqlx::error::DatabaseError for LiteError {
    fn message(&self) -> &str {
        &self.message
    }

    /// The extended result code, as sqlx's SQLite driver reports it.
    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                sqlx::error::ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => sqlx::error::ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => sqlx::error::ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => sqlx::error::ErrorKind::CheckViolation,
            _ => sqlx::error::ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(values_list(2, 3, 1), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(in_list(3, 4), "($4, $5, $6)");
    }

    #[test]
    fn timestamps_read_back_in_every_form_sqlx_writes() {
        let t = DateTime::parse_from_rfc3339("2026-11-30T19:45:19.123456Z").unwrap().with_timezone(&Utc);
        assert_eq!(lite_time(&time_text(&t)).unwrap(), t);
        assert_eq!(lite_time("2026-11-30 19:45:19.123456+00:00").unwrap(), t);
        assert_eq!(lite_time("2026-11-30 19:45:19.123456").unwrap(), t);
        assert!(lite_time("yesterday").is_err());
    }
}
