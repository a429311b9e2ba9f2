//! `backroom serve` as an operator runs it: under a small file-descriptor limit, hundreds of
//! stalled sockets neither make `accept` fail nor keep `/healthz` from answering; `/metrics`
//! can live on an address of its own; the `test` provider is off unless enabled, and loudly
//! announced when it is; bad settings stop the start with one clear line.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use common::backroom;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sockets_under_a_small_fd_limit_keep_nobody_out() {
    // The test itself needs room for its sockets.
    let _ = rlimit::increase_nofile_limit(4096);
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let log = dir.path().join("stderr.log");
    // `ulimit -n 256` (soft and hard) for the server alone, as a small container would give it.
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"ulimit -n 256 && exec "$0" serve --listen 127.0.0.1:0"#)
        .arg(env!("CARGO_BIN_EXE_backroom"))
        .current_dir(dir.path())
        .env_remove("BACKROOM_CONFIG")
        .env_remove("BACKROOM_DATABASE_URL")
        .env("BACKROOM_DATA_DIR", dir.path())
        .env("BACKROOM_LOG", "warn")
        .env("BACKROOM_PAYMENT_PROVIDERS", "test")
        .env("BACKROOM_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let (mut child, base) = common::spawn_serve(&mut cmd);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();

    // 400 sockets that send half a request head and then nothing: more than the server
    // has descriptors for.
    let addr = base.trim_start_matches("http://").to_owned();
    let mut stalled = Vec::new();
    for _ in 0..400 {
        if let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr)).await {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n").await;
            stalled.push(s);
        }
    }
    assert!(stalled.len() >= 300, "only {} sockets connected", stalled.len());
    for _ in 0..10 {
        let r = http.get(format!("{base}/healthz")).send().await.expect("healthz answers under a socket flood");
        assert_eq!(r.status(), 200);
    }
    // /metrics lives on its own address, not on the public one.
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let m = http.get(format!("http://127.0.0.1:{metrics_port}/metrics")).send().await.unwrap();
    assert_eq!(m.status(), 200);
    let text = m.text().await.unwrap();
    assert!(text.contains("http_open_connections"), "{text}");
    drop(stalled);
    child.kill().unwrap();
    child.wait().unwrap();
    // Enabling the test provider is announced at start.
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("`test` payment provider is enabled"), "{err}");
}

#[test]
fn provider_and_edge_settings_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value, says) in [
        ("BACKROOM_PAYMENT_PROVIDERS", "tset", "invalid payment providers"),
        ("BACKROOM_PAYMENT_PROVIDERS", "test,", "invalid payment providers"),
        ("BACKROOM_PROVIDER_TIMEOUT", "soon", "invalid duration"),
        ("BACKROOM_HEADER_TIMEOUT", "1ms", "must be at least"),
        ("BACKROOM_REQUEST_TIMEOUT", "-1s", "invalid duration"),
        ("BACKROOM_CORS_ORIGINS", "https://shop.example/path", "invalid CORS origins"),
        ("BACKROOM_METRICS_LISTEN", "nowhere", "invalid metrics listen address"),
        ("BACKROOM_TRUSTED_PROXIES", "10.0.0.0/8, proxy.local", "invalid trusted proxies"),
        ("BACKROOM_RATE_LIMITS", "maybe", "invalid rate limits"),
        ("BACKROOM_WRITER_QUEUE", "0", "must be a whole number"),
        ("BACKROOM_MAX_CONNECTIONS", "lots", "must be a whole number"),
        ("BACKROOM_MAX_IN_FLIGHT", "0", "must be a whole number"),
        ("BACKROOM_WRITER_JOB_TIMEOUT", "1ms", "must be at least"),
        ("BACKROOM_RISK", "maybe", "invalid risk scoring"),
        ("BACKROOM_RISK_MAX_DECLINES", "0", "must be a whole number"),
        ("BACKROOM_RISK_REVIEW_ABOVE", "EUR100000", "invalid review limits"),
        ("BACKROOM_RISK_REVIEW_SCORE", "95", "must not be above"),
        ("BACKROOM_RISK_COUNTRY_HEADER", "CF IPCountry", "invalid header"),
    ] {
        let out = backroom(dir.path()).env(name, value).arg("serve").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says) && err.contains(name), "{name}={value}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_at_once_despite_idle_and_stalled_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = backroom(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env("BACKROOM_DATA_DIR", dir.path())
        .env("BACKROOM_HEADER_TIMEOUT", "300s")
        .stderr(Stdio::null());
    let (mut child, base) = common::spawn_serve(&mut cmd);
    let addr = base.trim_start_matches("http://").to_owned();
    // One connection idle on keep-alive, one with half a head.
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "{status:?}");
    // Not a speed check: with a 300 s header timeout, a stop that waited for the stalled
    // head would take five minutes.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(120), "stopping waited for the stalled connection: {took:?}");
}
