//! What the catalog gives out and what it takes in.

use std::collections::BTreeMap;

use backroom_kernel::Money;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::types::ProductStatus;

/// A product with its variants, attributes and categories.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Product {
    #[schema(example = "prod_01jdxk8m6q3v4t2c7e9f0g1h2j")]
    pub id: String,
    #[schema(example = "linen-shirt")]
    pub handle: String,
    #[schema(example = "Linen shirt")]
    pub title: String,
    pub description: String,
    pub status: ProductStatus,
    /// Free key/value attributes such as `brand` or `material`.
    pub attributes: BTreeMap<String, String>,
    pub categories: Vec<CategoryRef>,
    /// In display order; the first is the product's thumbnail.
    pub images: Vec<ProductImage>,
    pub variants: Vec<Variant>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An image of a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProductImage {
    #[schema(example = "https://images.example.com/linen-shirt-1.jpg")]
    pub url: String,
    /// Text for those who cannot see the image; may be empty.
    #[schema(example = "Linen shirt, front")]
    pub alt: String,
}

/// What a cart or order line shows of its variant's product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProduct {
    pub product_id: String,
    pub title: String,
    pub handle: String,
    /// The url of the product's first image.
    pub thumbnail: Option<String>,
    /// The variant's tax class (`standard` unless set).
    pub tax_class: String,
    /// The variant's weight in grams, for carrier quotes.
    pub weight_g: Option<i64>,
}

/// A sellable version of a product: one SKU, its option values and prices.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Variant {
    #[schema(example = "var_01jdxk8m6q3v4t2c7e9f0g1h2k")]
    pub id: String,
    pub product_id: String,
    #[schema(example = "LS-M-WHITE")]
    pub sku: String,
    #[schema(example = "M / White")]
    pub title: String,
    /// Option values by option name, such as `{"size": "M", "color": "White"}`.
    pub options: BTreeMap<String, String>,
    /// At most one price per currency, sorted by currency code.
    pub prices: Vec<Money>,
    /// Whether the variant may be sold beyond its stock.
    pub allow_backorder: bool,
    /// Its shipping weight in grams (carrier quotes weigh the cart by it); `null` when not
    /// set.
    #[schema(example = 300)]
    pub weight_g: Option<i64>,
    /// The tax class its region's rate is found by (`standard` unless set).
    #[schema(example = "standard")]
    pub tax_class: String,
    pub position: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What carts and checkout need to sell a variant: its current prices, whether it may be
/// sold beyond stock, and whether its product is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sellable {
    pub variant_id: String,
    pub product_id: String,
    pub sku: String,
    pub title: String,
    pub prices: Vec<Money>,
    pub allow_backorder: bool,
    pub published: bool,
    /// Grams, for carrier quotes; `None` when not set.
    pub weight_g: Option<i64>,
    /// The class the cart's region taxes it at.
    pub tax_class: String,
}

impl Sellable {
    /// The price in `currency`, if the variant has one.
    pub fn price_in(&self, currency: backroom_kernel::Currency) -> Option<Money> {
        self.prices.iter().copied().find(|m| m.currency() == currency)
    }
}

impl Variant {
    /// The price in `currency`, if the variant has one.
    pub fn price_in(&self, currency: backroom_kernel::Currency) -> Option<Money> {
        self.prices.iter().copied().find(|m| m.currency() == currency)
    }
}

/// A category as shown inside a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CategoryRef {
    pub id: String,
    pub handle: String,
    pub name: String,
}

/// A node of the category tree.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Category {
    pub id: String,
    pub parent_id: Option<String>,
    pub handle: String,
    pub name: String,
    pub position: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Sub-categories, in position order (empty when the category is read on its own).
    #[schema(no_recursion)]
    pub children: Vec<Category>,
}

/// A price as the API takes it: integer minor units and a currency code.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceInput {
    /// Integer minor units: 0–1,000,000,000,000.
    #[schema(example = 4900, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub amount: i64,
    /// ISO 4217 code.
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

/// An image as the API takes it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageInput {
    /// An absolute `https://` or `http://` URL, at most 2,048 characters, without whitespace.
    #[schema(example = "https://images.example.com/linen-shirt-1.jpg", max_length = 2048)]
    pub url: String,
    /// 0–500 characters; empty when left out.
    #[schema(example = "Linen shirt, front", max_length = 500)]
    pub alt: Option<String>,
}

/// `POST /admin/products`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    #[schema(min_length = 1, max_length = 255)]
    pub title: String,
    /// Derived from the title when left out.
    #[schema(pattern = "^[a-z0-9-]{1,100}$")]
    pub handle: Option<String>,
    pub description: Option<String>,
    /// `draft` when left out.
    pub status: Option<ProductStatus>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub category_ids: Option<Vec<String>>,
    /// At most 50, in display order (the first is the thumbnail).
    pub images: Option<Vec<ImageInput>>,
    pub variants: Option<Vec<NewVariant>>,
}

/// A variant to create, inside a new product or on its own.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVariant {
    #[schema(pattern = "^[A-Za-z0-9_./-]{1,64}$")]
    pub sku: String,
    /// Made from the option values (`M / White`) or the SKU when left out.
    #[schema(min_length = 1, max_length = 255)]
    pub title: Option<String>,
    pub options: Option<BTreeMap<String, String>>,
    pub prices: Option<Vec<PriceInput>>,
    pub allow_backorder: Option<bool>,
    /// Shipping weight in grams, 0–10,000,000.
    #[schema(example = 300, minimum = 0, maximum = 10_000_000)]
    pub weight_g: Option<i64>,
    /// 1–50 of `a-z 0-9 _ -`; `standard` when left out.
    #[schema(example = "standard", pattern = "^[a-z0-9_-]{1,50}$")]
    pub tax_class: Option<String>,
}

/// `PATCH /admin/products/{id}`: every field optional; lists and maps replace the old ones.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    #[schema(min_length = 1, max_length = 255)]
    pub title: Option<String>,
    #[schema(pattern = "^[a-z0-9-]{1,100}$")]
    pub handle: Option<String>,
    pub description: Option<String>,
    pub status: Option<ProductStatus>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub category_ids: Option<Vec<String>>,
    /// Replaces all the product's images (at most 50, in display order); `[]` removes them.
    pub images: Option<Vec<ImageInput>>,
}

/// `PATCH /admin/variants/{id}`: `prices` replaces the variant's whole price list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantPatch {
    #[schema(pattern = "^[A-Za-z0-9_./-]{1,64}$")]
    pub sku: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    pub title: Option<String>,
    pub options: Option<BTreeMap<String, String>>,
    pub prices: Option<Vec<PriceInput>>,
    pub allow_backorder: Option<bool>,
    /// Shipping weight in grams, 0–10,000,000; `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, nullable, minimum = 0, maximum = 10_000_000)]
    pub weight_g: Option<Option<i64>>,
    #[schema(pattern = "^[a-z0-9_-]{1,50}$")]
    pub tax_class: Option<String>,
}

/// Reads a field that may be absent (leave as is), `null` (clear) or a value (set).
fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /admin/categories`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCategory {
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
    /// Derived from the name when left out.
    #[schema(pattern = "^[a-z0-9-]{1,100}$")]
    pub handle: Option<String>,
    pub parent_id: Option<String>,
    pub position: Option<i64>,
}

/// `PATCH /admin/categories/{id}`. `parent_id: null` leaves the parent as it is; use
/// `"move_to_root": true` to make the category a root.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryPatch {
    #[schema(min_length = 1, max_length = 255)]
    pub name: Option<String>,
    #[schema(pattern = "^[a-z0-9-]{1,100}$")]
    pub handle: Option<String>,
    pub parent_id: Option<String>,
    pub move_to_root: Option<bool>,
    pub position: Option<i64>,
}

/// Which products a list shows.
#[derive(Debug, Clone, Default)]
pub struct ProductFilter {
    pub status: Option<ProductStatus>,
    /// Case-insensitive substring of the title (the search module refines this later).
    pub q: Option<String>,
    /// A category id or handle; products in its sub-categories count too.
    pub category: Option<String>,
}
