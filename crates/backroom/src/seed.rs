//! `backroom seed --demo`: a believable small store, loaded through the same service API
//! the HTTP layer uses (so it is validated like any admin write). Running it twice is a
//! no-op the second time.

use std::collections::BTreeMap;

use backroom_catalog::{Catalog, Handle, ImageInput, NewCategory, NewProduct, NewVariant, PriceInput, ProductStatus};
use backroom_db::Db;
use backroom_inventory::{Inventory, SetStock};

/// (parent, children) of the category tree, by name.
const CATEGORIES: &[(&str, &[&str])] = &[
    ("Clothing", &["Shirts", "T-shirts", "Trousers", "Jackets", "Knitwear"]),
    ("Shoes", &["Sneakers", "Boots"]),
    ("Accessories", &["Bags", "Hats", "Scarves"]),
    ("Home", &["Mugs", "Candles", "Blankets"]),
];

/// How a category's products vary.
#[derive(Clone, Copy)]
enum Kind {
    /// Sizes S–XL in several colours.
    Apparel,
    /// EU shoe sizes 39–45 in two colours.
    Shoes,
    /// Colours only.
    Colours,
    /// A single variant.
    Single,
}

/// (category, kind, [(title, brand, material, EUR cents)]).
type Line = (&'static str, &'static str, &'static str, i64);
const PRODUCTS: &[(&str, Kind, &[Line])] = &[
    (
        "Shirts",
        Kind::Apparel,
        &[
            ("Linen shirt", "Nordhavn", "linen", 4900),
            ("Oxford button-down", "Atelier Sol", "cotton", 5900),
            ("Flannel overshirt", "Ridgeway", "wool blend", 6900),
            ("Chambray work shirt", "Ridgeway", "cotton", 5400),
        ],
    ),
    (
        "T-shirts",
        Kind::Apparel,
        &[
            ("Organic crew tee", "Nordhavn", "organic cotton", 2500),
            ("Heavyweight pocket tee", "Ridgeway", "cotton", 3200),
            ("Merino travel tee", "Atelier Sol", "merino", 5500),
            ("Striped breton tee", "Maré", "cotton", 3900),
        ],
    ),
    (
        "Trousers",
        Kind::Apparel,
        &[
            ("Slim chinos", "Atelier Sol", "cotton twill", 6900),
            ("Relaxed linen trousers", "Maré", "linen", 7400),
            ("Selvedge jeans", "Ridgeway", "denim", 11900),
            ("Drawstring joggers", "Nordhavn", "cotton fleece", 4900),
        ],
    ),
    (
        "Jackets",
        Kind::Apparel,
        &[
            ("Waxed field jacket", "Ridgeway", "waxed cotton", 18900),
            ("Packable rain shell", "Nordhavn", "recycled nylon", 12900),
            ("Wool chore coat", "Atelier Sol", "wool", 21900),
            ("Quilted liner jacket", "Maré", "polyester", 9900),
        ],
    ),
    (
        "Knitwear",
        Kind::Apparel,
        &[
            ("Lambswool crewneck", "Nordhavn", "lambswool", 8900),
            ("Cable-knit cardigan", "Maré", "wool", 11900),
            ("Cotton roll-neck", "Atelier Sol", "cotton", 6900),
            ("Fisherman sweater", "Ridgeway", "wool", 12900),
        ],
    ),
    (
        "Sneakers",
        Kind::Shoes,
        &[
            ("Court leather sneaker", "Passo", "leather", 11900),
            ("Canvas low-top", "Passo", "canvas", 5900),
            ("Trail runner", "Ridgeway", "mesh", 12900),
        ],
    ),
    (
        "Boots",
        Kind::Shoes,
        &[
            ("Chelsea boot", "Passo", "suede", 17900),
            ("Lace-up hiking boot", "Ridgeway", "leather", 19900),
            ("Shearling-lined boot", "Nordhavn", "leather", 21900),
        ],
    ),
    (
        "Bags",
        Kind::Colours,
        &[
            ("Canvas tote", "Maré", "canvas", 3500),
            ("Leather weekender", "Passo", "leather", 24900),
            ("Roll-top backpack", "Nordhavn", "recycled nylon", 11900),
            ("Crossbody pouch", "Atelier Sol", "leather", 6900),
            ("Market basket", "Maré", "seagrass", 4500),
        ],
    ),
    (
        "Hats",
        Kind::Colours,
        &[
            ("Ribbed beanie", "Nordhavn", "merino", 2900),
            ("Six-panel cap", "Ridgeway", "cotton", 2500),
            ("Straw fedora", "Maré", "straw", 4900),
            ("Bucket hat", "Atelier Sol", "cotton", 3200),
        ],
    ),
    (
        "Scarves",
        Kind::Colours,
        &[
            ("Cashmere scarf", "Nordhavn", "cashmere", 12900),
            ("Linen summer scarf", "Maré", "linen", 3900),
            ("Chunky knit scarf", "Ridgeway", "wool", 5900),
        ],
    ),
    (
        "Mugs",
        Kind::Colours,
        &[
            ("Stoneware mug", "Casa Barro", "stoneware", 1800),
            ("Enamel camp mug", "Ridgeway", "enamel", 1500),
            ("Double-walled glass", "Casa Barro", "glass", 2200),
            ("Espresso cup pair", "Casa Barro", "porcelain", 2400),
        ],
    ),
    (
        "Candles",
        Kind::Single,
        &[
            ("Fig and cedar candle", "Casa Barro", "soy wax", 3200),
            ("Sea salt candle", "Maré", "soy wax", 2900),
            ("Smoked birch candle", "Nordhavn", "beeswax", 3800),
        ],
    ),
    (
        "Blankets",
        Kind::Colours,
        &[
            ("Wool throw", "Nordhavn", "wool", 9900),
            ("Waffle cotton blanket", "Maré", "cotton", 7900),
            ("Alpaca blanket", "Atelier Sol", "alpaca", 18900),
        ],
    ),
];

const COLOURS: &[&str] = &["White", "Navy", "Olive", "Charcoal", "Sand"];

/// What the seed did, printed by the command.
pub struct Report {
    pub products: usize,
    pub variants: usize,
    pub categories: usize,
    pub already_loaded: bool,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.already_loaded {
            write!(f, "demo data is already loaded; nothing to do")
        } else {
            write!(
                f,
                "demo store loaded: {} products, {} variants with stock and EUR/USD prices, {} categories\n\
                 regions: European Union (EUR, 21 % VAT included) and United States (USD, 8.875 % sales tax added), \
                 each with shipping options; promotion code WELCOME10 (10 % off, once per shopper)\n\
                 to take test payments in the demo, start it with the test provider enabled:\n  \
                 BACKROOM_PAYMENT_PROVIDERS=test backroom serve",
                self.products, self.variants, self.categories
            )
        }
    }
}

fn sku_part(s: &str) -> String {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.chars().take(3).collect::<String>().to_uppercase())
        .collect::<Vec<_>>()
        .join("")
}

fn variants_for(kind: Kind, title: &str, index: usize, eur: i64) -> Vec<NewVariant> {
    let base = format!("{}{:02}", sku_part(title).chars().take(6).collect::<String>(), index);
    let usd = (eur * 108 / 100 + 50) / 100 * 100; // a rounded USD shelf price
    let prices = || {
        Some(vec![
            PriceInput { amount: eur, currency: "EUR".into() },
            PriceInput { amount: usd - 1, currency: "USD".into() },
        ])
    };
    let colours: Vec<&str> = COLOURS
        .iter()
        .cycle()
        .skip(index % COLOURS.len())
        .take(match kind {
            Kind::Apparel => 3,
            Kind::Shoes => 2,
            Kind::Colours => 3,
            Kind::Single => 0,
        })
        .copied()
        .collect();
    let sizes: &[&str] = match kind {
        Kind::Apparel => &["S", "M", "L", "XL"],
        Kind::Shoes => &["39", "40", "41", "42", "43", "44", "45"],
        _ => &[],
    };
    let variant = |sku: String, options: BTreeMap<String, String>| NewVariant {
        sku,
        title: None,
        options: Some(options),
        prices: prices(),
        allow_backorder: Some(false),
        weight_g: None,
        tax_class: None,
    };
    match kind {
        Kind::Single => vec![NewVariant {
            sku: base,
            title: Some("Default".into()),
            options: None,
            prices: prices(),
            allow_backorder: Some(false),
            weight_g: None,
            tax_class: None,
        }],
        Kind::Colours => colours
            .iter()
            .map(|c| variant(format!("{base}-{}", sku_part(c)), BTreeMap::from([("color".into(), c.to_string())])))
            .collect(),
        Kind::Apparel | Kind::Shoes => colours
            .iter()
            .flat_map(|c| {
                let base = &base;
                sizes.iter().map(move |s| {
                    variant(
                        format!("{base}-{s}-{}", sku_part(c)),
                        BTreeMap::from([("size".into(), s.to_string()), ("color".into(), c.to_string())]),
                    )
                })
            })
            .collect(),
    }
}

/// One or two placeholder images (every other product has a back view), at stable addresses
/// made from the product's handle: `https://images.example.com/<handle>-1.jpg`.
fn images_for(title: &str, index: usize) -> Vec<ImageInput> {
    let handle = Handle::from_title(title).map_or_else(|| format!("product-{index}"), Handle::into_inner);
    let views: &[&str] = if index.is_multiple_of(2) { &["front"] } else { &["front", "back"] };
    views
        .iter()
        .enumerate()
        .map(|(i, view)| ImageInput {
            url: format!("https://images.example.com/{handle}-{}.jpg", i + 1),
            alt: Some(format!("{title}, {view}")),
        })
        .collect()
}

/// Loads the demo store unless it is there already.
pub async fn demo(db: &Db) -> anyhow::Result<Report> {
    let catalog = Catalog::new(db.clone());
    let inventory = Inventory::new(db.clone());
    if catalog.category("clothing").await.is_ok() {
        return Ok(Report { products: 0, variants: 0, categories: 0, already_loaded: true });
    }
    let mut category_ids = BTreeMap::new();
    for (position, (parent, children)) in CATEGORIES.iter().enumerate() {
        let p = catalog
            .create_category(&NewCategory {
                name: parent.to_string(),
                handle: None,
                parent_id: None,
                position: Some(position as i64),
            })
            .await?;
        for (pos, child) in children.iter().enumerate() {
            let c = catalog
                .create_category(&NewCategory {
                    name: child.to_string(),
                    handle: None,
                    parent_id: Some(p.id.clone()),
                    position: Some(pos as i64),
                })
                .await?;
            category_ids.insert(*child, c.id);
        }
        category_ids.insert(*parent, p.id);
    }
    let (mut products, mut variants) = (0, 0);
    let mut index = 0usize;
    for (category, kind, lines) in PRODUCTS {
        for (title, brand, material, eur) in lines.iter() {
            index += 1;
            let description = format!(
                "{title} by {brand}, made from {material}. Designed to be worn and used for years, \
                 finished by hand and checked piece by piece before it leaves the workshop."
            );
            let input = NewProduct {
                title: title.to_string(),
                handle: None,
                description: Some(description),
                // Every thirteenth product is still a draft, as in any real back office.
                status: Some(if index.is_multiple_of(13) { ProductStatus::Draft } else { ProductStatus::Published }),
                attributes: Some(BTreeMap::from([
                    ("brand".into(), brand.to_string()),
                    ("material".into(), material.to_string()),
                ])),
                category_ids: Some(vec![category_ids[category].clone()]),
                images: Some(images_for(title, index)),
                variants: Some(variants_for(*kind, title, index, *eur)),
            };
            let product = catalog.create_product(&input).await?;
            for (j, v) in product.variants.iter().enumerate() {
                // A spread of stock, with some variants sold out.
                let on_hand = ((index * 7 + j * 5) % 23) as i64;
                let set = SetStock { on_hand, location_id: None, reason: Some("initial stock (demo)".into()) };
                inventory.set_on_hand(&v.id, &set, v.allow_backorder, "seed").await?;
            }
            products += 1;
            variants += product.variants.len();
        }
    }
    pricing(db).await?;
    Ok(Report { products, variants, categories: category_ids.len(), already_loaded: false })
}

/// Regions, tax rates, shipping options and a promotion, so that a newcomer's cart shows real
/// totals: taxes included in the EU, added in the US.
async fn pricing(db: &Db) -> anyhow::Result<()> {
    use backroom_pricing::{promotions, regions, shipping, tax_rates};
    use serde_json::json;
    fn input<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> anyhow::Result<T> {
        Ok(serde_json::from_value(v)?)
    }
    let eu = regions::create(
        db,
        &input(json!({"name": "European Union", "currency": "EUR", "tax_inclusive": true,
            "countries": ["AT", "BE", "DE", "ES", "FI", "FR", "IE", "IT", "NL", "PT"]}))?,
    )
    .await?;
    let us = regions::create(
        db,
        &input(json!({"name": "United States", "currency": "USD", "tax_inclusive": false, "countries": ["US"]}))?,
    )
    .await?;
    tax_rates::create(db, &input(json!({"region_id": eu.id, "name": "VAT", "rate": "21", "tax_class": "standard"}))?)
        .await?;
    tax_rates::create(
        db,
        &input(json!({"region_id": eu.id, "name": "VAT (reduced)", "rate": "9", "tax_class": "reduced"}))?,
    )
    .await?;
    tax_rates::create(
        db,
        &input(json!({"region_id": us.id, "name": "Sales tax", "rate": "8.875", "tax_class": "standard"}))?,
    )
    .await?;
    for option in [
        json!({"name": "Standard (3–5 days)", "region_id": eu.id, "price": {"amount": 490, "currency": "EUR"},
               "free_over": {"amount": 6000, "currency": "EUR"}}),
        json!({"name": "Express (next day)", "region_id": eu.id, "price": {"amount": 1290, "currency": "EUR"}}),
        json!({"name": "Ground", "region_id": us.id, "price": {"amount": 795, "currency": "USD"},
               "free_over": {"amount": 7500, "currency": "USD"}}),
    ] {
        shipping::create(db, &input(option)?, false).await?;
    }
    promotions::create(
        db,
        &input(json!({"code": "WELCOME10", "type": "percentage", "value": 10, "per_customer_limit": 1}))?,
    )
    .await?;
    Ok(())
}
