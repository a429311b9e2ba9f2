//! Public catalog reads: an in-process response cache, `ETag` with `If-None-Match` → `304`,
//! and `Cache-Control` fit for a CDN.
//!
//! Answers to requests with a customer token are neither served from the cache nor kept in
//! it while the store may have price lists (a member sees their list's prices: see
//! [`crate::member_prices`]); every answer says `Vary: authorization` to shared caches.
//!
//! The cache is dropped as a whole whenever the catalog or stock may have changed: at once
//! for writes made through this process (admin writes and checkouts), and through the
//! outbox follower for writes made by other processes. Dropping everything is O(1) (a new
//! generation) and keeps the rule simple enough to trust: a cached answer never outlives a
//! change this process knows about (P4). Written here rather than with a cache crate because
//! whole-generation invalidation is the only eviction it needs, besides a size cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use backroom_db::outbox::{Batch, BoxFuture, Consumer, Event};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::views::Touched;

/// What public catalog answers say to browsers and CDNs: short-lived, revalidated by ETag.
pub const CACHE_CONTROL: &str = "public, max-age=5, stale-while-revalidate=30";

/// Entries kept at most; past it the cache starts over.
const MAX_ENTRIES: usize = 20_000;

#[derive(Clone)]
struct Entry {
    body: Bytes,
    etag: HeaderValue,
    content_type: HeaderValue,
}

/// The response cache of one process. (Search result pages are assembled from the
/// storefront views of [`crate::views`], which change per product.)
#[derive(Default)]
pub struct ResponseCache {
    generation: AtomicU64,
    entries: RwLock<HashMap<String, (u64, Entry)>>,
}

impl ResponseCache {
    /// Forgets every cached answer.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.write().expect("cache lock").clear();
    }

    fn get(&self, key: &str) -> Option<Entry> {
        let generation = self.generation.load(Ordering::SeqCst);
        let entries = self.entries.read().expect("cache lock");
        entries.get(key).filter(|(g, _)| *g == generation).map(|(_, e)| e.clone())
    }

    /// Stores an answer computed when the generation was `generation`, unless the cache has
    /// been invalidated since (the answer may predate the change).
    fn put(&self, key: String, generation: u64, entry: Entry) {
        let mut entries = self.entries.write().expect("cache lock");
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (generation, entry));
    }
}

/// Drops this process's cached answers when the catalog or stock changed in any process: a
/// broadcast outbox [`Consumer`], run after the search index's and the storefront views'
/// (so an answer cached after the drop already comes from the updated index and views).
pub struct Invalidation(pub Arc<ResponseCache>);

impl Consumer for Invalidation {
    fn name(&self) -> &'static str {
        "http-cache"
    }

    fn wants(&self, event: &Event) -> bool {
        matches!(event, Event::ProductChanged(_) | Event::CategoryChanged(_) | Event::StockChanged(_))
    }

    fn handle<'a>(&'a self, _: Batch<'a>) -> BoxFuture<'a, backroom_kernel::Result<()>> {
        Box::pin(async move {
            self.0.invalidate();
            Ok(())
        })
    }

    /// Drops what was cached while the consumers before it started (the search index may
    /// have been built meanwhile), then reads from the head on.
    fn resume<'a>(&'a self, head: &'a str) -> BoxFuture<'a, backroom_kernel::Result<String>> {
        Box::pin(async move {
            self.0.invalidate();
            Ok(head.to_owned())
        })
    }
}

fn etag_of(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
}

fn not_modified(req_headers: &HeaderMap, etag: &HeaderValue) -> bool {
    req_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == etag))
}

fn answer(entry: &Entry, req_headers: &HeaderMap) -> Response {
    let mut res = if not_modified(req_headers, &entry.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(entry.body.clone()));
        r.headers_mut().insert(header::CONTENT_TYPE, entry.content_type.clone());
        r
    };
    res.headers_mut().insert(header::ETAG, entry.etag.clone());
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    // A signed-in customer may be answered with their price list's prices: a shared cache
    // must not hand this (anonymous) answer to a request with a token.
    res.headers_mut().append(header::VARY, HeaderValue::from_static("authorization"));
    res
}

fn is_public_catalog(path: &str) -> bool {
    path == "/store/products"
        || path.starts_with("/store/products/")
        || path == "/store/categories"
        || is_streamed(path)
}

/// Answers that are streamed: on a miss they go out as they are made, and are kept only
/// once whole and if no larger than [`MAX_STREAMED`].
fn is_streamed(path: &str) -> bool {
    path == "/feeds/products.xml"
}

/// The largest streamed answer kept.
const MAX_STREAMED: usize = 16 * 1024 * 1024;

/// Passes a streamed answer on while keeping a copy, and caches the copy at its end unless it
/// grew past [`MAX_STREAMED`] or failed.
fn tee(cache: Arc<ResponseCache>, key: String, generation: u64, res: Response) -> Response {
    use futures_util::StreamExt;
    let (parts, body) = res.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let start = (body.into_data_stream(), Some(Vec::new()));
    let stream = futures_util::stream::unfold(Some(start), move |state| {
        let (cache, key, content_type) = (cache.clone(), key.clone(), content_type.clone());
        async move {
            let (mut stream, mut kept) = state?;
            match stream.next().await {
                Some(Ok(chunk)) => {
                    if let Some(k) = kept.as_mut() {
                        if k.len() + chunk.len() > MAX_STREAMED {
                            kept = None;
                        } else {
                            k.extend_from_slice(&chunk);
                        }
                    }
                    Some((Ok(chunk), Some((stream, kept))))
                }
                Some(Err(e)) => Some((Err(e), None)),
                None => {
                    if let Some(body) = kept {
                        let body = Bytes::from(body);
                        cache.put(key, generation, Entry { etag: etag_of(&body), content_type, body });
                    }
                    None
                }
            }
        }
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The path of a cache key (a request URI).
fn key_path(key: &str) -> String {
    key.split('?').next().unwrap_or(key).to_owned()
}

/// The middleware: serves public catalog GETs from the cache, and invalidates the cache
/// after every write through this process that can change what the catalog shows (admin
/// writes, checkouts), marking the storefront views the write touched stale (its handler
/// says which with a [`Touched`] response extension; without one, all of them).
pub async fn layer(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        // Admin writes change the catalog or stock; checkouts change stock. Carts do not.
        let path = req.uri().path();
        let changes_catalog = path.starts_with("/admin/") || path.ends_with("/checkout");
        let res = next.run(req).await;
        if changes_catalog && (res.status().is_success() || res.status() == StatusCode::PAYMENT_REQUIRED) {
            match res.extensions().get::<Touched>() {
                Some(touched) => s.views.touch(touched),
                None => s.views.mark_all_stale(),
            }
            s.cache.invalidate();
        }
        return res;
    }
    if !is_public_catalog(req.uri().path()) {
        return next.run(req).await;
    }
    // A customer's token may get a price list's prices (crate::member_prices): such answers
    // are never served from nor kept in the cache, unless the store surely has no price list.
    if req.headers().contains_key(header::AUTHORIZATION) && !s.prices.surely_none() {
        let mut res = next.run(req).await;
        res.headers_mut()
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static(crate::member_prices::PRIVATE));
        res.headers_mut().append(header::VARY, HeaderValue::from_static("authorization"));
        return res;
    }
    let key = req.uri().to_string();
    let headers = req.headers().clone();
    if let Some(hit) = s.cache.get(&key) {
        metrics::counter!("catalog_cache_total", "result" => "hit").increment(1);
        return answer(&hit, &headers);
    }
    metrics::counter!("catalog_cache_total", "result" => "miss").increment(1);
    let generation = s.cache.generation.load(Ordering::SeqCst);
    let res = next.run(req).await;
    // A member's answer (its handler made it private) is never kept.
    if res.status() != StatusCode::OK || res.headers().contains_key(header::CACHE_CONTROL) {
        return res;
    }
    if is_streamed(&key_path(&key)) {
        let mut res = tee(s.cache.clone(), key, generation, res);
        res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
        return res;
    }
    let (parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let entry = Entry {
        etag: etag_of(&bytes),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/json")),
        body: bytes,
    };
    s.cache.put(key, generation, entry.clone());
    answer(&entry, &headers)
}
