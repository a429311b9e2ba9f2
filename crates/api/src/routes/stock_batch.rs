//! `POST /admin/stock/batch`: stock sync in from an ERP or warehouse system.

use std::collections::HashMap;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use backroom_checkout::idempotency;
use backroom_inventory::batch::{BatchAnswer, SkuTarget, StockBatch, StockBatchResult};
use backroom_kernel::{Code, Error};

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, Staff};
use crate::routes::Routes;
use crate::views::Touched;

/// The largest body of a batch: 10,000 rows with long SKUs and location ids fit.
pub const MAX_BATCH_BODY: usize = 4 * crate::MAX_BODY;

pub fn routes(r: &mut Routes) {
    use crate::access::Content::ProductData;
    use backroom_auth::Permission::InventoryWrite;
    use utoipa_axum::routes;
    let mut route = routes!(stock_batch);
    route.2 = route.2.layer(DefaultBodyLimit::max(MAX_BATCH_BODY));
    r.admin(InventoryWrite, ProductData, route).action("stock.batch");
}

/// Set many stock levels at once
///
/// For systems that own the counted stock (an ERP, a warehouse system): sets `on_hand` for up
/// to 10,000 SKU and location pairs (the default location when `location_id` is left out) in
/// one transaction, one adjustments-ledger line (reason `stock_batch`) per changed level. Good
/// rows are applied; bad rows are listed in `errors` with their index, SKU, `code` and message
/// and never stop the others: `not_found` (no variant has the SKU), `validation_failed` (a count
/// outside 0–1,000,000,000, an unknown location, or a row repeating an earlier SKU and location)
/// and `stock_below_committed` (fewer units than are reserved or allocated, for a variant
/// without backorders).
///
/// `Idempotency-Key` is required: the same key and body answer the first answer again (with
/// `Idempotency-Replayed: true`) and change nothing, so a retry after a lost answer is safe.
#[utoipa::path(post, path = "/admin/stock/batch", tag = "inventory",
    params(("Idempotency-Key" = String, Header, description = "1–255 printable ASCII characters; the same key replays the first answer",
        max_length = 255, pattern = "^[!-~]([ -~]*[!-~])?$")),
    request_body(content = StockBatch, description = "The counted levels", example = json!({"items": [
        {"sku": "TEE-BLACK-M", "on_hand": 120}, {"sku": "TEE-BLACK-L", "location_id": "loc_default", "on_hand": 0}]})),
    responses(
        (status = 200, description = "Applied (or replayed): how many rows, and the rows refused", body = StockBatchResult,
            example = json!({"updated": 1, "errors": [{"index": 1, "sku": "TEE-BLACK-L", "code": "stock_below_committed",
                "message": "3 units are reserved or allocated for orders; on_hand cannot go below that"}]})),
        (status = 400, description = "`idempotency_key_required`: no valid `Idempotency-Key`; `malformed_json`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`conflict`: a variant of the batch was deleted while it ran (nothing applied; send it again)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: over 4 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: no rows, or more than 10,000; `idempotency_key_reused`: the key was used with another body", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn stock_batch(
    State(s): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    ApiJson(batch): ApiJson<StockBatch>,
) -> ApiResult<Response> {
    let key = super::idempotency_key(&headers)?;
    let hash = idempotency::request_hash(&serde_json::to_string(&batch).map_err(Error::internal)?);
    let mut skus: Vec<String> = batch.items.iter().map(|r| r.sku.clone()).collect();
    skus.sort_unstable();
    skus.dedup();
    let mut products = HashMap::new();
    let targets: HashMap<String, SkuTarget> = s
        .catalog
        .variants_by_sku(&skus)
        .await?
        .into_iter()
        .map(|(sku, variant_id, product_id, allow_backorder)| {
            products.insert(variant_id.clone(), product_id);
            (sku, SkuTarget { variant_id, allow_backorder })
        })
        .collect();
    match s.inventory.apply_batch(&key, &hash, &batch, &targets, staff.actor.id()).await? {
        BatchAnswer::Applied { result, variants } => {
            metrics::counter!("stock_batch_rows_total", "result" => "applied").increment(result.updated as u64);
            metrics::counter!("stock_batch_rows_total", "result" => "refused").increment(result.errors.len() as u64);
            let mut touched: Vec<String> = variants.iter().filter_map(|v| products.get(v).cloned()).collect();
            touched.sort_unstable();
            touched.dedup();
            Ok((Extension(Touched { products: touched, ..Touched::default() }), Json(result)).into_response())
        }
        BatchAnswer::Replayed(result) => {
            let mut res = (Extension(Touched::nothing()), Json::<StockBatchResult>(result)).into_response();
            res.headers_mut().insert("idempotency-replayed", HeaderValue::from_static("true"));
            Ok(res)
        }
        BatchAnswer::Reused => Err(ApiError::custom(
            Code::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request body",
            serde_json::Value::Null,
        )),
    }
}
