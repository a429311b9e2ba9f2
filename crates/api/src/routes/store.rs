//! `/store/*`: the public storefront reads. Only published products; each variant shows its
//! prices and the units available to sell (`null` when its stock is not tracked).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use backroom_catalog::{Category, CategoryRef, Product, ProductFilter, ProductImage, ProductStatus};
use backroom_kernel::{Currency, Error, Money, PageRequest};
use backroom_search::{SearchParams, Sort};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::ApiQuery;
use crate::member_prices::Pricing;
use crate::routes::Routes;
use crate::routes::admin::Items;

/// The storefront catalog: published products and the category tree, for anyone.
pub fn routes(r: &mut Routes) {
    use utoipa_axum::routes;
    r.public(routes!(list_products));
    r.public(routes!(get_product));
    r.public(routes!(list_categories));
}

/// The longest `q` accepted.
pub const MAX_Q: usize = 256;

/// A product as shoppers see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoreProduct {
    pub id: String,
    pub handle: String,
    pub title: String,
    pub description: String,
    pub attributes: BTreeMap<String, String>,
    pub categories: Vec<CategoryRef>,
    /// In display order; the first is the product's thumbnail.
    pub images: Vec<ProductImage>,
    pub variants: Vec<StoreVariant>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A variant as shoppers see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoreVariant {
    pub id: String,
    pub sku: String,
    pub title: String,
    pub options: BTreeMap<String, String>,
    pub prices: Vec<StorePrice>,
    /// Units that can be bought now; `null` when the variant's stock is not tracked.
    pub available: Option<i64>,
    pub allow_backorder: bool,
    /// Shipping weight in grams; `null` when not set.
    pub weight_g: Option<i64>,
    /// The tax class its region's rate is found by.
    pub tax_class: String,
}

/// A variant's price as the shopper sees it. For a signed-in customer in a group with an
/// active price list, `amount` is the lowest of the base price and the list prices, and
/// `original_price` is the base price (only when it is higher); for everyone else `amount` is
/// the base price and `original_price` is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StorePrice {
    /// Integer amount in the currency's minor unit (cents for EUR, yen for JPY).
    #[schema(example = 4900)]
    pub amount: i64,
    pub currency: Currency,
    /// The variant's base price, when a price list of the customer's makes `amount` lower.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_price: Option<Money>,
}

impl From<Money> for StorePrice {
    fn from(m: Money) -> Self {
        StorePrice { amount: m.amount(), currency: m.currency(), original_price: None }
    }
}

/// Parameters of `GET /store/products`. Any other parameter filters by attribute or
/// option value: `color=white&size=M` (case-insensitive; `size=M,L` or a repeated `size`
/// means either; different names must all match).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StoreProductsQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Full text (at most 256 characters): typo tolerant for words of 5+ letters, the last
    /// word also matches as a prefix.
    #[param(max_length = 256)]
    pub q: Option<String>,
    /// Category id or handle (sub-categories included).
    pub category: Option<String>,
    /// `relevance` (default; newest first without `q`), `price_asc`, `price_desc`, `newest`.
    pub sort: Option<String>,
    /// ISO 4217 code for price filters, price sorting and price-range facets.
    #[param(pattern = "^[A-Z]{3}$")]
    pub currency: Option<String>,
    /// Lowest price in minor units of `currency`, inclusive.
    #[param(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_min: Option<i64>,
    /// Highest price in minor units of `currency`, inclusive.
    #[param(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_max: Option<i64>,
    /// Only products with at least one variant that can be bought now.
    pub in_stock: Option<bool>,
    /// Include facet counts (default true when searching).
    pub facets: Option<bool>,
}

/// A page of products; `total` and `facets` when the search index answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductList {
    pub items: Vec<StoreProduct>,
    pub next_cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facets: Option<backroom_search::Facets>,
}

/// The deepest page a search serves; past it, narrow the search.
const MAX_OFFSET: u32 = 10_000;

/// Parses the raw query pairs into search parameters; every mistake is reported.
fn parse_list_query(pairs: &[(String, String)]) -> Result<(SearchParams, PageRequest, bool, bool), Error> {
    let mut p = backroom_kernel::error::Problems::new();
    let mut params = SearchParams::default();
    let (mut limit, mut cursor, mut q) = (None, None, None);
    let mut wants_facets = None;
    let mut searching = false;
    let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let int = |p: &mut backroom_kernel::error::Problems, k: &str, v: &str| match v.parse::<i64>() {
        Ok(n) if (0..=Money::MAX_AMOUNT).contains(&n) => Some(n),
        _ => {
            p.add(k, format!("must be a whole number of minor units from 0 to {}", Money::MAX_AMOUNT));
            None
        }
    };
    for (k, v) in pairs {
        match k.as_str() {
            "limit" => limit = Some(v.parse::<i64>().unwrap_or(-1)),
            "cursor" => cursor = Some(v.clone()),
            "q" => q = Some(v.clone()),
            "category" => {
                params.category = Some(v.clone());
                searching = true;
            }
            "sort" => match Sort::parse(v) {
                Some(s) => {
                    params.sort = s;
                    searching |= s != Sort::Relevance;
                }
                None => p.add("sort", "must be relevance, price_asc, price_desc or newest"),
            },
            "currency" => params.currency = p.check("currency", Currency::parse(v)),
            "price_min" => {
                params.price_min = int(&mut p, "price_min", v);
                searching = true;
            }
            "price_max" => {
                params.price_max = int(&mut p, "price_max", v);
                searching = true;
            }
            "in_stock" => match v.as_str() {
                "true" => {
                    params.in_stock = true;
                    searching = true;
                }
                "false" => {}
                _ => p.add("in_stock", "must be true or false"),
            },
            "facets" => match v.as_str() {
                "true" => wants_facets = Some(true),
                "false" => wants_facets = Some(false),
                _ => p.add("facets", "must be true or false"),
            },
            name => {
                let valid = |s: &str| !s.is_empty() && s.chars().count() <= 100 && !s.chars().any(char::is_control);
                if !valid(name) {
                    p.add(name.chars().take(100).collect::<String>(), "is not a parameter or an attribute name");
                    continue;
                }
                for value in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                    if !valid(value) {
                        p.add(name, "values must be 1–100 characters");
                    }
                    filters.entry(name.to_lowercase()).or_default().push(value.to_owned());
                }
                searching = true;
            }
        }
    }
    if filters.len() > 20 {
        p.add("query", "at most 20 attribute filters");
    }
    params.filters = filters.into_iter().collect();
    let q = match check_q(q) {
        Ok(q) => q,
        Err(Error::Validation(errs)) => {
            for e in errs {
                p.add(e.field, e.message);
            }
            None
        }
        Err(e) => return Err(e),
    };
    searching |= q.is_some();
    params.q = q;
    if let (Some(lo), Some(hi)) = (params.price_min, params.price_max)
        && lo > hi
    {
        p.add("price_min", "must not be above price_max");
    }
    let needs_currency = params.price_min.is_some()
        || params.price_max.is_some()
        || matches!(params.sort, Sort::PriceAsc | Sort::PriceDesc);
    if needs_currency && params.currency.is_none() && !pairs.iter().any(|(k, _)| k == "currency") {
        p.add("currency", "is required to filter or sort by price");
    }
    let page = match PageRequest::parse(limit, cursor.as_deref()) {
        Ok(page) => Some(page),
        Err(Error::Validation(errs)) => {
            for e in errs {
                p.add(e.field, e.message);
            }
            None
        }
        Err(e) => return Err(e),
    };
    p.finish()?;
    let page = page.expect("checked");
    let facets = wants_facets.unwrap_or(searching);
    Ok((params, page, searching || facets, facets))
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

pub(crate) async fn to_store(s: &AppState, products: Vec<Product>) -> ApiResult<Vec<StoreProduct>> {
    let ids: Vec<String> = products.iter().flat_map(|p| p.variants.iter().map(|v| v.id.clone())).collect();
    let available = s.inventory.availability(&ids).await?;
    Ok(products.into_iter().map(|p| crate::views::store_product(p, &available)).collect())
}

/// Published products by id, in order, as shoppers see them: from this process's storefront
/// views ([`crate::views`]), kept current from the outbox and marked stale at once by writes
/// through this process, so they show what the product page and the cart show (P4). Products
/// without a current view are read from the database.
async fn store_products(s: &AppState, ids: &[String]) -> ApiResult<Vec<StoreProduct>> {
    let found = s.views.products(&s.catalog, &s.inventory, ids).await?;
    Ok(found.iter().map(|p| (**p).clone()).collect())
}

/// List or search published products
///
/// Without search parameters: published products, newest first, a page at a time (pass
/// `next_cursor` as `cursor`), always fresh from the database. With `q` (full text, typo
/// tolerant), `category`, price bounds, `in_stock`, `sort` or attribute filters (any other
/// parameter: `color=white&size=M,L`), the search index answers, with `total` and facet counts.
/// Each variant shows its prices and the units `available` now (`null` when its stock is not
/// tracked). With a customer token (`Authorization: Bearer`), a customer in a group with an
/// active price list sees the list's price where it is lower, with `original_price` beside it
/// (see docs/pricing.md); price filters, price sorting and price facets use base prices.
#[utoipa::path(get, path = "/store/products", operation_id = "store_list_products", tag = "storefront", params(StoreProductsQuery),
    responses((status = 200, description = "A page of products", body = ProductList), (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`search_unavailable`: the search index is being built; plain listing still works", body = Problem, content_type = "application/problem+json")))]
pub async fn list_products(
    State(s): State<AppState>,
    pricing: Pricing,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> ApiResult<(HeaderMap, Json<ProductList>)> {
    let (mut params, page, searching, with_facets) = parse_list_query(&pairs)?;
    let index = s.search.as_ref().filter(|i| i.is_ready());
    let Some(index) = index.filter(|_| searching) else {
        // A plain listing (or no index yet): straight from the database, always fresh.
        let plain_enough = params.filters.is_empty()
            && params.price_min.is_none()
            && params.price_max.is_none()
            && !params.in_stock
            && matches!(params.sort, Sort::Relevance | Sort::Newest);
        if searching && !plain_enough {
            return Err(ApiError::custom(
                backroom_kernel::Code::SearchUnavailable,
                "the search index is being built; plain listing works meanwhile",
                serde_json::Value::Null,
            ));
        }
        let filter = ProductFilter { status: Some(ProductStatus::Published), q: params.q, category: params.category };
        let found = s.catalog.list_products(&filter, &page).await?;
        let mut items = to_store(&s, found.items).await?;
        pricing.apply_all(&mut items);
        return Ok((
            pricing.headers(),
            Json(ProductList { items, next_cursor: found.next_cursor, total: None, facets: None }),
        ));
    };
    let offset: u32 = match &page.after {
        None => 0,
        Some(c) => {
            c.0.strip_prefix('o')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Error::field("cursor", "is not a cursor of this search"))?
        }
    };
    if offset > MAX_OFFSET {
        return Err(Error::field("cursor", "pages this deep are not served; narrow the search").into());
    }
    params.limit = page.limit;
    params.offset = offset;
    let found = index.search_async(params).await?;
    let mut items = store_products(&s, &found.ids).await?;
    pricing.apply_all(&mut items);
    let next = offset + page.limit;
    let next_cursor = (u64::from(next) < found.total).then(|| backroom_kernel::Cursor::encode(&format!("o{next}")));
    let list =
        ProductList { items, next_cursor, total: Some(found.total), facets: with_facets.then_some(found.facets) };
    Ok((pricing.headers(), Json(list)))
}

/// Get a published product
///
/// A published product by id or handle, as shoppers see it: each variant with its prices and
/// the units `available` now (`null` when its stock is not tracked). Draft and archived products
/// are `404`. With a customer token, a customer in a group with an active price list sees the
/// list's price where it is lower, with `original_price` beside it (see docs/pricing.md).
#[utoipa::path(get, path = "/store/products/{id_or_handle}", operation_id = "store_get_product", tag = "storefront", params(("id_or_handle" = String, Path)),
    responses((status = 200, description = "The product", body = StoreProduct, example = json!(crate::openapi::examples::store_product())), (status = 404, description = "`not_found`: no published product has that id or handle", body = Problem, content_type = "application/problem+json")))]
pub async fn get_product(
    State(s): State<AppState>,
    pricing: Pricing,
    Path(key): Path<String>,
) -> ApiResult<(HeaderMap, Json<StoreProduct>)> {
    let product = s.catalog.product_by_key(&key, true).await?;
    let mut out = to_store(&s, vec![product]).await?;
    let mut product = out.pop().ok_or(Error::not_found("product"))?;
    pricing.apply(&mut product);
    Ok((pricing.headers(), Json(product)))
}

/// List categories
///
/// The category tree for navigation: the roots in position order, each with its `children`.
#[utoipa::path(get, path = "/store/categories", operation_id = "store_list_categories", tag = "storefront",
    responses((status = 200, description = "The category tree", body = Items<Category>)))]
pub async fn list_categories(State(s): State<AppState>) -> ApiResult<Json<Items<Category>>> {
    Ok(Json(Items { items: s.catalog.category_tree().await? }))
}
