//! The PostgreSQL database a bench runs in when given `--database-url`: created fresh on
//! that server for this run (`backroom_bench_<ulid>`), and dropped again at the end. The
//! URL only names the server (and a database to connect to for `CREATE DATABASE`); nothing
//! that was there before is read, changed or dropped.

use anyhow::{Context, bail};
use sqlx::Connection;

/// Whether `url` can name a PostgreSQL server for a bench (clap's check of `--database-url`).
pub fn parse_server_url(url: &str) -> Result<String, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("expected a PostgreSQL server, postgres://…: the bench creates a database of its own there \
                    (SQLite benches always run on a fresh temporary store)"
            .into());
    }
    backroom_db::check_url(url)?;
    Ok(url.to_owned())
}

/// `url` with its database name replaced by `name` (user, password, host, port and query
/// parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let authority = head.find("://").map_or(0, |i| i + 3);
    let path = head[authority..].find('/').map_or(head.len(), |i| i + authority);
    let mut out = format!("{}/{name}", &head[..path]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A database this run created; [`Database::drop_database`] removes it.
#[derive(Debug)]
pub struct Database {
    server: String,
    name: String,
    url: String,
}

impl Database {
    /// Creates a fresh, empty database on the server of `server_url`.
    pub async fn create(server_url: &str) -> anyhow::Result<Database> {
        let name = backroom_kernel::id::new("backroom_bench");
        let mut conn = sqlx::PgConnection::connect(server_url)
            .await
            .with_context(|| format!("cannot connect to {}", redact(server_url)))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut conn).await.with_context(
            || format!("cannot create the bench's database on {} (needs CREATEDB)", redact(server_url)),
        )?;
        let _ = conn.close().await;
        eprintln!("\x1b[1m[bench]\x1b[0m created database {name} on {} for this run", redact(server_url));
        Ok(Database { url: with_database(server_url, &name), server: server_url.to_owned(), name })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database, ending any session still connected to it (a server child that
    /// was killed, a pool not yet closed).
    pub async fn drop_database(self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.server)
            .await
            .with_context(|| format!("cannot connect to drop database {}", self.name))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)))
            .execute(&mut conn)
            .await
            .with_context(|| format!("cannot drop the bench's database {}", self.name))?;
        let left: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&self.name)
            .fetch_optional(&mut conn)
            .await?;
        let _ = conn.close().await;
        if left.is_some() {
            bail!("database {} is still there after DROP DATABASE", self.name);
        }
        eprintln!("\x1b[1m[bench]\x1b[0m dropped database {}", self.name);
        Ok(())
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    let Some(scheme) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let rest = &url[scheme..];
    match (rest.find('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!("{}{}:***{}", &url[..scheme], &rest[..colon], &rest[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        assert_eq!(with_database("postgres://u:p@h:5432/postgres", "x"), "postgres://u:p@h:5432/x");
        assert_eq!(with_database("postgres://h/db?sslmode=disable", "x"), "postgres://h/x?sslmode=disable");
        assert_eq!(with_database("postgresql://h:1", "x"), "postgresql://h:1/x");
        assert_eq!(with_database("postgres://h?application_name=a", "x"), "postgres://h/x?application_name=a");
    }

    #[test]
    fn only_postgres_servers_are_accepted() {
        assert!(parse_server_url("postgres://u@127.0.0.1:5432/postgres").is_ok());
        assert!(parse_server_url("sqlite://store.db").unwrap_err().contains("PostgreSQL"));
        assert!(parse_server_url("mysql://h/db").is_err());
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
