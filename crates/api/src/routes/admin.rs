//! `/admin/*`: catalog, stock, API keys and the audit log. The permission each route needs is in the table
//! of [`crate::access`], checked before the handler runs; every handler takes [`Staff`], which
//! only a route of that table can hand it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use backroom_auth::{ApiKey, Role};
use backroom_catalog::{
    Category, CategoryPatch, NewCategory, NewProduct, NewVariant, Product, ProductFilter, ProductPatch, ProductStatus,
    Variant, VariantPatch,
};
use backroom_inventory::{Adjustment, NewLocation, SetStock, StockLevel, StockLocation, VariantStock};
use backroom_kernel::{Page, PageRequest};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Staff};
use crate::routes::Routes;
use crate::views::Touched;

/// The admin catalog, stock and key routes. Each line states the permission the route needs
/// and whether its body is product data (not scanned for card numbers) or scanned.
pub fn routes(r: &mut Routes) {
    catalog(r);
    inventory(r);
    keys(r);
    audit(r);
}

/// Catalog: products, variants with their prices, categories.
fn catalog(r: &mut Routes) {
    use crate::access::Content::{ProductData, Scanned};
    use backroom_auth::Permission::{CatalogRead, CatalogWrite};
    use utoipa_axum::routes;
    r.admin(CatalogRead, Scanned, routes!(list_products));
    r.admin(CatalogWrite, ProductData, routes!(create_product));
    r.admin(CatalogRead, Scanned, routes!(get_product));
    r.admin(CatalogWrite, ProductData, routes!(update_product));
    r.admin(CatalogWrite, Scanned, routes!(delete_product));
    r.admin(CatalogWrite, ProductData, routes!(add_variant));
    r.admin(CatalogRead, Scanned, routes!(get_variant));
    r.admin(CatalogWrite, ProductData, routes!(update_variant));
    r.admin(CatalogWrite, Scanned, routes!(delete_variant));
    r.admin(CatalogRead, Scanned, routes!(list_categories));
    r.admin(CatalogWrite, ProductData, routes!(create_category));
    r.admin(CatalogRead, Scanned, routes!(get_category));
    r.admin(CatalogWrite, ProductData, routes!(update_category));
    r.admin(CatalogWrite, Scanned, routes!(delete_category));
}

/// Inventory: stock levels per variant and location, locations, the adjustments ledger.
fn inventory(r: &mut Routes) {
    use crate::access::Content::{ProductData, Scanned};
    use backroom_auth::Permission::{InventoryRead, InventoryWrite};
    use utoipa_axum::routes;
    r.admin(InventoryWrite, ProductData, routes!(set_stock));
    r.admin(InventoryRead, Scanned, routes!(get_stock));
    r.admin(InventoryRead, Scanned, routes!(stock_adjustments));
    r.admin(InventoryRead, Scanned, routes!(list_locations));
    r.admin(InventoryWrite, ProductData, routes!(create_location));
}

/// API keys (owners, and admins for every role but `owner`).
fn keys(r: &mut Routes) {
    use crate::access::Content::Scanned;
    use backroom_auth::Permission::KeysManage;
    use utoipa_axum::routes;
    r.admin(KeysManage, Scanned, routes!(list_keys));
    r.admin(KeysManage, Scanned, routes!(create_key));
    r.admin(KeysManage, Scanned, routes!(revoke_key)).action("api_key.revoke");
}

/// The audit log of staff writes.
fn audit(r: &mut Routes) {
    use crate::access::Content::Scanned;
    use backroom_auth::Permission::AuditRead;
    use utoipa_axum::routes;
    r.admin(AuditRead, Scanned, routes!(audit_log));
}

/// `limit` and `cursor` of a list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Filters of `GET /admin/products`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminProductsQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub status: Option<ProductStatus>,
    /// Case-insensitive part of the title (at most 256 characters).
    #[param(max_length = 256)]
    pub q: Option<String>,
    /// Category id or handle (sub-categories included).
    pub category: Option<String>,
}

/// List products
///
/// Every product whatever its status, newest first, a page at a time: pass `next_cursor` as
/// `cursor` to read the next page. Narrow the list by `status`, by part of the title (`q`) or by
/// `category` (its sub-categories included).
#[utoipa::path(get, path = "/admin/products", tag = "catalog", params(AdminProductsQuery),
    responses((status = 200, description = "A page of products", body = Page<Product>)),
    security(("api_key" = [])))]
pub async fn list_products(
    State(s): State<AppState>,
    _staff: Staff,
    ApiQuery(q): ApiQuery<AdminProductsQuery>,
) -> ApiResult<Json<Page<Product>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let filter = ProductFilter { status: q.status, q: crate::routes::store::check_q(q.q)?, category: q.category };
    Ok(Json(s.catalog.list_products(&filter, &page).await?))
}

/// Create a product
///
/// Creates a product, and with it any variants (one SKU each, with option values and prices), in
/// one request. The `handle` is made from the title when left out; the status is `draft` unless
/// given, and only `published` products are shown in the storefront. Set each variant's stock
/// next (`PUT /admin/variants/{variant_id}/stock`): until then its stock is not tracked and it
/// sells without limit.
#[utoipa::path(post, path = "/admin/products", tag = "catalog", request_body(content = NewProduct, description = "The product, with its variants and their prices", example = json!(crate::openapi::examples::new_product())),
    responses((status = 201, description = "Created: the product with its variants", body = Product, links(
            ("get_product" = (operation_id = "get_product", parameters(("id" = "$response.body#/id")))),
            ("update_product" = (operation_id = "update_product", parameters(("id" = "$response.body#/id")))),
            ("add_variant" = (operation_id = "add_variant", parameters(("id" = "$response.body#/id")))),
            ("delete_product" = (operation_id = "delete_product", parameters(("id" = "$response.body#/id")))),
            ("store_get_product" = (operation_id = "store_get_product", parameters(("id_or_handle" = "$response.body#/handle")))),
            ("get_variant" = (operation_id = "get_variant", parameters(("variant_id" = "$response.body#/variants/0/id")))),
            ("update_variant" = (operation_id = "update_variant", parameters(("variant_id" = "$response.body#/variants/0/id")))),
            ("set_stock" = (operation_id = "set_stock", parameters(("variant_id" = "$response.body#/variants/0/id")))),
            ("get_stock" = (operation_id = "get_stock", parameters(("variant_id" = "$response.body#/variants/0/id")))),
            ("stock_adjustments" = (operation_id = "stock_adjustments", parameters(("variant_id" = "$response.body#/variants/0/id")))),
            ("delete_variant" = (operation_id = "delete_variant", parameters(("variant_id" = "$response.body#/variants/0/id"))))), example = json!(crate::openapi::examples::product())), (status = 409, description = "`conflict`: the handle or a SKU is taken", body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_product(
    State(s): State<AppState>,
    _staff: Staff,
    ApiJson(body): ApiJson<NewProduct>,
) -> ApiResult<(StatusCode, Extension<Touched>, Json<Product>)> {
    let product = s.catalog.create_product(&body).await?;
    Ok((StatusCode::CREATED, Extension(Touched::product(&product.id)), Json(product)))
}

/// Get a product
///
/// A product by id, whatever its status, with its variants, prices, categories and images.
#[utoipa::path(get, path = "/admin/products/{id}", tag = "catalog", params(("id" = String, Path)),
    responses((status = 200, description = "The product", body = Product, example = json!(crate::openapi::examples::product())), (status = 404, description = "`not_found`: no such product", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn get_product(State(s): State<AppState>, _staff: Staff, Path(id): Path<String>) -> ApiResult<Json<Product>> {
    Ok(Json(s.catalog.product(&id).await?))
}

/// Update a product
///
/// Changes the fields sent and keeps the others; a list or map sent (`attributes`,
/// `category_ids`, `images`) replaces the old one. `status: published` shows the product in the
/// storefront, `archived` hides it. Variants change through their own routes.
#[utoipa::path(patch, path = "/admin/products/{id}", tag = "catalog", params(("id" = String, Path)),
    request_body = ProductPatch,
    responses((status = 200, description = "The product as it is now", body = Product), (status = 404, description = "`not_found`: no such product, or no such category among those named", body = Problem, content_type = "application/problem+json"), (status = 409, description = "`conflict`: the handle is taken", body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn update_product(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ProductPatch>,
) -> ApiResult<(Extension<Touched>, Json<Product>)> {
    let product = s.catalog.update_product(&id, &body).await?;
    Ok((Extension(Touched::product(&product.id)), Json(product)))
}

/// Delete a product
///
/// Deletes the product with its variants and their stock levels. The stock ledger keeps its
/// history, and orders keep their lines.
#[utoipa::path(delete, path = "/admin/products/{id}", tag = "catalog", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, description = "`not_found`: no such product", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn delete_product(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Extension<Touched>)> {
    s.catalog.delete_product(&id).await?;
    Ok((StatusCode::NO_CONTENT, Extension(Touched::product(id))))
}

/// Add a variant
///
/// Adds a variant (one SKU, its option values and prices) to a product. SKUs are unique across
/// the store.
#[utoipa::path(post, path = "/admin/products/{id}/variants", tag = "catalog", params(("id" = String, Path)),
    request_body = NewVariant,
    responses((status = 201, description = "Created: the variant", body = Variant, links(
            ("get_variant" = (operation_id = "get_variant", parameters(("variant_id" = "$response.body#/id")))),
            ("update_variant" = (operation_id = "update_variant", parameters(("variant_id" = "$response.body#/id")))),
            ("set_stock" = (operation_id = "set_stock", parameters(("variant_id" = "$response.body#/id")))),
            ("get_stock" = (operation_id = "get_stock", parameters(("variant_id" = "$response.body#/id")))),
            ("stock_adjustments" = (operation_id = "stock_adjustments", parameters(("variant_id" = "$response.body#/id")))),
            ("delete_variant" = (operation_id = "delete_variant", parameters(("variant_id" = "$response.body#/id")))))), (status = 404, description = "`not_found`: no such product", body = Problem, content_type = "application/problem+json"), (status = 409, description = "`conflict`: the SKU is taken", body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn add_variant(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewVariant>,
) -> ApiResult<(StatusCode, Extension<Touched>, Json<Variant>)> {
    let variant = s.catalog.add_variant(&id, &body).await?;
    Ok((StatusCode::CREATED, Extension(Touched::product(&variant.product_id)), Json(variant)))
}

/// Get a variant
///
/// A variant by id, with its option values and prices.
#[utoipa::path(get, path = "/admin/variants/{variant_id}", tag = "catalog", params(("variant_id" = String, Path)),
    responses((status = 200, description = "The variant", body = Variant), (status = 404, description = "`not_found`: no such variant", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn get_variant(State(s): State<AppState>, _staff: Staff, Path(id): Path<String>) -> ApiResult<Json<Variant>> {
    Ok(Json(s.catalog.variant(&id).await?))
}

/// Update a variant
///
/// Changes the fields sent and keeps the others; `prices` replaces the whole price list (at most
/// one price per currency). A cart line keeps the price it was added at until checkout, which
/// then answers `409 price_changed`.
#[utoipa::path(patch, path = "/admin/variants/{variant_id}", tag = "catalog", params(("variant_id" = String, Path)),
    request_body = VariantPatch,
    responses((status = 200, description = "The variant as it is now", body = Variant), (status = 404, description = "`not_found`: no such variant", body = Problem, content_type = "application/problem+json"), (status = 409, description = "`conflict`: the SKU is taken", body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn update_variant(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<VariantPatch>,
) -> ApiResult<(Extension<Touched>, Json<Variant>)> {
    let variant = s.catalog.update_variant(&id, &body).await?;
    Ok((Extension(Touched::product(&variant.product_id)), Json(variant)))
}

/// Delete a variant
///
/// Deletes the variant and its stock levels; orders keep their lines.
#[utoipa::path(delete, path = "/admin/variants/{variant_id}", tag = "catalog", params(("variant_id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, description = "`not_found`: no such variant", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn delete_variant(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Extension<Touched>)> {
    let variant = s.catalog.variant(&id).await?;
    s.catalog.delete_variant(&id).await?;
    Ok((StatusCode::NO_CONTENT, Extension(Touched::product(variant.product_id))))
}

// ---- stock ----------------------------------------------------------------------------------

/// Set a variant's stock
///
/// Sets the counted quantity on hand at one location (the default location when `location_id`
/// is left out) and records the change in the adjustments ledger with its `reason`. `on_hand`
/// cannot go below the units already reserved by checkouts or allocated to orders, unless the
/// variant allows backorders. From the first stock set, the variant's stock is tracked.
#[utoipa::path(put, path = "/admin/variants/{variant_id}/stock", tag = "inventory", params(("variant_id" = String, Path)),
    request_body(content = SetStock, description = "The counted quantity", example = json!(crate::openapi::examples::set_stock())),
    responses((status = 200, description = "The variant's stock at that location now", body = StockLevel, example = json!(crate::openapi::examples::stock_level())), (status = 404, description = "`not_found`: no such variant or location", body = Problem, content_type = "application/problem+json"), (status = 409, description = "`stock_below_committed`: the count would be below the units reserved or allocated", body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn set_stock(
    State(s): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SetStock>,
) -> ApiResult<(Extension<Touched>, Json<StockLevel>)> {
    let variant = s.catalog.variant(&id).await?;
    let level = s.inventory.set_on_hand(&variant.id, &body, variant.allow_backorder, staff.actor.id()).await?;
    Ok((Extension(Touched::product(variant.product_id)), Json(level)))
}

/// Get a variant's stock
///
/// The variant's stock summed over all locations, with each location's level. `available` is
/// `on_hand - reserved - allocated`: what can still be sold.
#[utoipa::path(get, path = "/admin/variants/{variant_id}/stock", tag = "inventory", params(("variant_id" = String, Path)),
    responses((status = 200, description = "The variant's stock", body = VariantStock), (status = 404, description = "`not_found`: no such variant", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn get_stock(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<VariantStock>> {
    let variant = s.catalog.variant(&id).await?;
    Ok(Json(s.inventory.variant_stock(&variant.id).await?))
}

/// List a variant's stock adjustments
///
/// The ledger of every change to the variant's stock, newest first, a page at a time: counts set
/// by staff, units reserved and released by checkouts, units allocated to orders, each with its
/// reason and who made it.
#[utoipa::path(get, path = "/admin/variants/{variant_id}/stock/adjustments", tag = "inventory",
    params(("variant_id" = String, Path), PageQuery),
    responses((status = 200, description = "A page of adjustments", body = Page<Adjustment>), (status = 404, description = "`not_found`: no such variant", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn stock_adjustments(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Adjustment>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let variant = s.catalog.variant(&id).await?;
    Ok(Json(s.inventory.adjustments(&variant.id, &page).await?))
}

/// A list that is not paginated.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Items<T> {
    pub items: Vec<T>,
}

/// List stock locations
///
/// Every place that holds stock; stock set without a location goes to the default one.
#[utoipa::path(get, path = "/admin/stock-locations", tag = "inventory",
    responses((status = 200, description = "Every location", body = Items<StockLocation>)), security(("api_key" = [])))]
pub async fn list_locations(State(s): State<AppState>, _staff: Staff) -> ApiResult<Json<Items<StockLocation>>> {
    Ok(Json(Items { items: s.inventory.locations().await? }))
}

/// Create a stock location
///
/// Adds a place that holds stock, such as a second warehouse. Checkouts reserve from the
/// default location first, then from the others.
#[utoipa::path(post, path = "/admin/stock-locations", tag = "inventory", request_body = NewLocation,
    responses((status = 201, description = "Created: the location", body = StockLocation), (status = 409, description = "`conflict`: a location has that name", body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_location(
    State(s): State<AppState>,
    _staff: Staff,
    ApiJson(body): ApiJson<NewLocation>,
) -> ApiResult<(StatusCode, Extension<Touched>, Json<StockLocation>)> {
    Ok((StatusCode::CREATED, Extension(Touched::nothing()), Json(s.inventory.create_location(&body).await?)))
}

// ---- categories -----------------------------------------------------------------------------

/// List categories
///
/// The whole category tree: the roots in position order, each with its `children`.
#[utoipa::path(get, path = "/admin/categories", tag = "catalog",
    responses((status = 200, description = "The category tree", body = Items<Category>)), security(("api_key" = [])))]
pub async fn list_categories(State(s): State<AppState>, _staff: Staff) -> ApiResult<Json<Items<Category>>> {
    Ok(Json(Items { items: s.catalog.category_tree().await? }))
}

/// Create a category
///
/// Adds a category, at the root or under `parent_id`. The `handle` is made from the name when
/// left out.
#[utoipa::path(post, path = "/admin/categories", tag = "catalog", request_body = NewCategory,
    responses((status = 201, description = "Created: the category", body = Category, links(
            ("get_category" = (operation_id = "get_category", parameters(("id" = "$response.body#/id")))),
            ("update_category" = (operation_id = "update_category", parameters(("id" = "$response.body#/id")))),
            ("delete_category" = (operation_id = "delete_category", parameters(("id" = "$response.body#/id")))))), (status = 409, description = "`conflict`: the handle is taken", body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_category(
    State(s): State<AppState>,
    _staff: Staff,
    ApiJson(body): ApiJson<NewCategory>,
) -> ApiResult<(StatusCode, Extension<Touched>, Json<Category>)> {
    Ok((StatusCode::CREATED, Extension(Touched::nothing()), Json(s.catalog.create_category(&body).await?)))
}

/// Get a category
///
/// A category by id or handle (without its sub-categories).
#[utoipa::path(get, path = "/admin/categories/{id}", tag = "catalog", params(("id" = String, Path)),
    responses((status = 200, description = "The category", body = Category), (status = 404, description = "`not_found`: no such category", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn get_category(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<Category>> {
    Ok(Json(s.catalog.category(&id).await?))
}

/// Update a category
///
/// Renames, re-handles, re-orders or moves a category; `"move_to_root": true` makes it a root.
#[utoipa::path(patch, path = "/admin/categories/{id}", tag = "catalog", params(("id" = String, Path)),
    request_body = CategoryPatch,
    responses((status = 200, description = "The category as it is now", body = Category), (status = 404, description = "`not_found`: no such category or parent", body = Problem, content_type = "application/problem+json"), (status = 409, description = "`conflict`: the handle is taken", body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn update_category(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CategoryPatch>,
) -> ApiResult<(Extension<Touched>, Json<Category>)> {
    let category = s.catalog.update_category(&id, &body).await?;
    Ok((Extension(Touched::category(&category.id)), Json(category)))
}

/// Delete a category
///
/// Deletes a category without sub-categories; its products simply leave it.
#[utoipa::path(delete, path = "/admin/categories/{id}", tag = "catalog", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, description = "`not_found`: no such category", body = Problem, content_type = "application/problem+json"), (status = 409, description = "`category_has_children`: delete or move its sub-categories first", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn delete_category(
    State(s): State<AppState>,
    _staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Extension<Touched>)> {
    s.catalog.delete_category(&id).await?;
    Ok((StatusCode::NO_CONTENT, Extension(Touched::category(id))))
}

// ---- API keys -------------------------------------------------------------------------------

/// `POST /admin/api-keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// 1–100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    pub role: Role,
}

/// A new key with its secret, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret to send as `Authorization: Bearer …`. It is not stored and cannot be shown again.
    pub token: String,
}

/// List API keys
///
/// Every key, revoked ones too (with `revoked_at`), without their secrets.
#[utoipa::path(get, path = "/admin/api-keys", tag = "auth",
    responses((status = 200, description = "Every key", body = Items<ApiKey>)), security(("api_key" = [])))]
pub async fn list_keys(State(s): State<AppState>, _staff: Staff) -> ApiResult<Json<Items<ApiKey>>> {
    Ok(Json(Items { items: s.auth.list_keys().await? }))
}

/// Create an API key
///
/// Creates a key with a role and answers its secret `token` this once: only a hash of it is
/// stored. Send it as `Authorization: Bearer <token>`. Roles: `owner` may do everything, `admin`
/// everything but `owner` keys, `editor` the catalog, stock, prices, promotions, regions, taxes
/// and shipping options, `orders` orders after the sale (and reads customers), `support` reads
/// customers and orders and exports a customer's data, `viewer` reads everything but customers
/// and keys. No key creates a key of a role that may do something its own may not: `403
/// forbidden`.
#[utoipa::path(post, path = "/admin/api-keys", tag = "auth", request_body = NewApiKey,
    responses((status = 201, description = "Created: the key with its secret", body = CreatedApiKey, links(
            ("revoke_key" = (operation_id = "revoke_key", parameters(("id" = "$response.body#/id")))))), (status = 403, description = "`forbidden`: the role lacks the permission, or the new key's role may do something the caller's may not", body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn create_key(
    State(s): State<AppState>,
    staff: Staff,
    ApiJson(body): ApiJson<NewApiKey>,
) -> ApiResult<(StatusCode, Extension<Touched>, Json<CreatedApiKey>)> {
    let (key, token) = s.auth.create_key_as(&staff, &body.name, body.role).await?;
    Ok((StatusCode::CREATED, Extension(Touched::nothing()), Json(CreatedApiKey { key, token })))
}

/// Revoke an API key
///
/// The key stops working at once; it stays listed, with `revoked_at`.
#[utoipa::path(delete, path = "/admin/api-keys/{id}", tag = "auth", params(("id" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = 403, description = "`forbidden`: the role lacks the permission, or the key's role may do something the caller's may not", body = Problem, content_type = "application/problem+json"), (status = 404, description = "`not_found`: no such key", body = Problem, content_type = "application/problem+json")), security(("api_key" = [])))]
pub async fn revoke_key(
    State(s): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Extension<Touched>)> {
    s.auth.revoke_key(&staff, &id).await?;
    Ok((StatusCode::NO_CONTENT, Extension(Touched::nothing())))
}

// ---- the audit log --------------------------------------------------------------------------

/// Filters of `GET /admin/audit-log`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Only the entries of this actor: an API key's id (`bootstrap` for the bootstrap token).
    #[param(example = "key_01jd8z5c3k4m7q9r2t6v8w0x1y", max_length = 100)]
    pub actor: Option<String>,
    /// Only the entries about this resource (a product's, variant's, key's id, …).
    #[param(example = "prod_01jd8z5c3k4m7q9r2t6v8w0x1y", max_length = 100)]
    pub resource_id: Option<String>,
}

/// Read the audit log
///
/// Every successful staff write (any `POST`, `PUT`, `PATCH` or `DELETE` under `/admin` answered
/// `2xx`), newest first, a page at a time: who (`actor`), what (`action`, `<resource>.<verb>` such
/// as `product.update` or `api_key.revoke`), on what (`resource_id`: the id in the path, or the
/// id of what a `201` created), when, and from which client address. Request bodies are never
/// recorded. Entries cannot be changed or deleted, by any route or in the database.
#[utoipa::path(get, path = "/admin/audit-log", tag = "auth", params(AuditQuery),
    responses((status = 200, description = "A page of entries", body = Page<backroom_auth::audit::AuditEntry>)),
    security(("api_key" = [])))]
pub async fn audit_log(
    State(s): State<AppState>,
    _staff: Staff,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Page<backroom_auth::audit::AuditEntry>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let filter = backroom_auth::audit::AuditFilter::parse(q.actor, q.resource_id)?;
    Ok(Json(s.audit.list(&filter, &page).await?))
}
