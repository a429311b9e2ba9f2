//! The outermost layers of the app, in front of everything that logs, echoes or routes:
//! request size limits answered as problem+json (`431`, `414`), the security headers of every
//! answer, and CORS for browser storefronts on other origins.
//!
//! The server loop's own limits (hyper's) are set well above these, so that a request over
//! them reaches this layer and gets a problem document instead of hyper's empty answer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::ApiError;

/// The most bytes of all of a request's header lines together (`name: value` and its line end).
pub const MAX_HEADERS_BYTES: usize = 16 * 1024;
/// The most bytes of one header line.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// The most bytes of a request's URI (path and query).
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header lines of one request. The server's own parser takes more (so that a
/// request past this still gets a problem document, not an empty answer).
pub const MAX_HEADER_COUNT: usize = 100;

/// `414 uri_too_long` for a URI over [`MAX_URI_BYTES`]; `431 request_header_fields_too_large`
/// for headers over [`MAX_HEADERS_BYTES`] in all, one over [`MAX_HEADER_BYTES`], or more than
/// [`MAX_HEADER_COUNT`] of them.
pub async fn limits(req: Request, next: Next) -> Response {
    let uri = req.uri();
    let uri_len = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return ApiError::UriTooLong.into_response();
    }
    if req.headers().len() > MAX_HEADER_COUNT {
        return ApiError::HeaderFieldsTooLarge.into_response();
    }
    let mut total = 0usize;
    for (name, value) in req.headers() {
        // As sent: `name: value\r\n`.
        let line = name.as_str().len() + value.len() + 4;
        total += line;
        if line > MAX_HEADER_BYTES || total > MAX_HEADERS_BYTES {
            return ApiError::HeaderFieldsTooLarge.into_response();
        }
    }
    next.run(req).await
}

/// Whether answers under `path` are private to one client and must never be stored by a
/// browser or a shared cache: staff answers, carts (with their checkouts), orders, and a
/// customer's own resources and tokens.
pub fn is_private(path: &str) -> bool {
    let under = |prefix: &str| path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    under("/admin")
        || under("/store/carts")
        || under("/store/orders")
        || under("/store/customers")
        || under("/store/auth")
}

/// `X-Content-Type-Options: nosniff` on every answer (problem documents and `404`s too), and
/// `Cache-Control: no-store` on private ones ([`is_private`]).
pub async fn secure_headers(req: Request, next: Next) -> Response {
    let private = is_private(req.uri().path());
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if private {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The methods the API answers.
pub const CORS_METHODS: [Method; 5] = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
/// The request headers a browser storefront may send besides the always-allowed ones.
pub const CORS_ALLOW_HEADERS: [&str; 4] = ["content-type", "authorization", "idempotency-key", "x-request-id"];
/// The answer headers a browser storefront may read besides the always-exposed ones.
pub const CORS_EXPOSE_HEADERS: [&str; 8] = [
    "idempotency-replayed",
    "retry-after",
    "x-request-id",
    "location",
    "etag",
    "www-authenticate",
    "ratelimit",
    "ratelimit-policy",
];

/// The CORS rules of one app: its exact origins and tower-http's layer for them.
#[derive(Clone)]
pub struct Cors {
    origins: Arc<Vec<HeaderValue>>,
    /// Behind an `Arc`: the middleware's state is cloned for every request.
    layer: Arc<CorsLayer>,
}

impl Cors {
    /// CORS for exactly these origins (`https://shop.example`); none allows no browser origin.
    pub fn new(origins: Arc<Vec<HeaderValue>>) -> Self {
        let names = |list: &[&'static str]| list.iter().map(|h| HeaderName::from_static(h)).collect::<Vec<_>>();
        let layer = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods(CORS_METHODS.to_vec())
            .allow_headers(names(&CORS_ALLOW_HEADERS))
            .expose_headers(names(&CORS_EXPOSE_HEADERS))
            .max_age(Duration::from_secs(600));
        Self { origins, layer: Arc::new(layer) }
    }
}

/// CORS: a request from an allowed origin goes through tower-http's layer (a preflight is
/// answered `204` with `Access-Control-Allow-Origin` set to that origin, the methods and the
/// headers); a request from any other origin, or none, passes by with no CORS header, so a
/// preflight from it is `405` like any other `OPTIONS`.
pub async fn cors(State(cors): State<Cors>, req: Request, next: Next) -> Response {
    let allowed = req.headers().get(header::ORIGIN).is_some_and(|o| cors.origins.contains(o));
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if !allowed || (req.method() == Method::OPTIONS && !preflight) {
        let mut res = next.run(req).await;
        if !cors.origins.is_empty() {
            // The answer would differ for an allowed origin: shared caches must key on it.
            res.headers_mut().append(header::VARY, HeaderValue::from_static("origin"));
        }
        return res;
    }
    let mut next = Some(next);
    let inner = tower::service_fn(move |req: Request| {
        let next = next.take();
        async move {
            Ok::<Response, Infallible>(match next {
                Some(next) => next.run(req).await,
                None => ApiError::Domain(backroom_kernel::Error::internal("the CORS layer called the app twice"))
                    .into_response(),
            })
        }
    });
    let mut res = match cors.layer.layer(inner).oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    if preflight {
        *res.status_mut() = StatusCode::NO_CONTENT;
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_paths() {
        for p in [
            "/admin",
            "/admin/products",
            "/store/carts",
            "/store/carts/cart_1/checkout",
            "/store/orders/ord_1",
            "/store/customers/me/orders",
            "/store/auth/token",
        ] {
            assert!(is_private(p), "{p}");
        }
        for p in
            ["/store/products", "/store/categories", "/healthz", "/openapi.json", "/administrator", "/store/cartsx"]
        {
            assert!(!is_private(p), "{p}");
        }
    }
}
