//! Helpers shared by the tests that run the real binary. Each test crate uses some of them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The binary in `dir`, with none of this shell's `BACKROOM_*` settings leaking in.
pub fn backroom(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_backroom"));
    c.current_dir(dir).env("BACKROOM_LOG", "warn");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BACKROOM_") && name != "BACKROOM_LOG" {
            c.env_remove(name);
        }
    }
    c
}

/// Runs `cmd` to its end: exit code, stdout, stderr.
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("backroom runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Spawns a prepared `backroom serve … --listen 127.0.0.1:0` and answers the child and the
/// base URL it printed.
pub fn spawn_serve(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("a first line");
    let url = line.trim().strip_prefix("backroom listening on ").unwrap_or_else(|| panic!("got {line:?}")).to_owned();
    (child, url)
}

/// `backroom serve` on `db_url` for a test that kills it under load (crash.rs,
/// webhook_crash.rs): `token` as the admin key, the `test` provider, a fast recovery (every
/// 200 ms, attempts older than 1 s), errors-only logs, no rate limits (every client is this one
/// address) and no risk scoring (one e-mail from one address, some of its payments declined on
/// purpose, would be blocked after five declines: not what these tests are about). Add settings,
/// then start it with [`spawn_serve`].
pub fn serve_under_load(dir: &std::path::Path, db_url: &str, token: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backroom"));
    cmd.current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", db_url])
        .env("BACKROOM_ADMIN_TOKEN", token)
        .env("BACKROOM_PAYMENT_PROVIDERS", "test")
        .env("BACKROOM_RECOVERY_INTERVAL", "200ms")
        .env("BACKROOM_RECOVERY_GRACE", "1s")
        .env("BACKROOM_LOG", "error")
        .env("BACKROOM_RATE_LIMITS", "off")
        .env("BACKROOM_RISK", "off")
        .env_remove("BACKROOM_CONFIG")
        .stderr(Stdio::null());
    cmd
}

/// One text column of every row of `sql`, read from either database.
pub async fn strings(db: &backroom_db::Db, sql: &'static str) -> Vec<String> {
    match db.pools() {
        backroom_db::Pools::Sqlite { reader, .. } => sqlx::query_scalar(sql).fetch_all(reader).await.unwrap(),
        backroom_db::Pools::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
    }
}
