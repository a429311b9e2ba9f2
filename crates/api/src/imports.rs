//! CSV import and export of products, and the jobs table that tracks imports.
//!
//! One row per variant; the product's own columns are read from the first row of each handle
//! (later rows may repeat them or leave them empty). The columns are in docs/integrations.md.
//! An import groups the rows by handle and writes each product in one transaction
//! ([`backroom_catalog::Catalog::upsert_product`]), so a product is never half written; a row
//! with an empty or malformed handle, or a product the catalog refuses, is reported with its
//! row number and the other products are imported.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use backroom_catalog::{ImageInput, NewProduct, NewVariant, PriceInput, Product, ProductStatus};
use backroom_db::storage;
use backroom_inventory::SetStock;
use backroom_kernel::{Currency, Error, Money, Result, now};
use serde::Serialize;

use crate::Services;

/// The columns, in the order exported; an import needs `handle` first and takes the others
/// in any order (a missing column is read as empty).
pub const COLUMNS: [&str; 15] = [
    "handle",
    "title",
    "description",
    "status",
    "categories",
    "attributes",
    "images",
    "sku",
    "variant_title",
    "options",
    "prices",
    "allow_backorder",
    "weight_g",
    "tax_class",
    "stock",
];

/// A job's state as `GET /admin/jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Job {
    #[schema(example = "job_01jdxk8m6q3v4t2c7e9f0g1h2j")]
    pub id: String,
    /// `running`, `succeeded` (every row was read; refused rows are in `errors`) or `failed`
    /// (the file could not be read, or the server stopped while the job ran).
    #[schema(example = "succeeded")]
    pub status: String,
    /// Rows handled so far.
    pub processed: i64,
    /// Rows in the file (the header not counted).
    pub total: i64,
    pub errors: Vec<RowError>,
}

/// A refused row: its number in the file (the header is row 1) and why.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RowError {
    #[schema(example = 7)]
    pub row: u64,
    #[schema(example = "handle must be 1–100 of a-z, 0-9 and -")]
    pub message: String,
}

/// The most errors a job keeps (the rest are counted in the last one).
const MAX_ERRORS: usize = 1000;

/// Creates a `running` job row.
pub async fn create_job(s: &Services, kind: &str) -> Result<String> {
    let id = backroom_kernel::id::new("job");
    let ts = now();
    let mut tx = s.db.begin().await?;
    backroom_db::sql::query(
        "INSERT INTO jobs (id, kind, status, processed, total, errors, created_at, updated_at) \
         VALUES ($1, $2, 'running', 0, 0, '[]', $3, $3)",
    )
    .bind(&id)
    .bind(kind)
    .bind(ts)
    .execute(&mut tx.conn())
    .await
    .map_err(storage)?;
    tx.commit().await?;
    Ok(id)
}

async fn save_job(s: &Services, id: &str, status: &str, processed: i64, total: i64, errors: &[RowError]) -> Result<()> {
    let errors = serde_json::to_string(errors).map_err(Error::internal)?;
    let mut tx = s.db.begin().await?;
    backroom_db::sql::query(
        "UPDATE jobs SET status = $2, processed = $3, total = $4, errors = $5, updated_at = $6 WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(processed)
    .bind(total)
    .bind(errors)
    .bind(now())
    .execute(&mut tx.conn())
    .await
    .map_err(storage)?;
    tx.commit().await?;
    Ok(())
}

/// Marks a job `failed` with `message`.
pub async fn fail(s: &Services, id: &str, message: &str) -> Result<()> {
    let current = job(s, id).await?;
    let mut errors = current.errors;
    errors.push(RowError { row: 0, message: message.to_owned() });
    save_job(s, id, "failed", current.processed, current.total, &errors).await
}

/// A job by id.
pub async fn job(s: &Services, id: &str) -> Result<Job> {
    let mut r = s.db.read().await?;
    let row: Option<(String, String, i64, i64, String)> =
        backroom_db::sql::query("SELECT id, status, processed, total, errors FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut r.conn())
            .await
            .map_err(storage)?;
    let (id, status, processed, total, errors) = row.ok_or(Error::not_found("job"))?;
    let errors = serde_json::from_str(&errors).map_err(Error::internal)?;
    Ok(Job { id, status, processed, total, errors })
}

/// Marks the jobs left `running` by a process that stopped as `failed` (run at start).
pub async fn fail_interrupted(s: &Services) -> Result<u64> {
    let mut tx = s.db.begin().await?;
    let n = backroom_db::sql::query(
        "UPDATE jobs SET status = 'failed', errors = $1, updated_at = $2 WHERE status = 'running'",
    )
    .bind(r#"[{"row":0,"message":"the server stopped while the job ran; import the file again"}]"#)
    .bind(now())
    .execute(&mut tx.conn())
    .await
    .map_err(storage)?;
    tx.commit().await?;
    Ok(n)
}

/// Runs an import to its end, saving progress in the job row every product or so; `progress`
/// is told `(processed, total)` (the CLI's progress bar).
pub async fn run_import(s: &Services, job_id: &str, csv: &[u8], progress: &(dyn Fn(u64, u64) + Sync)) -> Result<Job> {
    let (groups, mut errors, total) = match read(csv) {
        Ok(parsed) => parsed,
        Err(message) => {
            let errors = vec![RowError { row: 1, message }];
            save_job(s, job_id, "failed", 0, 0, &errors).await?;
            return job(s, job_id).await;
        }
    };
    let mut processed: i64 = errors.len() as i64;
    let mut categories: HashMap<String, Option<String>> = HashMap::new();
    let mut last_save = std::time::Instant::now();
    for group in groups {
        let rows = group.rows.len() as i64;
        if let Err(message) = import_product(s, &group, &mut categories).await {
            let first = group.rows[0].0;
            if errors.len() < MAX_ERRORS {
                errors.push(RowError { row: first, message: format!("product `{}`: {message}", group.handle) });
            }
        }
        processed += rows;
        progress(processed as u64, total as u64);
        if last_save.elapsed() > std::time::Duration::from_millis(500) {
            save_job(s, job_id, "running", processed, total, &errors).await?;
            last_save = std::time::Instant::now();
        }
    }
    errors.sort_by_key(|e| e.row);
    save_job(s, job_id, "succeeded", processed, total, &errors).await?;
    job(s, job_id).await
}

/// The rows of one handle: `(row number, record)`.
struct Group {
    handle: String,
    rows: Vec<(u64, csv::StringRecord)>,
    columns: std::sync::Arc<HashMap<String, usize>>,
}

impl Group {
    fn get<'a>(&self, record: &'a csv::StringRecord, column: &str) -> &'a str {
        self.columns.get(column).and_then(|&i| record.get(i)).unwrap_or("")
    }
}

type Parsed = (Vec<Group>, Vec<RowError>, i64);

/// Reads the file: its rows grouped by handle, in the order handles first appear, and the
/// rows refused already (bad handle, unreadable row).
fn read(csv: &[u8]) -> std::result::Result<Parsed, String> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(csv);
    let headers = reader.headers().map_err(|e| format!("the header row cannot be read: {e}"))?.clone();
    if headers.get(0).map(|h| h.trim_start_matches('\u{feff}').trim()) != Some("handle") {
        return Err("the first column must be `handle`".into());
    }
    let mut columns = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim_start_matches('\u{feff}').trim();
        if !COLUMNS.contains(&h) {
            return Err(format!("unknown column `{h}`; the columns are {}", COLUMNS.join(", ")));
        }
        columns.insert(h.to_owned(), i);
    }
    let columns = std::sync::Arc::new(columns);
    let mut groups: Vec<Group> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    let mut errors = Vec::new();
    let mut total = 0;
    for (i, record) in reader.records().enumerate() {
        let row = i as u64 + 2;
        total += 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(RowError { row, message: format!("cannot be read: {e}") });
                continue;
            }
        };
        let handle = record.get(0).unwrap_or("").trim();
        let valid = !handle.is_empty()
            && handle.len() <= 100
            && handle.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            let message = if handle.is_empty() {
                "handle is empty".to_owned()
            } else {
                format!("handle `{handle}` must be 1–100 of a-z, 0-9 and -")
            };
            errors.push(RowError { row, message });
            continue;
        }
        match at.get(handle) {
            Some(&g) => groups[g].rows.push((row, record)),
            None => {
                at.insert(handle.to_owned(), groups.len());
                groups.push(Group { handle: handle.to_owned(), rows: vec![(row, record)], columns: columns.clone() });
            }
        }
    }
    Ok((groups, errors, total))
}

/// Writes one product (one transaction), then its stock levels.
async fn import_product(
    s: &Services,
    g: &Group,
    categories: &mut HashMap<String, Option<String>>,
) -> std::result::Result<(), String> {
    let (first_row, first) = &g.rows[0];
    let field = |c: &str| g.get(first, c);
    let at = |row: u64, e: String| format!("row {row}: {e}");
    let status = match field("status").trim() {
        "" => None,
        st => Some(match st {
            "draft" => ProductStatus::Draft,
            "published" => ProductStatus::Published,
            "archived" => ProductStatus::Archived,
            other => return Err(at(*first_row, format!("status `{other}` is not draft, published or archived"))),
        }),
    };
    let mut category_ids = Vec::new();
    for handle in field("categories").split('|').map(str::trim).filter(|h| !h.is_empty()) {
        if !categories.contains_key(handle) {
            let found = match s.catalog.category(handle).await {
                Ok(c) => Some(c.id),
                Err(Error::NotFound { .. }) => None,
                Err(e) => return Err(format!("{e}")),
            };
            categories.insert(handle.to_owned(), found);
        }
        match &categories[handle] {
            Some(id) => category_ids.push(id.clone()),
            None => return Err(at(*first_row, format!("no category has the handle `{handle}`"))),
        }
    }
    let json_map = |row: u64, c: &str, v: &str| -> std::result::Result<Option<BTreeMap<String, String>>, String> {
        if v.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(v).map(Some).map_err(|_| at(row, format!("{c} must be a JSON object of texts")))
    };
    let attributes = json_map(*first_row, "attributes", field("attributes"))?;
    let images = match field("images").trim() {
        "" => None,
        v => Some(v.split('|').map(|u| ImageInput { url: u.trim().to_owned(), alt: None }).collect::<Vec<_>>()),
    };
    let mut variants = Vec::new();
    let mut stock = Vec::new();
    for (row, r) in &g.rows {
        let get = |c: &str| g.get(r, c);
        let sku = get("sku").trim().to_owned();
        if sku.is_empty() {
            return Err(at(*row, "sku is empty".into()));
        }
        let mut prices = Vec::new();
        for p in get("prices").split('|').map(str::trim).filter(|p| !p.is_empty()) {
            let (code, amount) =
                p.split_once(' ').ok_or_else(|| at(*row, format!("price `{p}` is not like `EUR 12.50`")))?;
            let currency = Currency::parse(code.trim()).map_err(|e| at(*row, format!("price `{p}`: {e}")))?;
            let money =
                Money::parse_decimal(amount.trim(), currency).map_err(|e| at(*row, format!("price `{p}`: {e}")))?;
            prices.push(PriceInput { amount: money.amount(), currency: currency.code().to_owned() });
        }
        let allow_backorder = match get("allow_backorder").trim() {
            "" => None,
            "true" => Some(true),
            "false" => Some(false),
            other => return Err(at(*row, format!("allow_backorder `{other}` is not true or false"))),
        };
        let int = |c: &str| -> std::result::Result<Option<i64>, String> {
            match get(c).trim() {
                "" => Ok(None),
                v => v.parse().map(Some).map_err(|_| at(*row, format!("{c} `{v}` is not a whole number"))),
            }
        };
        if let Some(n) = int("stock")? {
            stock.push((sku.clone(), n, *row));
        }
        variants.push(NewVariant {
            sku,
            title: Some(get("variant_title").to_owned()).filter(|t| !t.is_empty()),
            options: json_map(*row, "options", get("options"))?,
            prices: Some(prices),
            allow_backorder,
            weight_g: int("weight_g")?,
            tax_class: Some(get("tax_class").trim().to_owned()).filter(|t| !t.is_empty()),
        });
    }
    let input = NewProduct {
        title: field("title").to_owned(),
        handle: Some(g.handle.clone()),
        description: Some(field("description").to_owned()),
        status,
        attributes,
        category_ids: Some(category_ids),
        images,
        variants: Some(variants),
    };
    let (product, _) = s.catalog.upsert_product(&input).await.map_err(describe)?;
    for (sku, on_hand, row) in stock {
        let Some(v) = product.variants.iter().find(|v| v.sku == sku) else { continue };
        let input = SetStock { on_hand, location_id: None, reason: Some("import".into()) };
        s.inventory.set_on_hand(&v.id, &input, v.allow_backorder, "import").await.map_err(|e| at(row, describe(e)))?;
    }
    Ok(())
}

/// An error as one line for a row's message.
fn describe(e: Error) -> String {
    match e {
        Error::Validation(errs) => {
            errs.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; ")
        }
        other => other.to_string(),
    }
}

/// The CSV rows of a page of products (the header is [`header`]).
pub async fn export_rows(s: &Services, products: &[Product]) -> Result<Bytes> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for p in products {
        let categories = p.categories.iter().map(|c| c.handle.as_str()).collect::<Vec<_>>().join("|");
        let attributes = if p.attributes.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&p.attributes).map_err(Error::internal)?
        };
        let images = p.images.iter().map(|i| i.url.as_str()).collect::<Vec<_>>().join("|");
        for v in &p.variants {
            let options = if v.options.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&v.options).map_err(Error::internal)?
            };
            let prices = v
                .prices
                .iter()
                .map(|m| format!("{} {}", m.currency().code(), m.to_decimal_string()))
                .collect::<Vec<_>>()
                .join("|");
            let stock = s.inventory.variant_stock(&v.id).await?;
            let on_hand = stock
                .locations
                .iter()
                .find(|l| l.location_id == backroom_inventory::DEFAULT_LOCATION)
                .map(|l| l.on_hand.to_string())
                .unwrap_or_default();
            w.write_record([
                p.handle.as_str(),
                &p.title,
                &p.description,
                p.status.as_str(),
                &categories,
                &attributes,
                &images,
                &v.sku,
                &v.title,
                &options,
                &prices,
                if v.allow_backorder { "true" } else { "false" },
                &v.weight_g.map(|g| g.to_string()).unwrap_or_default(),
                &v.tax_class,
                &on_hand,
            ])
            .map_err(Error::internal)?;
        }
    }
    Ok(Bytes::from(w.into_inner().map_err(Error::internal)?))
}

/// The header row.
pub fn header() -> Bytes {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS).expect("writing to memory");
    Bytes::from(w.into_inner().expect("writing to memory"))
}
