//! Turns request input into values that cannot be wrong, reporting every broken rule at once.

use std::collections::{BTreeMap, BTreeSet};

use backroom_kernel::error::Problems;
use backroom_kernel::{Currency, Money};

use crate::model::{ImageInput, NewProduct, NewVariant, PriceInput, ProductPatch, VariantPatch};
use crate::types::{
    Handle, ImageUrl, ProductStatus, STANDARD_TAX_CLASS, Sku, Title, alt_text, label, tax_class, weight_g,
};

pub const MAX_DESCRIPTION: usize = 20_000;
pub const MAX_VARIANTS: usize = 1_000;
pub const MAX_OPTIONS: usize = 10;
pub const MAX_ATTRIBUTES: usize = 100;
pub const MAX_CATEGORIES: usize = 50;
pub const MAX_IMAGES: usize = 50;

#[derive(Debug, Clone)]
pub struct ValidImage {
    pub url: ImageUrl,
    pub alt: String,
}

#[derive(Debug, Clone)]
pub struct ValidVariant {
    pub sku: Sku,
    pub title: Title,
    pub options: BTreeMap<String, String>,
    pub prices: Vec<Money>,
    pub allow_backorder: bool,
    pub weight_g: Option<i64>,
    pub tax_class: String,
}

#[derive(Debug, Clone)]
pub struct ValidProduct {
    pub title: Title,
    pub handle: Handle,
    pub description: String,
    pub status: ProductStatus,
    pub attributes: BTreeMap<String, String>,
    pub category_ids: Vec<String>,
    pub images: Vec<ValidImage>,
    pub variants: Vec<ValidVariant>,
}

#[derive(Debug, Clone, Default)]
pub struct ValidProductPatch {
    pub title: Option<Title>,
    pub handle: Option<Handle>,
    pub description: Option<String>,
    pub status: Option<ProductStatus>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub category_ids: Option<Vec<String>>,
    pub images: Option<Vec<ValidImage>>,
}

#[derive(Debug, Clone, Default)]
pub struct ValidVariantPatch {
    pub sku: Option<Sku>,
    pub title: Option<Title>,
    pub options: Option<BTreeMap<String, String>>,
    pub prices: Option<Vec<Money>>,
    pub allow_backorder: Option<bool>,
    /// `Some(None)` removes the weight.
    pub weight_g: Option<Option<i64>>,
    pub tax_class: Option<String>,
}

fn description(p: &mut Problems, d: Option<&str>) -> Option<String> {
    let d = d?;
    if d.chars().count() > MAX_DESCRIPTION {
        p.add("description", format!("must be at most {MAX_DESCRIPTION} characters"));
        return None;
    }
    Some(d.to_owned())
}

fn attributes(p: &mut Problems, a: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    if a.len() > MAX_ATTRIBUTES {
        p.add("attributes", format!("at most {MAX_ATTRIBUTES} attributes"));
    }
    let mut out = BTreeMap::new();
    for (k, v) in a {
        let key = p.check(format!("attributes.{k}"), label(k, 100));
        let value = p.check(format!("attributes.{k}"), label(v, 1_000));
        if let (Some(k), Some(v)) = (key, value) {
            out.insert(k.to_lowercase(), v);
        }
    }
    out
}

fn category_ids(p: &mut Problems, ids: &[String]) -> Vec<String> {
    if ids.len() > MAX_CATEGORIES {
        p.add("category_ids", format!("at most {MAX_CATEGORIES} categories"));
    }
    let unique: BTreeSet<&String> = ids.iter().collect();
    unique.into_iter().cloned().collect()
}

/// Images in display order: at most [`MAX_IMAGES`], each reported at `images[i].url` and
/// `images[i].alt`.
fn images(p: &mut Problems, input: &[ImageInput]) -> Vec<ValidImage> {
    if input.len() > MAX_IMAGES {
        p.add("images", format!("at most {MAX_IMAGES} images"));
    }
    let mut out = Vec::with_capacity(input.len());
    for (i, image) in input.iter().enumerate() {
        let url = p.check(format!("images[{i}].url"), ImageUrl::parse(&image.url));
        let alt = p.check(format!("images[{i}].alt"), alt_text(image.alt.as_deref().unwrap_or_default()));
        if let (Some(url), Some(alt)) = (url, alt) {
            out.push(ValidImage { url, alt });
        }
    }
    out
}

/// Prices: a known currency each, `0 ..= 10^12` minor units, one per currency.
pub fn prices(p: &mut Problems, path: &str, input: &[PriceInput]) -> Vec<Money> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, price) in input.iter().enumerate() {
        let Some(currency) = p.check(format!("{path}[{i}].currency"), Currency::parse(&price.currency)) else {
            continue;
        };
        if !seen.insert(currency) {
            p.add(format!("{path}[{i}].currency"), format!("{currency} is listed twice"));
            continue;
        }
        if let Some(m) = p.check(format!("{path}[{i}].amount"), Money::new(price.amount, currency)) {
            out.push(m);
        }
    }
    out.sort_by_key(|m| m.currency());
    out
}

fn options(p: &mut Problems, path: &str, o: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    if o.len() > MAX_OPTIONS {
        p.add(path, format!("at most {MAX_OPTIONS} options"));
    }
    let mut out = BTreeMap::new();
    for (k, v) in o {
        let name = p.check(format!("{path}.{k}"), label(k, 50));
        let value = p.check(format!("{path}.{k}"), label(v, 100));
        if let (Some(k), Some(v)) = (name, value) {
            out.insert(k.to_lowercase(), v);
        }
    }
    out
}

/// A new variant; `path` is where it sits in the request (`variants[3]` or empty).
pub fn variant(p: &mut Problems, path: &str, v: &NewVariant) -> Option<ValidVariant> {
    let at = |f: &str| if path.is_empty() { f.to_owned() } else { format!("{path}.{f}") };
    let sku = p.check(at("sku"), Sku::parse(&v.sku));
    let options = options(p, &at("options"), v.options.as_ref().unwrap_or(&BTreeMap::new()));
    let prices = prices(p, &at("prices"), v.prices.as_deref().unwrap_or_default());
    let weight = match v.weight_g {
        Some(g) => p.check(at("weight_g"), weight_g(g)).map(Some),
        None => Some(None),
    };
    let class = p.check(at("tax_class"), tax_class(v.tax_class.as_deref().unwrap_or(STANDARD_TAX_CLASS)));
    let title = match &v.title {
        Some(t) => p.check(at("title"), Title::parse(t)),
        None if !options.is_empty() => Title::parse(&options.values().cloned().collect::<Vec<_>>().join(" / ")).ok(),
        None => sku.as_ref().and_then(|s| Title::parse(s.as_str()).ok()),
    };
    Some(ValidVariant {
        sku: sku?,
        title: title?,
        options,
        prices,
        allow_backorder: v.allow_backorder.unwrap_or(false),
        weight_g: weight?,
        tax_class: class?,
    })
}

pub fn new_product(input: &NewProduct) -> backroom_kernel::Result<ValidProduct> {
    let mut p = Problems::new();
    let title = p.check("title", Title::parse(&input.title));
    let handle = match &input.handle {
        Some(h) => p.check("handle", Handle::parse(h)),
        None => match Handle::from_title(&input.title) {
            Some(h) => Some(h),
            None => {
                p.add("handle", "cannot be derived from the title; give one");
                None
            }
        },
    };
    let description = description(&mut p, input.description.as_deref()).unwrap_or_default();
    let attributes = attributes(&mut p, input.attributes.as_ref().unwrap_or(&BTreeMap::new()));
    let category_ids = category_ids(&mut p, input.category_ids.as_deref().unwrap_or_default());
    let images = images(&mut p, input.images.as_deref().unwrap_or_default());
    let raw_variants = input.variants.as_deref().unwrap_or_default();
    if raw_variants.len() > MAX_VARIANTS {
        p.add("variants", format!("at most {MAX_VARIANTS} variants per request"));
    }
    let variants: Vec<ValidVariant> =
        raw_variants.iter().enumerate().filter_map(|(i, v)| variant(&mut p, &format!("variants[{i}]"), v)).collect();
    p.finish()?;
    Ok(ValidProduct {
        title: title.expect("checked"),
        handle: handle.expect("checked"),
        description,
        status: input.status.unwrap_or_default(),
        attributes,
        category_ids,
        images,
        variants,
    })
}

pub fn product_patch(input: &ProductPatch) -> backroom_kernel::Result<ValidProductPatch> {
    let mut p = Problems::new();
    let out = ValidProductPatch {
        title: input.title.as_deref().and_then(|t| p.check("title", Title::parse(t))),
        handle: input.handle.as_deref().and_then(|h| p.check("handle", Handle::parse(h))),
        description: description(&mut p, input.description.as_deref()),
        status: input.status,
        attributes: input.attributes.as_ref().map(|a| attributes(&mut p, a)),
        category_ids: input.category_ids.as_deref().map(|c| category_ids(&mut p, c)),
        images: input.images.as_deref().map(|i| images(&mut p, i)),
    };
    p.finish()?;
    Ok(out)
}

pub fn variant_patch(input: &VariantPatch) -> backroom_kernel::Result<ValidVariantPatch> {
    let mut p = Problems::new();
    let out = ValidVariantPatch {
        sku: input.sku.as_deref().and_then(|s| p.check("sku", Sku::parse(s))),
        title: input.title.as_deref().and_then(|t| p.check("title", Title::parse(t))),
        options: input.options.as_ref().map(|o| options(&mut p, "options", o)),
        prices: input.prices.as_deref().map(|pr| prices(&mut p, "prices", pr)),
        allow_backorder: input.allow_backorder,
        weight_g: match input.weight_g {
            Some(Some(g)) => p.check("weight_g", weight_g(g)).map(Some),
            other => other,
        },
        tax_class: input.tax_class.as_deref().and_then(|c| p.check("tax_class", tax_class(c))),
    };
    p.finish()?;
    Ok(out)
}
