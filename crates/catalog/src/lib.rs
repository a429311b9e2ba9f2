//! The catalog (PIM): products, variants with option values and prices per currency,
//! free attributes, ordered images, and a category tree. Owns the tables `products`,
//! `product_attributes`, `product_categories`, `product_images`, `variants`,
//! `variant_options`, `variant_prices`, `categories`.
//!
//! Every write is one transaction: a refused request leaves nothing behind.

pub mod model;
mod repo;
pub mod types;
pub mod validate;

use backroom_db::outbox::{Action, CategoryChanged, Event, ProductChanged};
use backroom_db::{Conn, Db, Tx};
use backroom_kernel::{Code, Error, Page, PageRequest, Result, id, now};

pub use model::*;
pub use repo::SkuRow;
pub use types::{Handle, ProductStatus, Sku, Title};

use repo::Set;

/// The catalog's service API.
#[derive(Debug, Clone)]
pub struct Catalog {
    db: Db,
}

impl Catalog {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Creates a product with its variants in one transaction.
    #[tracing::instrument(skip_all, fields(handle = ?input.handle))]
    pub async fn create_product(&self, input: &NewProduct) -> Result<Product> {
        let valid = validate::new_product(input)?;
        let mut tx = self.db.begin().await?;
        let id = insert_new(&mut tx, &valid).await?;
        let product = load_one(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(product)
    }

    /// Creates many products in one transaction (imports, benchmarks): all or none. Answers
    /// the new product ids in input order. Each is validated like [`Catalog::create_product`];
    /// the first refusal names the product's index in the batch.
    #[tracing::instrument(skip_all, fields(products = inputs.len()))]
    pub async fn import(&self, inputs: &[NewProduct]) -> Result<Vec<String>> {
        let mut valid = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            valid.push(validate::new_product(input).map_err(|e| {
                match e {
                    Error::Validation(errs) => Error::Validation(
                        errs.into_iter()
                            .map(|f| backroom_kernel::FieldError::new(format!("[{i}].{}", f.field), f.message))
                            .collect(),
                    ),
                    other => other,
                }
            })?);
        }
        let mut tx = self.db.begin().await?;
        let mut ids = Vec::with_capacity(valid.len());
        for v in &valid {
            ids.push(insert_new(&mut tx, v).await?);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Creates the product with `input`'s handle, or brings the existing one in line with
    /// `input`, in one transaction (CSV imports): its fields, attributes, categories and
    /// images (when `input` has any) are replaced; each variant is matched by SKU among the
    /// product's own and updated, or added. Variants the input leaves out are kept. Answers
    /// the product and whether it was created. A SKU of another product is `409 conflict`.
    #[tracing::instrument(skip_all, fields(handle = ?input.handle))]
    pub async fn upsert_product(&self, input: &NewProduct) -> Result<(Product, bool)> {
        let valid = validate::new_product(input)?;
        let mut tx = self.db.begin().await?;
        let Some(id) = repo::find_product_id(&mut tx.conn(), valid.handle.as_str()).await? else {
            let id = insert_new(&mut tx, &valid).await?;
            let product = load_one(&mut tx, &id).await?;
            tx.commit().await?;
            return Ok((product, true));
        };
        let existing = load_one(&mut tx, &id).await?;
        let ts = now();
        let sets = [
            Set::Text("title", valid.title.as_str()),
            Set::Text("description", &valid.description),
            Set::Text("status", valid.status.as_str()),
        ];
        repo::update_row(&mut tx.conn(), "products", &id, &sets, ts, "").await?;
        repo::set_attributes(&mut tx.conn(), &id, &valid.attributes).await?;
        check_categories(&mut tx, &valid.category_ids, "category_ids").await?;
        repo::set_categories(&mut tx.conn(), &id, &valid.category_ids).await?;
        // The same URLs without alt texts (a CSV carries none) keep the alt texts there are.
        let same_urls = valid.images.len() == existing.images.len()
            && valid.images.iter().zip(&existing.images).all(|(v, e)| v.alt.is_empty() && v.url.as_str() == e.url);
        if !valid.images.is_empty() && !same_urls {
            repo::set_images(&mut tx.conn(), &id, &valid.images).await?;
        }
        let mut new = Vec::new();
        for v in &valid.variants {
            match existing.variants.iter().find(|e| e.sku == v.sku.as_str()) {
                Some(e) => {
                    let sets = [
                        Set::Text("title", v.title.as_str()),
                        Set::Bool("allow_backorder", v.allow_backorder),
                        Set::Text("tax_class", v.tax_class.as_str()),
                        Set::Int("weight_g", v.weight_g),
                    ];
                    repo::update_row(&mut tx.conn(), "variants", &e.id, &sets, ts, "").await?;
                    repo::set_options(&mut tx.conn(), &e.id, &v.options).await?;
                    repo::set_prices(&mut tx.conn(), &e.id, &v.prices).await?;
                }
                None => new.push(v.clone()),
            }
        }
        if !new.is_empty() {
            check_skus_free(&mut tx, new.iter().map(|v| v.sku.as_str()), None).await?;
            let position =
                repo::next_variant_position(&mut tx.conn(), &id).await?.ok_or(Error::not_found("product"))?;
            repo::insert_variants(&mut tx.conn(), &id, &new, position, ts).await?;
        }
        changed(&mut tx, &id, Action::Updated).await?;
        let product = load_one(&mut tx, &id).await?;
        tx.commit().await?;
        Ok((product, false))
    }

    /// A product by id (any status).
    pub async fn product(&self, id: &str) -> Result<Product> {
        let mut r = self.db.read().await?;
        repo::load_products(&mut r.conn(), &[id.to_owned()]).await?.pop().ok_or(Error::not_found("product"))
    }

    /// Products by id (any status), in the order given; unknown ids are left out.
    pub async fn products(&self, ids: &[String]) -> Result<Vec<Product>> {
        let mut r = self.db.read().await?;
        repo::load_products(&mut r.conn(), ids).await
    }

    /// Ids of the products in a category or its sub-categories (any status).
    pub async fn product_ids_in_category(&self, category_id: &str) -> Result<Vec<String>> {
        let mut r = self.db.read().await?;
        let filter = ProductFilter { category: Some(category_id.to_owned()), ..Default::default() };
        repo::list_product_ids(&mut r.conn(), &filter, None, u32::MAX / 2).await
    }

    /// How many products there are (of one status).
    pub async fn count_products(&self, status: Option<ProductStatus>) -> Result<u64> {
        let mut r = self.db.read().await?;
        repo::count_products(&mut r.conn(), status).await
    }

    /// A product by id or handle; with `published_only`, others are "not found".
    pub async fn product_by_key(&self, key: &str, published_only: bool) -> Result<Product> {
        let mut r = self.db.read().await?;
        let id = repo::find_product_id(&mut r.conn(), key).await?.ok_or(Error::not_found("product"))?;
        let product = repo::load_products(&mut r.conn(), &[id]).await?.pop().ok_or(Error::not_found("product"))?;
        if published_only && product.status != ProductStatus::Published {
            return Err(Error::not_found("product"));
        }
        Ok(product)
    }

    /// One page of products, newest first.
    pub async fn list_products(&self, filter: &ProductFilter, page: &PageRequest) -> Result<Page<Product>> {
        let mut r = self.db.read().await?;
        let ids =
            repo::list_product_ids(&mut r.conn(), filter, page.after.as_ref().map(|c| c.0.as_str()), page.limit + 1)
                .await?;
        let products = repo::load_products(&mut r.conn(), &ids).await?;
        Ok(page.finish(products, |p| p.id.clone()))
    }

    /// Changes a product's fields; maps and lists given replace the old ones.
    #[tracing::instrument(skip(self, patch))]
    pub async fn update_product(&self, id: &str, patch: &ProductPatch) -> Result<Product> {
        let valid = validate::product_patch(patch)?;
        let mut tx = self.db.begin().await?;
        let mut sets = Vec::new();
        if let Some(t) = &valid.title {
            sets.push(Set::Text("title", t.as_str()));
        }
        if let Some(h) = &valid.handle {
            sets.push(Set::Text("handle", h.as_str()));
        }
        if let Some(d) = &valid.description {
            sets.push(Set::Text("description", d));
        }
        if let Some(s) = valid.status {
            sets.push(Set::Text("status", s.as_str()));
        }
        let clash = format!(
            "a product with handle `{}` already exists",
            valid.handle.as_ref().map(Handle::as_str).unwrap_or_default()
        );
        let n = repo::update_row(&mut tx.conn(), "products", id, &sets, now(), &clash).await?;
        if n == 0 {
            return Err(Error::not_found("product"));
        }
        if let Some(a) = &valid.attributes {
            repo::set_attributes(&mut tx.conn(), id, a).await?;
        }
        if let Some(c) = &valid.category_ids {
            check_categories(&mut tx, c, "category_ids").await?;
            repo::set_categories(&mut tx.conn(), id, c).await?;
        }
        if let Some(images) = &valid.images {
            repo::set_images(&mut tx.conn(), id, images).await?;
        }
        changed(&mut tx, id, Action::Updated).await?;
        let product = load_one(&mut tx, id).await?;
        tx.commit().await?;
        Ok(product)
    }

    /// Deletes a product with its variants (their stock rows go with them; the stock
    /// ledger keeps its history).
    #[tracing::instrument(skip(self))]
    pub async fn delete_product(&self, id: &str) -> Result<()> {
        let mut tx = self.db.begin().await?;
        if !repo::delete_row(&mut tx.conn(), "products", id).await? {
            return Err(Error::not_found("product"));
        }
        changed(&mut tx, id, Action::Deleted).await?;
        tx.commit().await
    }

    /// Adds a variant to a product.
    #[tracing::instrument(skip(self, input), fields(sku = %input.sku))]
    pub async fn add_variant(&self, product_id: &str, input: &NewVariant) -> Result<Variant> {
        let mut problems = backroom_kernel::error::Problems::new();
        let valid = validate::variant(&mut problems, "", input);
        problems.finish()?;
        let valid = valid.ok_or_else(|| Error::internal("variant validation gave nothing"))?;
        let mut tx = self.db.begin().await?;
        let position =
            repo::next_variant_position(&mut tx.conn(), product_id).await?.ok_or(Error::not_found("product"))?;
        check_skus_free(&mut tx, [valid.sku.as_str()], None).await?;
        let ids =
            repo::insert_variants(&mut tx.conn(), product_id, std::slice::from_ref(&valid), position, now()).await?;
        touch_product(&mut tx, product_id).await?;
        let variant = load_variant(&mut tx, &ids[0]).await?;
        tx.commit().await?;
        Ok(variant)
    }

    /// A variant by id.
    pub async fn variant(&self, id: &str) -> Result<Variant> {
        let mut r = self.db.read().await?;
        repo::load_variants(&mut r.conn(), &[id.to_owned()]).await?.pop().ok_or(Error::not_found("variant"))
    }

    /// Variants by id, in the order asked; unknown ids are left out.
    /// Variants by id as carts and checkout need them (two queries); unknown ids are skipped.
    pub async fn sellable(&self, ids: &[String]) -> Result<Vec<Sellable>> {
        let mut r = self.db.read_fast().await?;
        repo::sellable(&mut r.conn(), ids).await
    }

    /// The variants these SKUs name: `(sku, variant id, product id, allow_backorder)`;
    /// unknown SKUs are left out.
    pub async fn variants_by_sku(&self, skus: &[String]) -> Result<Vec<SkuRow>> {
        let mut r = self.db.read().await?;
        repo::variants_by_sku(&mut r.conn(), skus).await
    }

    pub async fn variants(&self, ids: &[String]) -> Result<Vec<Variant>> {
        let mut r = self.db.read().await?;
        repo::load_variants(&mut r.conn(), ids).await
    }

    /// Changes a variant; `prices` replaces its whole price list.
    #[tracing::instrument(skip(self, patch))]
    pub async fn update_variant(&self, id: &str, patch: &VariantPatch) -> Result<Variant> {
        let valid = validate::variant_patch(patch)?;
        let mut tx = self.db.begin().await?;
        let product_id = repo::variant_product(&mut tx.conn(), id).await?.ok_or(Error::not_found("variant"))?;
        let mut sets = Vec::new();
        if let Some(s) = &valid.sku {
            check_skus_free(&mut tx, [s.as_str()], Some(id)).await?;
            sets.push(Set::Text("sku", s.as_str()));
        }
        if let Some(t) = &valid.title {
            sets.push(Set::Text("title", t.as_str()));
        }
        if let Some(b) = valid.allow_backorder {
            sets.push(Set::Bool("allow_backorder", b));
        }
        if let Some(g) = valid.weight_g {
            sets.push(Set::Int("weight_g", g));
        }
        if let Some(c) = &valid.tax_class {
            sets.push(Set::Text("tax_class", c.as_str()));
        }
        let clash = "a variant with this SKU already exists";
        repo::update_row(&mut tx.conn(), "variants", id, &sets, now(), clash).await?;
        if let Some(o) = &valid.options {
            repo::set_options(&mut tx.conn(), id, o).await?;
        }
        if let Some(p) = &valid.prices {
            repo::set_prices(&mut tx.conn(), id, p).await?;
        }
        touch_product(&mut tx, &product_id).await?;
        let variant = load_variant(&mut tx, id).await?;
        tx.commit().await?;
        Ok(variant)
    }

    /// Deletes a variant.
    #[tracing::instrument(skip(self))]
    pub async fn delete_variant(&self, id: &str) -> Result<()> {
        let mut tx = self.db.begin().await?;
        let product_id = repo::variant_product(&mut tx.conn(), id).await?.ok_or(Error::not_found("variant"))?;
        repo::delete_row(&mut tx.conn(), "variants", id).await?;
        touch_product(&mut tx, &product_id).await?;
        tx.commit().await
    }

    // ---- categories ---------------------------------------------------------------------

    /// The whole category tree, roots first, children nested, in position order.
    pub async fn category_tree(&self) -> Result<Vec<Category>> {
        let mut r = self.db.read().await?;
        let all = repo::all_categories(&mut r.conn()).await?;
        Ok(build_tree(all))
    }

    /// One category by id or handle, with its sub-tree.
    pub async fn category(&self, key: &str) -> Result<Category> {
        let mut r = self.db.read().await?;
        let cat = repo::get_category(&mut r.conn(), key).await?.ok_or(Error::not_found("category"))?;
        let all = repo::all_categories(&mut r.conn()).await?;
        let id = cat.id.clone();
        Ok(find_in_tree(build_tree(all), &id).unwrap_or(cat))
    }

    #[tracing::instrument(skip_all, fields(name = %input.name))]
    pub async fn create_category(&self, input: &NewCategory) -> Result<Category> {
        let mut p = backroom_kernel::error::Problems::new();
        let name = p.check("name", Title::parse(&input.name));
        let handle = match &input.handle {
            Some(h) => p.check("handle", Handle::parse(h)),
            None => Handle::from_title(&input.name).or_else(|| {
                p.add("handle", "cannot be derived from the name; give one");
                None
            }),
        };
        p.finish()?;
        let (name, handle) = (name.expect("checked"), handle.expect("checked"));
        let mut tx = self.db.begin().await?;
        if let Some(parent) = &input.parent_id {
            check_categories(&mut tx, std::slice::from_ref(parent), "parent_id").await?;
        }
        let ts = now();
        let cat = Category {
            id: id::new("cat"),
            parent_id: input.parent_id.clone(),
            handle: handle.into_inner(),
            name: name.into_inner(),
            position: input.position.unwrap_or(0),
            created_at: ts,
            updated_at: ts,
            children: Vec::new(),
        };
        if !repo::insert_category(&mut tx.conn(), &cat).await? {
            return Err(Error::refused(
                Code::Conflict,
                format!("a category with handle `{}` already exists", cat.handle),
            ));
        }
        category_changed(&mut tx, &cat.id, Action::Created).await?;
        tx.commit().await?;
        Ok(cat)
    }

    #[tracing::instrument(skip(self, patch))]
    pub async fn update_category(&self, id: &str, patch: &CategoryPatch) -> Result<Category> {
        let mut p = backroom_kernel::error::Problems::new();
        let name = patch.name.as_deref().and_then(|n| p.check("name", Title::parse(n)));
        let handle = patch.handle.as_deref().and_then(|h| p.check("handle", Handle::parse(h)));
        if patch.parent_id.is_some() && patch.move_to_root == Some(true) {
            p.add("parent_id", "cannot be given together with move_to_root");
        }
        p.finish()?;
        let mut tx = self.db.begin().await?;
        let mut cat =
            repo::get_category(&mut tx.conn(), id).await?.filter(|c| c.id == id).ok_or(Error::not_found("category"))?;
        if let Some(parent) = &patch.parent_id {
            check_categories(&mut tx, std::slice::from_ref(parent), "parent_id").await?;
            // Refuse a cycle: the new parent must not be the category or one of its descendants.
            let all = repo::all_categories(&mut tx.conn()).await?;
            if parent == id || is_descendant(&all, parent, id) {
                return Err(Error::field("parent_id", "would make the category its own ancestor"));
            }
            cat.parent_id = Some(parent.clone());
        }
        if patch.move_to_root == Some(true) {
            cat.parent_id = None;
        }
        if let Some(n) = name {
            cat.name = n.into_inner();
        }
        if let Some(h) = handle {
            cat.handle = h.into_inner();
        }
        if let Some(pos) = patch.position {
            cat.position = pos;
        }
        cat.updated_at = now();
        repo::update_category(&mut tx.conn(), &cat).await?;
        category_changed(&mut tx, id, Action::Updated).await?;
        tx.commit().await?;
        Ok(cat)
    }

    /// Deletes a category that has no sub-categories; products simply leave it.
    #[tracing::instrument(skip(self))]
    pub async fn delete_category(&self, id: &str) -> Result<()> {
        let mut tx = self.db.begin().await?;
        repo::get_category(&mut tx.conn(), id).await?.filter(|c| c.id == id).ok_or(Error::not_found("category"))?;
        if !repo::delete_category(&mut tx.conn(), id).await? {
            return Err(Error::refused(Code::CategoryHasChildren, "move or delete its sub-categories first"));
        }
        category_changed(&mut tx, id, Action::Deleted).await?;
        tx.commit().await
    }
}

/// What cart and order lines show of their variants' products (title, handle, thumbnail),
/// by variant id, read on the caller's connection in one query; variants that no longer
/// exist are left out.
pub async fn line_products(
    conn: &mut Conn<'_>,
    variant_ids: &[String],
) -> Result<std::collections::HashMap<String, LineProduct>> {
    repo::line_products(conn, variant_ids).await
}

/// Inserts a checked new product with its variants; answers its id.
async fn insert_new(tx: &mut Tx, valid: &validate::ValidProduct) -> Result<String> {
    check_categories(tx, &valid.category_ids, "category_ids").await?;
    check_skus_free(tx, valid.variants.iter().map(|v| v.sku.as_str()), None).await?;
    let id = id::new("prod");
    let ts = now();
    let inserted = repo::insert_product(
        &mut tx.conn(),
        &repo::ProductInsert {
            id: &id,
            handle: valid.handle.as_str(),
            title: valid.title.as_str(),
            description: &valid.description,
            status: valid.status,
            now: ts,
        },
    )
    .await?;
    if !inserted {
        return Err(Error::refused(Code::Conflict, format!("a product with handle `{}` already exists", valid.handle)));
    }
    repo::set_attributes(&mut tx.conn(), &id, &valid.attributes).await?;
    repo::set_categories(&mut tx.conn(), &id, &valid.category_ids).await?;
    if !valid.images.is_empty() {
        repo::set_images(&mut tx.conn(), &id, &valid.images).await?;
    }
    repo::insert_variants(&mut tx.conn(), &id, &valid.variants, 0, ts).await?;
    changed(tx, &id, Action::Created).await?;
    Ok(id)
}

/// Tells the rest of the store (search, caches) that a product changed, in the same
/// transaction as the change (P5).
async fn changed(tx: &mut Tx, product_id: &str, action: Action) -> Result<()> {
    let event = Event::ProductChanged(ProductChanged { product_id: product_id.to_owned(), action });
    backroom_db::outbox::enqueue(&mut tx.conn(), &event).await?;
    Ok(())
}

async fn load_one(tx: &mut Tx, id: &str) -> Result<Product> {
    repo::load_products(&mut tx.conn(), &[id.to_owned()]).await?.pop().ok_or(Error::not_found("product"))
}

async fn load_variant(tx: &mut Tx, id: &str) -> Result<Variant> {
    repo::load_variants(&mut tx.conn(), &[id.to_owned()]).await?.pop().ok_or(Error::not_found("variant"))
}

/// Marks a product updated because one of its variants changed.
async fn touch_product(tx: &mut Tx, product_id: &str) -> Result<()> {
    repo::update_row(&mut tx.conn(), "products", product_id, &[], now(), "").await?;
    changed(tx, product_id, Action::Updated).await
}

/// A category's name, handle or place changed: its products (and those of its
/// sub-categories) show it in their category path.
async fn category_changed(tx: &mut Tx, category_id: &str, action: Action) -> Result<()> {
    let event = Event::CategoryChanged(CategoryChanged { category_id: category_id.to_owned(), action });
    backroom_db::outbox::enqueue(&mut tx.conn(), &event).await?;
    Ok(())
}

/// Refuses ids that name no category (`422`, one entry per unknown id).
async fn check_categories(tx: &mut Tx, ids: &[String], field: &str) -> Result<()> {
    let missing = repo::missing_categories(&mut tx.conn(), ids).await?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::validation(
        missing.iter().map(|m| backroom_kernel::FieldError::new(field, format!("no category has id `{m}`"))).collect(),
    ))
}

/// Refuses SKUs already taken (by another variant) or repeated in the request: `409 conflict`.
async fn check_skus_free<'a>(tx: &mut Tx, skus: impl IntoIterator<Item = &'a str>, except: Option<&str>) -> Result<()> {
    let skus: Vec<String> = skus.into_iter().map(str::to_owned).collect();
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = skus.iter().find(|s| !seen.insert(*s)) {
        return Err(Error::refused(Code::Conflict, format!("SKU `{dup}` appears twice in the request")));
    }
    let taken = repo::taken_skus(&mut tx.conn(), &skus, except).await?;
    if let Some(first) = taken.first() {
        return Err(Error::refused(Code::Conflict, format!("a variant with SKU `{first}` already exists")));
    }
    Ok(())
}

fn build_tree(all: Vec<Category>) -> Vec<Category> {
    use std::collections::HashMap;
    let mut children: HashMap<Option<String>, Vec<Category>> = HashMap::new();
    for c in all {
        children.entry(c.parent_id.clone()).or_default().push(c);
    }
    fn attach(node: &mut Category, children: &mut HashMap<Option<String>, Vec<Category>>) {
        let mut kids = children.remove(&Some(node.id.clone())).unwrap_or_default();
        for k in &mut kids {
            attach(k, children);
        }
        node.children = kids;
    }
    let mut roots = children.remove(&None).unwrap_or_default();
    for r in &mut roots {
        attach(r, &mut children);
    }
    roots
}

fn find_in_tree(nodes: Vec<Category>, id: &str) -> Option<Category> {
    for n in nodes {
        if n.id == id {
            return Some(n);
        }
        if let Some(found) = find_in_tree(n.children, id) {
            return Some(found);
        }
    }
    None
}

/// Whether `candidate` lies under `ancestor` in the tree.
fn is_descendant(all: &[Category], candidate: &str, ancestor: &str) -> bool {
    let mut cur = all.iter().find(|c| c.id == candidate).and_then(|c| c.parent_id.clone());
    let mut steps = 0;
    while let Some(p) = cur {
        if p == ancestor {
            return true;
        }
        steps += 1;
        if steps > all.len() {
            return false;
        }
        cur = all.iter().find(|c| c.id == p).and_then(|c| c.parent_id.clone());
    }
    false
}
