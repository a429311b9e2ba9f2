//! `/store/*`: the public storefront reads. Only published products; each variant shows its
//! prices and the units available to sell (`null` when its stock is not tracked).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use backroom_catalog::{Category, CategoryRef, Product, ProductFilter, ProductStatus};
use backroom_kernel::{Error, Money, Page, PageRequest};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::ApiQuery;
use crate::routes::admin::Items;

/// The longest `q` accepted.
pub const MAX_Q: usize = 256;

/// A product as shoppers see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StoreProduct {
    pub id: String,
    pub handle: String,
    pub title: String,
    pub description: String,
    pub attributes: BTreeMap<String, String>,
    pub categories: Vec<CategoryRef>,
    pub variants: Vec<StoreVariant>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A variant as shoppers see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StoreVariant {
    pub id: String,
    pub sku: String,
    pub title: String,
    pub options: BTreeMap<String, String>,
    pub prices: Vec<Money>,
    /// Units that can be bought now; `null` when the variant's stock is not tracked.
    pub available: Option<i64>,
    pub allow_backorder: bool,
}

/// Filters of `GET /store/products`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StoreProductsQuery {
    /// 1–100, default 20.
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Words of the title (at most 256 characters).
    pub q: Option<String>,
    /// Category id or handle (sub-categories included).
    pub category: Option<String>,
}

/// Refuses an over-long `q`; an empty one means no filter.
pub fn check_q(q: Option<String>) -> Result<Option<String>, Error> {
    match q {
        Some(q) if q.chars().count() > MAX_Q => Err(Error::field("q", format!("must be at most {MAX_Q} characters"))),
        Some(q) if q.trim().is_empty() => Ok(None),
        Some(q) => Ok(Some(q.trim().to_owned())),
        None => Ok(None),
    }
}

async fn to_store(s: &AppState, products: Vec<Product>) -> ApiResult<Vec<StoreProduct>> {
    let ids: Vec<String> = products.iter().flat_map(|p| p.variants.iter().map(|v| v.id.clone())).collect();
    let available = s.inventory.availability(&ids).await?;
    Ok(products
        .into_iter()
        .map(|p| StoreProduct {
            variants: p
                .variants
                .into_iter()
                .map(|v| StoreVariant {
                    available: available.get(&v.id).copied(),
                    id: v.id,
                    sku: v.sku,
                    title: v.title,
                    options: v.options,
                    prices: v.prices,
                    allow_backorder: v.allow_backorder,
                })
                .collect(),
            id: p.id,
            handle: p.handle,
            title: p.title,
            description: p.description,
            attributes: p.attributes,
            categories: p.categories,
            created_at: p.created_at,
            updated_at: p.updated_at,
        })
        .collect())
}

#[utoipa::path(get, path = "/store/products", tag = "storefront", params(StoreProductsQuery),
    responses((status = 200, body = Page<StoreProduct>), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn list_products(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<StoreProductsQuery>,
) -> ApiResult<Json<Page<StoreProduct>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let filter = ProductFilter { status: Some(ProductStatus::Published), q: check_q(q.q)?, category: q.category };
    let found = s.catalog.list_products(&filter, &page).await?;
    Ok(Json(Page { items: to_store(&s, found.items).await?, next_cursor: found.next_cursor }))
}

#[utoipa::path(get, path = "/store/products/{id_or_handle}", tag = "storefront", params(("id_or_handle" = String, Path)),
    responses((status = 200, body = StoreProduct), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_product(State(s): State<AppState>, Path(key): Path<String>) -> ApiResult<Json<StoreProduct>> {
    let product = s.catalog.product_by_key(&key, true).await?;
    let mut out = to_store(&s, vec![product]).await?;
    Ok(Json(out.pop().ok_or(Error::not_found("product"))?))
}

#[utoipa::path(get, path = "/store/categories", tag = "storefront",
    responses((status = 200, body = Items<Category>)))]
pub async fn list_categories(State(s): State<AppState>) -> ApiResult<Json<Items<Category>>> {
    Ok(Json(Items { items: s.catalog.category_tree().await? }))
}
