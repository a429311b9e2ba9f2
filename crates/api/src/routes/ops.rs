//! Operations: liveness, readiness, metrics, the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
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
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<Health>) {
    if s.db.is_ready().await {
        (StatusCode::OK, Json(Health { status: "ready" }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "not_ready" }))
    }
}

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

#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "This API's OpenAPI document", content_type = "application/json")))]
pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::json())
}
