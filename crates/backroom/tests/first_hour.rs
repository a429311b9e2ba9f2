//! What a newcomer meets in the first hour with the real binary: `--help`, a port in use, a
//! bad `backroom.toml` value, plain logs in a file, a PostgreSQL database that does not exist.

mod common;

use std::io::Read;
use std::process::Stdio;

use common::{backroom, run};
use sqlx::Connection;

/// Every `BACKROOM_*` setting the code reads is named by `--help`, with its flag when it has
/// one.
#[test]
fn help_names_every_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (code, help, err) = run(backroom(dir.path()).arg("--help"));
    assert_eq!(code, 0, "{err}");
    let config = include_str!("../src/config.rs");
    let main = include_str!("../src/main.rs");
    let mut names: Vec<&str> = Vec::new();
    for text in [config, main] {
        for (at, _) in text.match_indices("BACKROOM_") {
            let name = text[at..].split(|c: char| !(c.is_ascii_uppercase() || c == '_')).next().unwrap();
            if name.len() > "BACKROOM_".len() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    assert!(names.len() >= 18, "found only {names:?}");
    for name in names {
        assert!(help.contains(name), "--help does not name {name}:\n{help}");
    }
    for flag in [
        "--writer-queue",
        "--request-timeout",
        "--cors-origins",
        "--reservation-ttl",
        "--max-in-flight",
        "--trusted-proxies",
        "--rate-limits",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    // Flags work like their variables.
    let (code, _, err) = run(backroom(dir.path()).args(["--writer-queue", "0", "migrate"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--writer-queue"), "{err}");
}

/// A port in use is reported before the data directory is created or a database opened.
#[test]
fn a_port_in_use_is_found_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("fresh-data");
    let (code, _, err) =
        run(backroom(dir.path()).args(["serve", "--listen", &at, "--data-dir", data.to_str().unwrap()]));
    assert_ne!(code, 0);
    assert!(err.contains(&format!("cannot listen on {at}")) && err.contains("another process"), "{err}");
    assert!(!data.exists(), "the data directory was created before the port was checked");
}

/// A wrong value in `backroom.toml` names its key and the file.
#[test]
fn a_bad_file_value_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backroom.toml"), "listen = \"127.0.0.1:0\"\nrequest_timeout = 30\n").unwrap();
    let (code, _, err) = run(backroom(dir.path()).arg("migrate"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("backroom.toml") && err.contains("key `request_timeout`"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// Logs written to a file (not a terminal) carry no colour codes.
#[test]
fn logs_to_a_file_are_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = backroom(dir.path())
        .env("BACKROOM_LOG", "info")
        .env("BACKROOM_PAYMENT_PROVIDERS", "test")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap(); // "backroom listen…": the start-up logs are written
    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    child.wait().unwrap();
    assert!(log.contains("backroom listening"), "{log}");
    assert!(!log.contains('\x1b'), "colour codes in a log file: {log:?}");
}

/// On PostgreSQL a database that does not exist is created when the user may; otherwise the
/// error says what to run, in one line without the server's source location.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_postgres_database_is_created_or_explained() {
    let Some(server) = backroom_db::testing::fresh_postgres().await else { return };
    let base = server.url().rsplit_once('/').unwrap().0.to_owned();
    let admin = std::env::var("BACKROOM_TEST_DATABASE_URL").unwrap();
    let name = format!("bk_created_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{base}/{name}");
    let given = url.clone();
    let (code, out, err) = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || run(backroom(&dir).args(["migrate", "--database-url", &given]))
    })
    .await
    .unwrap();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let drop_it = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(drop_it)).execute(&mut conn).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("migrations applied") && err.contains("created the database"), "{out}{err}");
    assert!(exists.is_some(), "the database was not created");

    // A user without CREATEDB gets the command to run.
    let role = format!("bk_nocreate_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}"))).execute(&mut conn).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN NOCREATEDB"))).execute(&mut conn).await.unwrap();
    let host = base.split_once("@").unwrap().1;
    let url = format!("postgres://{role}@{host}/{name}");
    let (code, _, err) = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || run(backroom(&dir).args(["migrate", "--database-url", &url]))
    })
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}"))).execute(&mut conn).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("createdb -h") && err.contains(&format!("-U {role} {name}")), "{err}");
    assert!(!err.contains("at line"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// A test's PostgreSQL database is gone once its guard is dropped, sessions and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_databases_are_dropped_when_the_test_ends() {
    let Some(pg) = backroom_db::testing::fresh_postgres().await else { return };
    let name = pg.url().rsplit_once('/').unwrap().1.to_owned();
    let db = backroom::open_db(pg.url()).await.unwrap();
    drop(pg);
    let admin = std::env::var("BACKROOM_TEST_DATABASE_URL").unwrap();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let left: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
    assert!(left.is_none(), "{name} is left behind");
    drop(db);
}
