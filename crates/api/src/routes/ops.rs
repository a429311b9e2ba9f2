//! Operations: liveness, readiness, metrics, the OpenAPI document and its readable reference.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

use crate::AppState;
use crate::error::ApiError;
use crate::routes::Routes;

/// Ops: probes, metrics and the API's own description.
pub fn routes(r: &mut Routes) {
    use utoipa_axum::routes;
    r.public(routes!(healthz));
    r.public(routes!(readyz));
    r.public(routes!(metrics));
    r.public(routes!(openapi));
    r.public(routes!(docs));
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness probe
///
/// Answers `200` with `{"status": "ok"}` while the process serves HTTP; it does not touch the
/// database. Never shed under overload.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness probe
///
/// `200 ready` while the database answers; `503 not_ready` when it does not (take the instance
/// out of the load balancer until it is ready again). Never shed under overload.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "Ready to serve", body = Health), (status = 503, description = "Not ready: the database cannot be reached", body = Health)))]
pub async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<Health>) {
    if s.db.is_ready().await {
        (StatusCode::OK, Json(Health { status: "ready" }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "not_ready" }))
    }
}

/// Prometheus metrics
///
/// Request counts and latencies per route, the writer's batches, checkout outcomes, stock
/// conflicts and more, in the Prometheus text format. With `BACKROOM_METRICS_LISTEN` set they are
/// served on that address instead, and this route answers `404`. Never shed under overload.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 404, description = "Served on its own address (`BACKROOM_METRICS_LISTEN`)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    if !s.metrics_here {
        return ApiError::RouteNotFound.into_response();
    }
    metrics_text(&s)
}

/// The Prometheus text of this process.
pub fn metrics_text(s: &AppState) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

/// This OpenAPI document
///
/// The OpenAPI 3.1 description of this API, the same as `docs/openapi.json` in the repository.
/// `GET /docs` renders it as a readable reference.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "This API's OpenAPI document", content_type = "application/json")))]
pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::json())
}

/// The page of `GET /docs`: Scalar's API reference, reading `/openapi.json` from this server.
/// The browser loads Scalar's script from its CDN (major version 1); nothing is fetched when
/// building or serving.
pub const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Backroom API reference</title>
</head>
<body>
<noscript>This reference needs JavaScript. The OpenAPI document it renders is at <a href="/openapi.json">/openapi.json</a>.</noscript>
<script id="api-reference" data-url="/openapi.json"></script>
<script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference@1"></script>
</body>
</html>
"#;

/// API reference (HTML)
///
/// A readable reference of this API, with the examples of the main flows, rendered in the
/// browser by Scalar from `/openapi.json`. Public, like the document; open it in a browser.
#[utoipa::path(get, path = "/docs", tag = "ops",
    responses((status = 200, description = "The reference page", content_type = "text/html")))]
pub async fn docs() -> Html<&'static str> {
    Html(DOCS_HTML)
}
