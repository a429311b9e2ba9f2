//! The catalog's SQL. Written once for both dialects; a product page loads in a constant
//! number of queries whatever its number of variants (one per table, batched by id lists).

use std::collections::{BTreeMap, HashMap};

use backroom_db::{Conn, on_conn, push_in_list, storage};
use backroom_kernel::{Currency, Error, Money, Result};
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use crate::model::{Category, CategoryRef, LineProduct, Product, ProductFilter, ProductImage, Sellable, Variant};
use crate::types::ProductStatus;
use crate::validate::{ValidImage, ValidVariant};

/// Rows per multi-row INSERT: well under SQLite's and PostgreSQL's bind limits.
const INSERT_CHUNK: usize = 500;

#[derive(sqlx::FromRow)]
struct ProductRow {
    id: String,
    handle: String,
    title: String,
    description: String,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct VariantRow {
    id: String,
    product_id: String,
    sku: String,
    title: String,
    position: i64,
    allow_backorder: bool,
    weight_g: Option<i64>,
    tax_class: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct KeyValueRow {
    owner: String,
    key: String,
    value: String,
}

#[derive(sqlx::FromRow)]
struct PriceRow {
    variant_id: String,
    currency: String,
    amount: i64,
}

backroom_db::from_row!(PriceRow { variant_id, currency, amount });

#[derive(sqlx::FromRow)]
struct ProductCategoryRow {
    product_id: String,
    id: String,
    handle: String,
    name: String,
}

#[derive(sqlx::FromRow)]
struct ImageRow {
    product_id: String,
    url: String,
    alt: String,
}

#[derive(sqlx::FromRow)]
struct CategoryRow {
    id: String,
    parent_id: Option<String>,
    handle: String,
    name: String,
    position: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<CategoryRow> for Category {
    fn from(r: CategoryRow) -> Self {
        Category {
            id: r.id,
            parent_id: r.parent_id,
            handle: r.handle,
            name: r.name,
            position: r.position,
            created_at: r.created_at,
            updated_at: r.updated_at,
            children: Vec::new(),
        }
    }
}

fn price_from_row(r: &PriceRow) -> Result<Money> {
    let currency = Currency::parse(&r.currency).map_err(Error::internal)?;
    Money::new(r.amount, currency).map_err(Error::internal)
}

/// Loads whole products by id, in the order of `ids`; unknown ids are skipped.
/// Seven queries, whatever the number of products, variants and images.
pub async fn load_products(conn: &mut Conn<'_>, ids: &[String]) -> Result<Vec<Product>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (products, variants, options, prices, attributes, categories, images) = on_conn!(conn, c, DB => {
        let mut qb = QueryBuilder::<DB>::new(
            "SELECT id, handle, title, description, status, created_at, updated_at FROM products WHERE id IN ",
        );
        push_in_list!(qb, ids);
        let products: Vec<ProductRow> = qb.build_query_as().fetch_all(&mut *c).await.map_err(storage)?;

        let mut qb = QueryBuilder::<DB>::new(
            "SELECT id, product_id, sku, title, position, allow_backorder, weight_g, tax_class, created_at, \
             updated_at FROM variants WHERE product_id IN ",
        );
        push_in_list!(qb, ids);
        qb.push(" ORDER BY product_id, position, id");
        let variants: Vec<VariantRow> = qb.build_query_as().fetch_all(&mut *c).await.map_err(storage)?;

        let mut qb = QueryBuilder::<DB>::new(
            "SELECT o.variant_id AS owner, o.name AS key, o.value AS value FROM variant_options o \
             JOIN variants v ON v.id = o.variant_id WHERE v.product_id IN ",
        );
        push_in_list!(qb, ids);
        let options: Vec<KeyValueRow> = qb.build_query_as().fetch_all(&mut *c).await.map_err(storage)?;

        let mut qb = QueryBuilder::<DB>::new(
            "SELECT p.variant_id, p.currency, p.amount FROM variant_prices p \
             JOIN variants v ON v.id = p.variant_id WHERE v.product_id IN ",
        );
        push_in_list!(qb, ids);
        qb.push(" ORDER BY p.currency");
        let prices: Vec<PriceRow> = qb.build_query_as().fetch_all(&mut *c).await.map_err(storage)?;

        let mut qb = QueryBuilder::<DB>::new(
            "SELECT product_id AS owner, key, value FROM product_attributes WHERE product_id IN ",
        );
        push_in_list!(qb, ids);
        let attributes: Vec<KeyValueRow> = qb.build_query_as().fetch_all(&mut *c).await.map_err(storage)?;

        let mut qb = QueryBuilder::<DB>::new(
            "SELECT pc.product_id, c.id, c.handle, c.name FROM product_categories pc \
             JOIN categories c ON c.id = pc.category_id WHERE pc.product_id IN ",
        );
        push_in_list!(qb, ids);
        qb.push(" ORDER BY c.handle");
        let categories: Vec<ProductCategoryRow> = qb.build_query_as().fetch_all(&mut *c).await.map_err(storage)?;

        let mut qb = QueryBuilder::<DB>::new("SELECT product_id, url, alt FROM product_images WHERE product_id IN ");
        push_in_list!(qb, ids);
        qb.push(" ORDER BY product_id, position");
        let images: Vec<ImageRow> = qb.build_query_as().fetch_all(&mut *c).await.map_err(storage)?;
        (products, variants, options, prices, attributes, categories, images)
    });

    let mut options_by: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for o in options {
        options_by.entry(o.owner).or_default().insert(o.key, o.value);
    }
    let mut prices_by: HashMap<String, Vec<Money>> = HashMap::new();
    for p in &prices {
        prices_by.entry(p.variant_id.clone()).or_default().push(price_from_row(p)?);
    }
    let mut attributes_by: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for a in attributes {
        attributes_by.entry(a.owner).or_default().insert(a.key, a.value);
    }
    let mut categories_by: HashMap<String, Vec<CategoryRef>> = HashMap::new();
    for c in categories {
        categories_by.entry(c.product_id).or_default().push(CategoryRef { id: c.id, handle: c.handle, name: c.name });
    }
    let mut images_by: HashMap<String, Vec<ProductImage>> = HashMap::new();
    for i in images {
        images_by.entry(i.product_id).or_default().push(ProductImage { url: i.url, alt: i.alt });
    }
    let mut variants_by: HashMap<String, Vec<Variant>> = HashMap::new();
    for v in variants {
        variants_by.entry(v.product_id.clone()).or_default().push(Variant {
            options: options_by.remove(&v.id).unwrap_or_default(),
            prices: prices_by.remove(&v.id).unwrap_or_default(),
            id: v.id,
            product_id: v.product_id,
            sku: v.sku,
            title: v.title,
            allow_backorder: v.allow_backorder,
            weight_g: v.weight_g,
            tax_class: v.tax_class,
            position: v.position,
            created_at: v.created_at,
            updated_at: v.updated_at,
        });
    }
    let mut by_id: HashMap<String, Product> = HashMap::new();
    for p in products {
        let status = ProductStatus::parse(&p.status)
            .ok_or_else(|| Error::internal(format!("product {} has status {}", p.id, p.status)))?;
        by_id.insert(
            p.id.clone(),
            Product {
                attributes: attributes_by.remove(&p.id).unwrap_or_default(),
                categories: categories_by.remove(&p.id).unwrap_or_default(),
                images: images_by.remove(&p.id).unwrap_or_default(),
                variants: variants_by.remove(&p.id).unwrap_or_default(),
                id: p.id,
                handle: p.handle,
                title: p.title,
                description: p.description,
                status,
                created_at: p.created_at,
                updated_at: p.updated_at,
            },
        );
    }
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// The id of the product with this id or handle.
pub async fn find_product_id(conn: &mut Conn<'_>, key: &str) -> Result<Option<String>> {
    on_conn!(conn, c => sqlx::query_scalar("SELECT id FROM products WHERE id = $1 OR handle = $1")
        .bind(key)
        .fetch_optional(&mut *c)
        .await
        .map_err(storage))
}

/// Ids of one page of products, newest first, after the cursor `after` (an id).
pub async fn list_product_ids(
    conn: &mut Conn<'_>,
    filter: &ProductFilter,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<String>> {
    on_conn!(conn, c, DB => {
        let mut qb = QueryBuilder::<DB>::new("");
        if let Some(cat) = &filter.category {
            // The category and all its descendants.
            qb.push(
                "WITH RECURSIVE tree(id) AS (SELECT id FROM categories WHERE id = ",
            );
            qb.push_bind(cat.as_str());
            qb.push(" OR handle = ");
            qb.push_bind(cat.as_str());
            qb.push(" UNION SELECT c.id FROM categories c JOIN tree t ON c.parent_id = t.id) ");
        }
        qb.push("SELECT p.id FROM products p WHERE 1 = 1");
        if let Some(status) = filter.status {
            qb.push(" AND p.status = ");
            qb.push_bind(status.as_str());
        }
        if let Some(q) = &filter.q {
            let escaped = q.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            qb.push(" AND LOWER(p.title) LIKE ");
            qb.push_bind(format!("%{escaped}%"));
            qb.push(" ESCAPE '\\'");
        }
        if filter.category.is_some() {
            qb.push(
                " AND EXISTS (SELECT 1 FROM product_categories pc JOIN tree t ON t.id = pc.category_id \
                 WHERE pc.product_id = p.id)",
            );
        }
        if let Some(after) = after {
            qb.push(" AND p.id < ");
            qb.push_bind(after);
        }
        qb.push(" ORDER BY p.id DESC LIMIT ");
        qb.push_bind(i64::from(limit));
        qb.build_query_scalar().fetch_all(&mut *c).await.map_err(storage)
    })
}

pub async fn count_products(conn: &mut Conn<'_>, status: Option<ProductStatus>) -> Result<u64> {
    let n: i64 = on_conn!(conn, c => sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE ($1 = '' OR status = $1)")
        .bind(status.map_or("", ProductStatus::as_str))
        .fetch_one(&mut *c)
        .await
        .map_err(storage))?;
    Ok(n.max(0) as u64)
}

/// Which of `ids` name no category.
pub async fn missing_categories(conn: &mut Conn<'_>, ids: &[String]) -> Result<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<String> = on_conn!(conn, c, DB => {
        let mut qb = QueryBuilder::<DB>::new("SELECT id FROM categories WHERE id IN ");
        push_in_list!(qb, ids);
        qb.build_query_scalar().fetch_all(&mut *c).await.map_err(storage)?
    });
    Ok(ids.iter().filter(|id| !found.contains(id)).cloned().collect())
}

/// Which of `skus` are taken already, optionally not counting one variant.
pub async fn taken_skus(conn: &mut Conn<'_>, skus: &[String], except: Option<&str>) -> Result<Vec<String>> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    on_conn!(conn, c, DB => {
        let mut qb = QueryBuilder::<DB>::new("SELECT sku FROM variants WHERE sku IN ");
        push_in_list!(qb, skus);
        qb.push(" AND id <> ");
        qb.push_bind(except.unwrap_or(""));
        qb.push(" ORDER BY sku");
        qb.build_query_scalar().fetch_all(&mut *c).await.map_err(storage)
    })
}

pub struct ProductInsert<'a> {
    pub id: &'a str,
    pub handle: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub status: ProductStatus,
    pub now: DateTime<Utc>,
}

/// Inserts the product row; `Ok(false)` when the handle is taken.
pub async fn insert_product(conn: &mut Conn<'_>, p: &ProductInsert<'_>) -> Result<bool> {
    let r = on_conn!(conn, c => sqlx::query(
        "INSERT INTO products (id, handle, title, description, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (handle) DO NOTHING",
    )
    .bind(p.id)
    .bind(p.handle)
    .bind(p.title)
    .bind(p.description)
    .bind(p.status.as_str())
    .bind(p.now)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    .map_err(storage))?;
    Ok(r == 1)
}

/// Replaces a product's attributes.
pub async fn set_attributes(conn: &mut Conn<'_>, product_id: &str, attrs: &BTreeMap<String, String>) -> Result<()> {
    on_conn!(conn, c, DB => {
        sqlx::query("DELETE FROM product_attributes WHERE product_id = $1")
            .bind(product_id)
            .execute(&mut *c)
            .await
            .map_err(storage)?;
        let rows: Vec<_> = attrs.iter().collect();
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::<DB>::new("INSERT INTO product_attributes (product_id, key, value) ");
            qb.push_values(chunk, |mut b, (k, v)| {
                b.push_bind(product_id).push_bind(k.as_str()).push_bind(v.as_str());
            });
            qb.build().execute(&mut *c).await.map_err(storage)?;
        }
        Ok::<(), Error>(())
    })
}

/// Replaces a product's categories (ids already checked to exist).
pub async fn set_categories(conn: &mut Conn<'_>, product_id: &str, ids: &[String]) -> Result<()> {
    on_conn!(conn, c, DB => {
        sqlx::query("DELETE FROM product_categories WHERE product_id = $1")
            .bind(product_id)
            .execute(&mut *c)
            .await
            .map_err(storage)?;
        for chunk in ids.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::<DB>::new("INSERT INTO product_categories (product_id, category_id) ");
            qb.push_values(chunk, |mut b, id| {
                b.push_bind(product_id).push_bind(id.as_str());
            });
            qb.build().execute(&mut *c).await.map_err(storage)?;
        }
        Ok::<(), Error>(())
    })
}

/// Replaces a product's images; positions follow the list order from 0.
pub async fn set_images(conn: &mut Conn<'_>, product_id: &str, images: &[ValidImage]) -> Result<()> {
    on_conn!(conn, c, DB => {
        sqlx::query("DELETE FROM product_images WHERE product_id = $1")
            .bind(product_id)
            .execute(&mut *c)
            .await
            .map_err(storage)?;
        let rows: Vec<(usize, &ValidImage)> = images.iter().enumerate().collect();
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::<DB>::new("INSERT INTO product_images (product_id, position, url, alt) ");
            qb.push_values(chunk, |mut b, (i, image)| {
                b.push_bind(product_id).push_bind(*i as i64).push_bind(image.url.as_str()).push_bind(image.alt.as_str());
            });
            qb.build().execute(&mut *c).await.map_err(storage)?;
        }
        Ok::<(), Error>(())
    })
}

/// Inserts variants (SKUs already checked to be free; the unique index still guards races)
/// with their options and prices, positions from `first_position` on. Returns their ids.
pub async fn insert_variants(
    conn: &mut Conn<'_>,
    product_id: &str,
    variants: &[ValidVariant],
    first_position: i64,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    let ids: Vec<String> = variants.iter().map(|_| backroom_kernel::id::new("var")).collect();
    let rows: Vec<(usize, &ValidVariant)> = variants.iter().enumerate().collect();
    on_conn!(conn, c, DB => {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::<DB>::new(
                "INSERT INTO variants (id, product_id, sku, title, position, allow_backorder, weight_g, tax_class, \
                 created_at, updated_at) ",
            );
            qb.push_values(chunk, |mut b, (i, v)| {
                b.push_bind(ids[*i].as_str())
                    .push_bind(product_id)
                    .push_bind(v.sku.as_str())
                    .push_bind(v.title.as_str())
                    .push_bind(first_position + *i as i64)
                    .push_bind(v.allow_backorder)
                    .push_bind(v.weight_g)
                    .push_bind(v.tax_class.as_str())
                    .push_bind(now)
                    .push_bind(now);
            });
            qb.build().execute(&mut *c).await.map_err(|e| {
                backroom_db::unique_or(e, |_| "a variant with one of these SKUs already exists".into())
            })?;
        }
        Ok::<(), Error>(())
    })?;
    let options: Vec<(&str, &String, &String)> = variants
        .iter()
        .zip(&ids)
        .flat_map(|(v, id)| v.options.iter().map(move |(k, val)| (id.as_str(), k, val)))
        .collect();
    let prices: Vec<(&str, Money)> =
        variants.iter().zip(&ids).flat_map(|(v, id)| v.prices.iter().map(move |m| (id.as_str(), *m))).collect();
    insert_options(conn, &options).await?;
    insert_prices(conn, &prices).await?;
    Ok(ids)
}

async fn insert_options(conn: &mut Conn<'_>, rows: &[(&str, &String, &String)]) -> Result<()> {
    on_conn!(conn, c, DB => {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::<DB>::new("INSERT INTO variant_options (variant_id, name, value) ");
            qb.push_values(chunk, |mut b, (id, k, v)| {
                b.push_bind(*id).push_bind(k.as_str()).push_bind(v.as_str());
            });
            qb.build().execute(&mut *c).await.map_err(storage)?;
        }
        Ok::<(), Error>(())
    })
}

async fn insert_prices(conn: &mut Conn<'_>, rows: &[(&str, Money)]) -> Result<()> {
    on_conn!(conn, c, DB => {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::<DB>::new("INSERT INTO variant_prices (variant_id, currency, amount) ");
            qb.push_values(chunk, |mut b, (id, m)| {
                b.push_bind(*id).push_bind(m.currency().code()).push_bind(m.amount());
            });
            qb.build().execute(&mut *c).await.map_err(storage)?;
        }
        Ok::<(), Error>(())
    })
}

/// Replaces a variant's option values.
pub async fn set_options(conn: &mut Conn<'_>, variant_id: &str, options: &BTreeMap<String, String>) -> Result<()> {
    on_conn!(conn, c => sqlx::query("DELETE FROM variant_options WHERE variant_id = $1")
        .bind(variant_id)
        .execute(&mut *c)
        .await
        .map(|_| ())
        .map_err(storage))?;
    let rows: Vec<(&str, &String, &String)> = options.iter().map(|(k, v)| (variant_id, k, v)).collect();
    insert_options(conn, &rows).await
}

/// Replaces a variant's price list.
pub async fn set_prices(conn: &mut Conn<'_>, variant_id: &str, prices: &[Money]) -> Result<()> {
    on_conn!(conn, c => sqlx::query("DELETE FROM variant_prices WHERE variant_id = $1")
        .bind(variant_id)
        .execute(&mut *c)
        .await
        .map(|_| ())
        .map_err(storage))?;
    let rows: Vec<(&str, Money)> = prices.iter().map(|m| (variant_id, *m)).collect();
    insert_prices(conn, &rows).await
}

/// One column change of an UPDATE built by [`update_row`].
pub enum Set<'a> {
    Text(&'static str, &'a str),
    Bool(&'static str, bool),
    /// An integer column; `None` sets it `NULL`.
    Int(&'static str, Option<i64>),
}

/// `UPDATE table SET updated_at = now, <sets> WHERE id = id`; answers rows changed. A unique
/// violation becomes `409 conflict` with `clash` as the message.
pub async fn update_row(
    conn: &mut Conn<'_>,
    table: &'static str,
    id: &str,
    sets: &[Set<'_>],
    now: DateTime<Utc>,
    clash: &str,
) -> Result<u64> {
    on_conn!(conn, c, DB => {
        let mut qb = QueryBuilder::<DB>::new(format!("UPDATE {table} SET updated_at = "));
        qb.push_bind(now);
        for set in sets {
            match set {
                Set::Text(col, v) => {
                    qb.push(format!(", {col} = "));
                    qb.push_bind(*v);
                }
                Set::Bool(col, v) => {
                    qb.push(format!(", {col} = "));
                    qb.push_bind(*v);
                }
                Set::Int(col, v) => {
                    qb.push(format!(", {col} = "));
                    qb.push_bind(*v);
                }
            }
        }
        qb.push(" WHERE id = ");
        qb.push_bind(id);
        qb.build()
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| backroom_db::unique_or(e, |_| clash.to_owned()))
    })
}

/// Deletes a row by id; answers whether it existed.
pub async fn delete_row(conn: &mut Conn<'_>, table: &'static str, id: &str) -> Result<bool> {
    let sql = format!("DELETE FROM {table} WHERE id = $1");
    let n = on_conn!(conn, c => sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
        .map_err(storage))?;
    Ok(n == 1)
}

/// The product id and next free variant position of a product, or `None`.
pub async fn next_variant_position(conn: &mut Conn<'_>, product_id: &str) -> Result<Option<i64>> {
    let exists: Option<String> = on_conn!(conn, c => sqlx::query_scalar("SELECT id FROM products WHERE id = $1")
        .bind(product_id)
        .fetch_optional(&mut *c)
        .await
        .map_err(storage))?;
    if exists.is_none() {
        return Ok(None);
    }
    let max: Option<i64> = on_conn!(conn, c => sqlx::query_scalar("SELECT MAX(position) FROM variants WHERE product_id = $1")
        .bind(product_id)
        .fetch_one(&mut *c)
        .await
        .map_err(storage))?;
    Ok(Some(max.map_or(0, |m| m + 1)))
}

/// The product a variant belongs to.
pub async fn variant_product(conn: &mut Conn<'_>, variant_id: &str) -> Result<Option<String>> {
    on_conn!(conn, c => sqlx::query_scalar("SELECT product_id FROM variants WHERE id = $1")
        .bind(variant_id)
        .fetch_optional(&mut *c)
        .await
        .map_err(storage))
}

/// Variants by id with their product id, for callers outside the catalog (stock, carts).
pub async fn load_variants(conn: &mut Conn<'_>, ids: &[String]) -> Result<Vec<Variant>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let product_ids: Vec<String> = on_conn!(conn, c, DB => {
        let mut qb = QueryBuilder::<DB>::new("SELECT DISTINCT product_id FROM variants WHERE id IN ");
        push_in_list!(qb, ids);
        qb.build_query_scalar().fetch_all(&mut *c).await.map_err(storage)?
    });
    let products = load_products(conn, &product_ids).await?;
    let mut by_id: HashMap<String, Variant> =
        products.into_iter().flat_map(|p| p.variants).map(|v| (v.id.clone(), v)).collect();
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// A variant as a SKU names it: `(sku, variant id, product id, allow_backorder)`.
pub type SkuRow = (String, String, String, bool);

/// The variants with these SKUs, in chunks of 500 (stock sync sends up to 10,000 at once).
pub async fn variants_by_sku(conn: &mut Conn<'_>, skus: &[String]) -> Result<Vec<SkuRow>> {
    let mut out = Vec::with_capacity(skus.len());
    for chunk in skus.chunks(500) {
        let sql = format!(
            "SELECT sku, id, product_id, allow_backorder FROM variants WHERE sku IN {}",
            backroom_db::sql::in_list(chunk.len(), 1)
        );
        out.extend(
            backroom_db::sql::query(sql).bind_all(chunk.iter()).fetch_all::<SkuRow>(conn).await.map_err(storage)?,
        );
    }
    Ok(out)
}

struct SellableRow {
    id: String,
    product_id: String,
    sku: String,
    title: String,
    allow_backorder: bool,
    status: String,
    weight_g: Option<i64>,
    tax_class: String,
}

backroom_db::from_row!(SellableRow { id, product_id, sku, title, allow_backorder, status, weight_g, tax_class });

/// What selling variants needs, in two queries (carts and checkout run this on every call).
pub async fn sellable(conn: &mut Conn<'_>, ids: &[String]) -> Result<Vec<Sellable>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = backroom_db::sql::in_list(ids.len(), 1);
    let rows: Vec<SellableRow> = backroom_db::sql::query(format!(
        "SELECT v.id, v.product_id, v.sku, v.title, v.allow_backorder, p.status, v.weight_g, v.tax_class \
         FROM variants v JOIN products p ON p.id = v.product_id WHERE v.id IN {list}"
    ))
    .bind_all(ids.iter())
    .fetch_all(conn)
    .await
    .map_err(storage)?;
    let prices: Vec<PriceRow> = backroom_db::sql::query(format!(
        "SELECT variant_id, currency, amount FROM variant_prices WHERE variant_id IN {list}"
    ))
    .bind_all(ids.iter())
    .fetch_all(conn)
    .await
    .map_err(storage)?;
    let mut prices_by: HashMap<String, Vec<Money>> = HashMap::new();
    for p in &prices {
        prices_by.entry(p.variant_id.clone()).or_default().push(price_from_row(p)?);
    }
    let mut by_id: HashMap<String, Sellable> = HashMap::new();
    for r in rows {
        let status = ProductStatus::parse(&r.status)
            .ok_or_else(|| Error::internal(format!("product {} has status {}", r.product_id, r.status)))?;
        by_id.insert(
            r.id.clone(),
            Sellable {
                prices: prices_by.remove(&r.id).unwrap_or_default(),
                variant_id: r.id,
                product_id: r.product_id,
                sku: r.sku,
                title: r.title,
                allow_backorder: r.allow_backorder,
                published: status == ProductStatus::Published,
                weight_g: r.weight_g,
                tax_class: r.tax_class,
            },
        );
    }
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

struct LineProductRow {
    variant_id: String,
    product_id: String,
    title: String,
    handle: String,
    thumbnail: Option<String>,
    tax_class: String,
    weight_g: Option<i64>,
}

backroom_db::from_row!(LineProductRow { variant_id, product_id, title, handle, thumbnail, tax_class, weight_g });

/// The product of each variant (title, handle, first image), by variant id: one query.
/// Variants that no longer exist are left out.
pub async fn line_products(conn: &mut Conn<'_>, variant_ids: &[String]) -> Result<HashMap<String, LineProduct>> {
    if variant_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT v.id AS variant_id, p.id AS product_id, p.title, p.handle, \
         (SELECT i.url FROM product_images i WHERE i.product_id = p.id ORDER BY i.position LIMIT 1) AS thumbnail, \
         v.tax_class, v.weight_g \
         FROM variants v JOIN products p ON p.id = v.product_id WHERE v.id IN {}",
        backroom_db::sql::in_list(variant_ids.len(), 1)
    );
    let rows: Vec<LineProductRow> =
        backroom_db::sql::query(sql).bind_all(variant_ids.iter()).fetch_all(conn).await.map_err(storage)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.variant_id,
                LineProduct {
                    product_id: r.product_id,
                    title: r.title,
                    handle: r.handle,
                    thumbnail: r.thumbnail,
                    tax_class: r.tax_class,
                    weight_g: r.weight_g,
                },
            )
        })
        .collect())
}

// ---- categories -------------------------------------------------------------------------

const CATEGORY_COLUMNS: &str = "id, parent_id, handle, name, position, created_at, updated_at";

pub async fn all_categories(conn: &mut Conn<'_>) -> Result<Vec<Category>> {
    let sql = format!("SELECT {CATEGORY_COLUMNS} FROM categories ORDER BY position, name, id");
    let rows: Vec<CategoryRow> = on_conn!(conn, c => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *c)
        .await
        .map_err(storage))?;
    Ok(rows.into_iter().map(Category::from).collect())
}

pub async fn get_category(conn: &mut Conn<'_>, key: &str) -> Result<Option<Category>> {
    let sql = format!("SELECT {CATEGORY_COLUMNS} FROM categories WHERE id = $1 OR handle = $1");
    let row: Option<CategoryRow> = on_conn!(conn, c => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .fetch_optional(&mut *c)
        .await
        .map_err(storage))?;
    Ok(row.map(Category::from))
}

pub async fn insert_category(conn: &mut Conn<'_>, cat: &Category) -> Result<bool> {
    let n = on_conn!(conn, c => sqlx::query(
        "INSERT INTO categories (id, parent_id, handle, name, position, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (handle) DO NOTHING",
    )
    .bind(&cat.id)
    .bind(cat.parent_id.as_deref())
    .bind(&cat.handle)
    .bind(&cat.name)
    .bind(cat.position)
    .bind(cat.created_at)
    .execute(&mut *c)
    .await
    .map(|r| r.rows_affected())
    .map_err(storage))?;
    Ok(n == 1)
}

pub async fn update_category(conn: &mut Conn<'_>, cat: &Category) -> Result<()> {
    on_conn!(conn, c => sqlx::query(
        "UPDATE categories SET parent_id = $2, handle = $3, name = $4, position = $5, updated_at = $6 WHERE id = $1",
    )
    .bind(&cat.id)
    .bind(cat.parent_id.as_deref())
    .bind(&cat.handle)
    .bind(&cat.name)
    .bind(cat.position)
    .bind(cat.updated_at)
    .execute(&mut *c)
    .await
    .map(|_| ())
    .map_err(|e| backroom_db::unique_or(e, |_| format!("a category with handle {} already exists", cat.handle))))?;
    Ok(())
}

/// Deletes a category without children; `Ok(false)` if it has some.
pub async fn delete_category(conn: &mut Conn<'_>, id: &str) -> Result<bool> {
    let children: i64 = on_conn!(conn, c => sqlx::query_scalar("SELECT COUNT(*) FROM categories WHERE parent_id = $1")
        .bind(id)
        .fetch_one(&mut *c)
        .await
        .map_err(storage))?;
    if children > 0 {
        return Ok(false);
    }
    on_conn!(conn, c => sqlx::query("DELETE FROM categories WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|_| ())
        .map_err(storage))?;
    Ok(true)
}
