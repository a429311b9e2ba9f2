//! The index's schema: one document per published product.

use std::collections::HashMap;

use backroom_kernel::Currency;
use tantivy::schema::{FAST, FacetOptions, Field, INDEXED, STORED, STRING, Schema, TEXT};

/// Upper bounds of the price ranges in major units (the last range is open).
pub const PRICE_BUCKETS: [i64; 6] = [25, 50, 100, 200, 500, 1000];

pub struct Fields {
    pub id: Field,
    pub title: Field,
    pub body: Field,
    pub facets: Field,
    pub in_stock: Field,
    pub created: Field,
    /// The lowest price of the product in each currency, one fast field per currency.
    pub prices: HashMap<Currency, Field>,
}

pub fn price_field_name(c: Currency) -> String {
    format!("price_{}", c.code())
}

pub fn build() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let id = b.add_text_field("id", STRING | STORED);
    let title = b.add_text_field("title", TEXT);
    let body = b.add_text_field("body", TEXT);
    let facets = b.add_facet_field("facets", FacetOptions::default());
    let in_stock = b.add_u64_field("in_stock", INDEXED | FAST);
    let created = b.add_i64_field("created", FAST);
    let mut prices = HashMap::new();
    for c in Currency::all() {
        prices.insert(c, b.add_u64_field(&price_field_name(c), INDEXED | FAST));
    }
    (b.build(), Fields { id, title, body, facets, in_stock, created, prices })
}

/// The minor-unit bounds of each price range of a currency.
pub fn bucket_bounds(c: Currency) -> Vec<(i64, Option<i64>)> {
    let unit = 10_i64.pow(c.exponent());
    let mut out = Vec::new();
    let mut lo = 0;
    for hi in PRICE_BUCKETS {
        out.push((lo, Some(hi * unit)));
        lo = hi * unit;
    }
    out.push((lo, None));
    out
}

/// The index of the range `amount` (minor units) falls in.
pub fn bucket_of(amount: i64, c: Currency) -> usize {
    bucket_bounds(c)
        .iter()
        .position(|(lo, hi)| amount >= *lo && hi.is_none_or(|h| amount < h))
        .unwrap_or(PRICE_BUCKETS.len())
}
