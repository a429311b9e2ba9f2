//! The HTTP server loop of `serve`: hyper's HTTP/1.1 connections under bounds that keep slow
//! or stalled clients harmless.
//!
//! - A connection that has not sent a whole request head within the header timeout
//!   (`BACKROOM_HEADER_TIMEOUT`) is closed; so is an idle keep-alive connection past it
//!   (hyper's header-read timer runs while it waits for the next request head).
//! - A request not answered within the request timeout (`BACKROOM_REQUEST_TIMEOUT`), body
//!   reading included, is answered `503` by the router's deadline layer.
//! - Open connections are capped (`BACKROOM_MAX_CONNECTIONS`, and below the file-descriptor
//!   limit, whose soft value is raised to the hard one at start), so `accept` never runs out
//!   of descriptors. At the cap, a new connection takes the place of the connection that has
//!   been idle longest (no request in flight: a stalled head or an idle keep-alive), so a
//!   stalled client never keeps anyone else out. Only when every connection is busy with a
//!   request is the newcomer answered `503 overloaded` (with `Retry-After`) and closed.
//! - Requests in flight are capped (`BACKROOM_MAX_IN_FLIGHT`): past the cap a request is
//!   answered `503 overloaded` at once, before it reads a body or touches the database, so an
//!   overload costs a few bytes per shed request instead of a growing queue of half-done work
//!   (memory and latency stay bounded at any offered rate). `/healthz`, `/readyz` and
//!   `/metrics` are never shed, so probes keep answering.
//!
//! Written on hyper directly because `axum::serve` has no header timeout, no idle timeout and
//! no connection cap.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use futures_util::future::Either;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tower::ServiceExt;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a whole request head; also the longest idle keep-alive.
    pub header_timeout: Duration,
    /// How long in-flight requests get to finish after the shutdown signal.
    pub drain: Duration,
    /// Most open connections.
    pub max_connections: usize,
    /// Most requests in flight at once (probes aside); past it `503 overloaded`.
    pub max_in_flight: usize,
}

/// The default of [`Limits::max_in_flight`]: 256 a core. At a few milliseconds a request that
/// is far more than the cores can work on at once, yet it bounds the queue.
pub fn default_max_in_flight() -> usize {
    256 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Raises the soft file-descriptor limit to the hard one and answers how many connections
/// fit below it: `wanted`, or fewer when the descriptors would not suffice. Some descriptors
/// stay free for the database, the search index, logs, and the `503` answers at the cap.
pub fn connection_cap(wanted: usize) -> (usize, u64) {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the file-descriptor limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024)
        }
    };
    let reserve = (soft / 4).min(256);
    let fits = usize::try_from(soft.saturating_sub(reserve)).unwrap_or(usize::MAX).max(1);
    (wanted.min(fits), soft)
}

/// One open connection, as the cap sees it.
struct ConnState {
    /// Requests in flight (a request counts until its answer's body is sent).
    busy: AtomicUsize,
    /// When the connection was accepted or last finished a request (ms since [`EPOCH`]).
    idle_since: AtomicU64,
    /// Told to close (evicted at the cap).
    close: Notify,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// The open connections of one listener.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next: AtomicU64,
}

impl Registry {
    fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn add(&self) -> (u64, Arc<ConnState>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now_ms()),
            close: Notify::new(),
        });
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(id, state.clone());
        (id, state)
    }

    fn remove(&self, id: u64) {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Closes the connection idle longest; `false` when every connection has a request in
    /// flight.
    fn evict_idle(&self) -> bool {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let victim = conns
            .iter()
            .filter(|(_, c)| c.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, c)| c.idle_since.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match victim.and_then(|id| conns.remove(&id)) {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Marks a request in flight on its connection until dropped (with the answer's body).
struct Busy(Arc<ConnState>);

impl Busy {
    fn enter(state: &Arc<ConnState>) -> Self {
        state.busy.fetch_add(1, Ordering::AcqRel);
        Busy(state.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.store(now_ms(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish (up
/// to [`Limits::drain`]).
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let registry = Arc::new(Registry::default());
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: wait a moment
                // instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if registry.len() >= limits.max_connections && !registry.evict_idle() {
            metrics::counter!("http_connections_refused_total").increment(1);
            tokio::spawn(refuse(stream));
            continue;
        }
        let (id, state) = registry.add();
        metrics::gauge!("http_open_connections").set(registry.len() as f64);
        let (app, registry, stop, in_flight) = (app.clone(), registry.clone(), stop_rx.clone(), in_flight.clone());
        tokio::spawn(async move {
            connection(stream, peer, app, &state, in_flight, limits, stop).await;
            registry.remove(id);
            metrics::gauge!("http_open_connections").set(registry.len() as f64);
        });
    }
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + limits.drain;
    while registry.len() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Serves one connection until it closes, is evicted, or the server stops. Every request
/// carries the socket's `peer` as [`axum::extract::ConnectInfo`] (see `backroom_api::client`).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    state: &Arc<ConnState>,
    in_flight: Arc<Semaphore>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let svc_state = state.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = Busy::enter(&svc_state);
        let app = app.clone();
        let permit = match in_flight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) if is_probe(req.uri().path()) => None,
            Err(_) => {
                metrics::counter!("http_requests_shed_total").increment(1);
                return Either::Left(std::future::ready(Ok::<_, Infallible>(overloaded())));
            }
        };
        Either::Right(async move {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            let res = app.oneshot(req).await.unwrap_or_else(|never: Infallible| match never {});
            // The request counts as in flight until its answer's body has been sent.
            Ok::<_, Infallible>(res.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _in_flight = (&busy, &permit);
                    frame
                }))
            }))
        })
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own limits sit above the router's (`backroom_api::edge`: 100 header lines, 16 KiB
    // of them, an 8 KiB URI), so that a request past those gets a problem document from the
    // router instead of hyper's empty 431.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_headers(400)
        .max_buf_size(256 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        // Evicted at the cap: it had no request in flight, so dropping it cuts nothing.
        _ = state.close.notified() => {}
        _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
            // Stopping: a connection between requests (idle, or a head still trickling in) is
            // closed at once; one with a request in flight finishes it (up to the drain time).
            if state.busy.load(Ordering::Acquire) > 0 {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(limits.drain, conn).await;
            }
        }
    }
}

/// Probes that are never shed: an overloaded store is still alive, and says so.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The problem document of a request or connection shed at a cap, from the error-code table.
static OVERLOADED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let problem = backroom_api::error::ApiError::custom(
        backroom_kernel::Code::Overloaded,
        "the store is at capacity; nothing was done, retry after the Retry-After delay",
        serde_json::Value::Null,
    )
    .problem();
    serde_json::to_string(&problem).expect("a problem serialises")
});

/// `503 overloaded` for a request shed before it ran (the connection stays open).
fn overloaded() -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    let mut res = axum::response::Response::new(Body::from(OVERLOADED.as_str()));
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(backroom_api::error::PROBLEM_JSON));
    h.insert(header::RETRY_AFTER, HeaderValue::from_static(backroom_api::error::RETRY_AFTER_SECONDS));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    res
}

/// Answers a connection over the cap with `503 overloaded` and closes it.
async fn refuse(mut stream: TcpStream) {
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: {}\r\n\
         x-content-type-options: nosniff\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{}",
        backroom_api::error::RETRY_AFTER_SECONDS,
        OVERLOADED.len(),
        OVERLOADED.as_str()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}
