//! Overload and slow clients are harmless: a full write queue answers `503 overloaded` with
//! `Retry-After` and writes nothing; a connection that trickles its head, idles, or trickles
//! its body is closed or answered in bounded time; at the connection cap a stalled client
//! gives way to a new one. Real sockets throughout.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::both;
use crate::support::{Backend, TestApp};

async fn carts_in_db(app: &TestApp) -> i64 {
    let mut r = app.db.read().await.unwrap();
    backroom_db::sql::query("SELECT COUNT(*) FROM carts").fetch_scalar(&mut r.conn()).await.unwrap()
}

both!(
    a_full_write_queue_answers_503_overloaded,
    settings = |s: &mut backroom::config::Settings| {
        s.writer_queue = 1;
        s.writer_max_batch = 1;
    },
    |app: TestApp| async move {
        let app = std::sync::Arc::new(app);
        let mut tasks = Vec::new();
        for _ in 0..300 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                app.send(app.client.post(app.url("/store/carts")).json(&json!({"currency": "EUR"}))).await
            }));
        }
        let (mut created, mut shed) = (0, 0);
        for t in tasks {
            let r = t.await.unwrap();
            match r.status {
                201 => created += 1,
                503 => {
                    assert_eq!(r.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
                    r.problem(503, "overloaded");
                    shed += 1;
                }
                other => panic!("unexpected status {other}: {}", r.body),
            }
        }
        assert!(shed > 0, "300 carts at once through a queue of one job shed nothing");
        // Every 201 is a cart; every 503 wrote nothing.
        assert_eq!(carts_in_db(&app).await, created);
        // Once the burst is over, the store answers normally.
        app.send(app.client.post(app.url("/store/carts")).json(&json!({"currency": "EUR"}))).await.expect(201);
    }
);

/// An app whose edge limits are short enough to test.
async fn edge_app(max_connections: usize) -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |s| {
        s.header_timeout = Duration::from_millis(500);
        s.request_timeout = Duration::from_secs(1);
        s.max_connections = max_connections;
    })
    .await
}

/// Reads until the peer closes; `Some(bytes read)` if it did within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|_| String::from_utf8_lossy(&got).into_owned())
}

/// `n` connections, each with a request in flight whose body never finishes.
async fn stuck_requests(app: &TestApp, n: usize) -> Vec<TcpStream> {
    let mut busy = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(
            b"POST /store/carts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{",
        )
        .await
        .unwrap();
        busy.push(s);
    }
    busy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_and_an_idle_connection_are_closed() {
    let app = edge_app(100).await;
    // Half a request head, then nothing.
    let mut stalled = TcpStream::connect(app.addr).await.unwrap();
    stalled.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // A whole request, answered, then idle on keep-alive.
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    // Meanwhile everybody else is served.
    app.get("/healthz").await.expect(200);
    assert!(closed_within(&mut stalled, Duration::from_secs(10)).await.is_some(), "a stalled head stays open");
    assert!(closed_within(&mut idle, Duration::from_secs(10)).await.is_some(), "an idle keep-alive stays open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_answered_503_in_time() {
    let app = edge_app(100).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(
        b"POST /store/carts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"curr",
    )
    .await
    .unwrap();
    let answer = closed_within(&mut s, Duration::from_secs(10)).await.expect("answered and closed in time");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("application/problem+json") && answer.contains("request_timeout"), "{answer}");
    assert_eq!(carts_in_db(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_stalled_clients_give_way() {
    let app = edge_app(8).await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        stalled.push(s);
    }
    // Twenty stalled sockets against a cap of eight: a real client still gets in at once.
    for _ in 0..5 {
        let r = tokio::time::timeout(Duration::from_secs(5), app.get("/healthz")).await.expect("not kept out");
        r.expect(200);
    }
    // The ones that gave way were closed (most of them long before their header timeout).
    let mut closed = 0;
    for s in &mut stalled {
        if closed_within(s, Duration::from_millis(50)).await.is_some() {
            closed += 1;
        }
    }
    assert!(closed >= 12, "only {closed} of 20 stalled connections were closed at a cap of 8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_is_busy_a_newcomer_gets_503() {
    let app = edge_app(4).await;
    // Four requests in flight (their bodies never finish) fill the cap.
    let mut busy = stuck_requests(&app, 4).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut late = TcpStream::connect(app.addr).await.unwrap();
    late.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answer = closed_within(&mut late, Duration::from_secs(5)).await.expect("answered at once and closed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1") && answer.contains("\"code\":\"overloaded\""), "{answer}");
    // The busy ones end at their request deadline; then the store answers again.
    for s in &mut busy {
        let a = closed_within(s, Duration::from_secs(10)).await.expect("the request deadline ends it");
        assert!(a.starts_with("HTTP/1.1 503"), "{a}");
    }
    app.get("/healthz").await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_cap_requests_are_shed_but_probes_answer() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.request_timeout = Duration::from_secs(1);
        s.max_in_flight = 2;
    })
    .await;
    // Two requests in flight (their bodies never finish) take the whole cap.
    let mut busy = stuck_requests(&app, 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = app.get("/store/products").await;
    assert_eq!(r.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    r.problem(503, "overloaded");
    let r = app.send(app.client.post(app.url("/store/carts")).json(&json!({"currency": "EUR"}))).await;
    r.problem(503, "overloaded");
    assert_eq!(carts_in_db(&app).await, 0, "a shed request did nothing");
    // Probes are never shed.
    app.get("/healthz").await.expect(200);
    app.get("/readyz").await.expect(200);
    // Once the busy ones end (at their deadline), requests run again.
    for s in &mut busy {
        closed_within(s, Duration::from_secs(10)).await.expect("the request deadline ends it");
    }
    app.get("/store/products").await.expect(200);
}
