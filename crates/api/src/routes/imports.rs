//! CSV import and export of products (`/admin/imports/products`, `/admin/exports/products.csv`)
//! and the jobs that imports run as (`/admin/jobs/{id}`); see [`crate::imports`].

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use backroom_catalog::ProductFilter;
use backroom_kernel::PageRequest;
use serde::Serialize;

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::Staff;
use crate::imports::Job;
use crate::routes::Routes;

/// The largest CSV file accepted: 256 MiB (about a million variants).
pub const MAX_CSV: usize = 256 * 1024 * 1024;

pub fn routes(r: &mut Routes) {
    use crate::access::Content::{ProductData, Scanned};
    use backroom_auth::Permission::{CatalogRead, CatalogWrite};
    use utoipa_axum::routes;
    let mut route = routes!(import_products);
    route.2 = route.2.layer(DefaultBodyLimit::max(MAX_CSV));
    r.admin(CatalogWrite, ProductData, route).action("product.import");
    r.admin(CatalogRead, Scanned, routes!(get_job));
    r.admin(CatalogRead, Scanned, routes!(export_products));
}

/// The id of a job just started.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Started {
    #[schema(example = "job_01jdxk8m6q3v4t2c7e9f0g1h2j")]
    pub id: String,
}

/// Import products from CSV
///
/// Starts a background job that creates or updates products from a CSV file (one row per
/// variant, first column `handle`; the columns are in docs/integrations.md) and answers its id
/// at once; follow it with `GET /admin/jobs/{id}`. Each product (the rows of one handle) is
/// written in one transaction; a row with an empty or malformed handle, or a product the
/// catalog refuses, is listed in the job's `errors` with its row number while the other rows
/// are imported. Importing the same file again updates the products and never duplicates
/// them.
#[utoipa::path(post, path = "/admin/imports/products", tag = "catalog",
    request_body(content = String, content_type = "text/csv", description = "The CSV file, UTF-8, header row first"),
    responses(
        (status = 202, description = "The job started", body = Started),
        (status = 413, description = "`payload_too_large`: over 256 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: not text/csv", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn import_products(
    State(s): State<AppState>,
    _staff: Staff,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("text/csv"));
    if !csv {
        return Err(ApiError::custom(
            backroom_kernel::Code::UnsupportedMediaType,
            "send the file as text/csv",
            serde_json::Value::Null,
        ));
    }
    let id = crate::imports::create_job(&s, "product_import").await?;
    let job_id = id.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::imports::run_import(&s, &job_id, &body, &|_, _| {}).await {
            tracing::error!(job = %job_id, error = ?e, "the product import failed");
            let _ = crate::imports::fail(&s, &job_id, &e.to_string()).await;
        }
        // What the import changed shows at once in this process's listings.
        s.views.mark_all_stale();
        s.cache.invalidate();
    });
    Ok((StatusCode::ACCEPTED, Json(Started { id })).into_response())
}

/// Get a job
///
/// A background job's state: `running`, `succeeded` (every row was read; refused rows are in
/// `errors`) or `failed` (the file could not be read, or the server stopped while it ran),
/// with the rows `processed` so far out of `total`.
#[utoipa::path(get, path = "/admin/jobs/{id}", tag = "catalog", params(("id" = String, Path)),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "`not_found`: no such job", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_job(State(s): State<AppState>, _staff: Staff, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    Ok(Json(crate::imports::job(&s, &id).await?))
}

/// Export products as CSV
///
/// Every product (any status), one row per variant, in the columns that
/// `POST /admin/imports/products` takes: the file imports back unchanged. Streamed a page of
/// products at a time.
#[utoipa::path(get, path = "/admin/exports/products.csv", tag = "catalog",
    responses((status = 200, description = "The CSV file", content_type = "text/csv", body = String)),
    security(("api_key" = [])))]
pub async fn export_products(State(s): State<AppState>, _staff: Staff) -> ApiResult<Response> {
    enum Step {
        Head,
        Page(PageRequest),
        Done,
    }
    let first = PageRequest::parse(Some(100), None)?;
    let stream = futures_util::stream::unfold(Step::Head, move |step| {
        let (s, first) = (s.clone(), first.clone());
        async move {
            match step {
                Step::Head => Some((Ok(crate::imports::header()), Step::Page(first))),
                Step::Page(page) => {
                    let filter = ProductFilter { status: None, q: None, category: None };
                    let found = match s.catalog.list_products(&filter, &page).await {
                        Ok(f) => f,
                        Err(e) => return Some((Err(failed(e)), Step::Done)),
                    };
                    let rows = match crate::imports::export_rows(&s, &found.items).await {
                        Ok(r) => r,
                        Err(e) => return Some((Err(failed(e)), Step::Done)),
                    };
                    let next = match found.next_cursor.map(|c| PageRequest::parse(Some(100), Some(&c))) {
                        Some(Ok(p)) => Step::Page(p),
                        Some(Err(e)) => return Some((Err(failed(e)), Step::Done)),
                        None => Step::Done,
                    };
                    Some((Ok(rows), next))
                }
                Step::Done => None,
            }
        }
    });
    let mut res = Body::from_stream(stream).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    res.headers_mut()
        .insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"products.csv\""));
    Ok(res)
}

fn failed(e: backroom_kernel::Error) -> std::io::Error {
    tracing::error!(error = ?e, "the product export failed while streaming");
    std::io::Error::other("the product export failed")
}
