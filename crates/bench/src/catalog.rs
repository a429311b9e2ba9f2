//! A realistic generated catalog for the benchmarks (categories, brands, colours, sizes,
//! prices, descriptions, stock), and a query mix with facets to search it with.

use backroom_catalog::{Catalog, NewCategory, NewProduct, NewVariant, PriceInput, ProductStatus};
use backroom_db::Db;
use backroom_inventory::Inventory;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROOTS: &[(&str, &[&str])] = &[
    ("Clothing", &["Shirts", "T-shirts", "Trousers", "Jackets", "Knitwear", "Dresses"]),
    ("Shoes", &["Sneakers", "Boots", "Sandals", "Loafers"]),
    ("Accessories", &["Bags", "Hats", "Scarves", "Belts", "Wallets"]),
    ("Home", &["Mugs", "Candles", "Blankets", "Cushions", "Lamps"]),
];
const NOUNS: &[&str] = &[
    "shirt", "tee", "chinos", "jacket", "sweater", "dress", "sneaker", "boot", "sandal", "loafer", "tote", "cap",
    "scarf", "belt", "wallet", "mug", "candle", "throw", "cushion", "lamp", "hoodie", "parka", "cardigan", "backpack",
];
const ADJECTIVES: &[&str] = &[
    "classic",
    "relaxed",
    "slim",
    "organic",
    "recycled",
    "vintage",
    "everyday",
    "heavyweight",
    "lightweight",
    "cosy",
    "tailored",
    "oversized",
    "cropped",
    "waterproof",
    "packable",
    "hand-knit",
    "washed",
    "brushed",
    "quilted",
    "ribbed",
    "striped",
    "plain",
    "textured",
    "soft",
    "rugged",
    "minimal",
    "modern",
    "heritage",
    "summer",
    "winter",
];
const MATERIALS: &[&str] = &[
    "linen",
    "cotton",
    "merino",
    "wool",
    "cashmere",
    "denim",
    "leather",
    "suede",
    "canvas",
    "nylon",
    "silk",
    "hemp",
    "alpaca",
    "corduroy",
    "fleece",
    "stoneware",
    "beeswax",
    "oak",
    "jute",
    "bamboo",
];
const BRANDS: &[&str] = &[
    "Nordhavn",
    "Atelier Sol",
    "Ridgeway",
    "Maré",
    "Passo",
    "Casa Barro",
    "Fjellstua",
    "Lumen & Co",
    "Oakmere",
    "Vento",
    "Halden",
    "Brisa",
    "Kinfolk Goods",
    "Tideline",
    "Ember",
    "Northbound",
    "Saltmarsh",
    "Greyfield",
    "Otto Weiss",
    "Aurelia",
    "Moss & Stone",
    "Pioneer",
    "Cedarline",
    "Blue Harbour",
    "Quietwear",
];
const COLOURS: &[&str] =
    &["White", "Black", "Navy", "Olive", "Charcoal", "Sand", "Rust", "Sky", "Forest", "Cream", "Burgundy", "Stone"];
const SIZES: &[&str] = &["XS", "S", "M", "L", "XL"];
const WORDS: &[&str] = &[
    "made",
    "to",
    "last",
    "for",
    "years",
    "with",
    "care",
    "and",
    "a",
    "relaxed",
    "fit",
    "that",
    "works",
    "every",
    "day",
    "cut",
    "from",
    "soft",
    "fabric",
    "finished",
    "by",
    "hand",
    "in",
    "small",
    "workshop",
    "durable",
    "breathable",
    "comfortable",
    "travel",
    "weekend",
    "office",
    "city",
    "mountain",
    "coast",
    "rain",
    "sun",
    "layer",
    "pair",
    "gift",
    "timeless",
    "design",
    "stitching",
    "pockets",
    "collar",
    "sleeves",
    "lining",
    "warm",
    "cool",
    "light",
    "heavy",
];

fn pick<'a>(rng: &mut StdRng, xs: &[&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

/// Generates and imports `n` products (and their stock); answers (handles, variants).
pub async fn generate(
    db: &Db,
    n: usize,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<(Vec<String>, usize)> {
    let catalog = Catalog::new(db.clone());
    let inventory = Inventory::new(db.clone());
    let mut leaves = Vec::new();
    for (i, (root, children)) in ROOTS.iter().enumerate() {
        let r = catalog
            .create_category(&NewCategory {
                name: root.to_string(),
                handle: None,
                parent_id: None,
                position: Some(i as i64),
            })
            .await?;
        for (j, c) in children.iter().enumerate() {
            let c = catalog
                .create_category(&NewCategory {
                    name: c.to_string(),
                    handle: None,
                    parent_id: Some(r.id.clone()),
                    position: Some(j as i64),
                })
                .await?;
            leaves.push(c.id);
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut handles = Vec::with_capacity(n);
    let mut variants = 0;
    let batch = 500;
    for start in (0..n).step_by(batch) {
        let mut inputs = Vec::with_capacity(batch);
        for i in start..(start + batch).min(n) {
            let (adj, mat, noun) = (pick(&mut rng, ADJECTIVES), pick(&mut rng, MATERIALS), pick(&mut rng, NOUNS));
            let title = format!("{} {mat} {noun}", capitalise(adj));
            let handle = format!("{adj}-{mat}-{noun}-{i}");
            // A price spread from 5 to 500 EUR, skewed to the low end, in whole .90 prices.
            let eur = ((rng.random_range(0.0f64..1.0).powi(2) * 495.0 + 5.0) as i64) * 100 + 90;
            let usd = eur * 108 / 100 / 100 * 100 + 99;
            let colours: Vec<&str> = (0..rng.random_range(1..=3)).map(|_| pick(&mut rng, COLOURS)).collect();
            let sizes: Vec<&str> =
                if rng.random_bool(0.6) { SIZES[1..rng.random_range(2..=5)].to_vec() } else { vec!["One size"] };
            let mut vs = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for c in &colours {
                for s in &sizes {
                    if !seen.insert((*c, *s)) {
                        continue;
                    }
                    vs.push(NewVariant {
                        sku: format!("B{i}-{}-{}", &c[..3].to_uppercase(), s.replace(' ', "")),
                        title: None,
                        options: Some([("color".to_owned(), c.to_string()), ("size".to_owned(), s.to_string())].into()),
                        prices: Some(vec![
                            PriceInput { amount: eur, currency: "EUR".into() },
                            PriceInput { amount: usd, currency: "USD".into() },
                        ]),
                        allow_backorder: Some(false),
                        weight_g: None,
                        tax_class: None,
                    });
                }
            }
            variants += vs.len();
            let words: Vec<&str> = (0..rng.random_range(12..30)).map(|_| pick(&mut rng, WORDS)).collect();
            inputs.push(NewProduct {
                title,
                handle: Some(handle.clone()),
                description: Some(format!("{} {mat} {noun}: {}.", capitalise(adj), words.join(" "))),
                status: Some(ProductStatus::Published),
                attributes: Some(
                    [("brand".to_owned(), pick(&mut rng, BRANDS).to_owned()), ("material".to_owned(), mat.to_owned())]
                        .into(),
                ),
                category_ids: Some(vec![leaves[rng.random_range(0..leaves.len())].clone()]),
                images: None,
                variants: Some(vs),
            });
            handles.push(handle);
        }
        let ids = catalog.import(&inputs).await?;
        let products = catalog.products(&ids).await?;
        let levels: Vec<(String, i64)> = products
            .iter()
            .flat_map(|p| p.variants.iter().map(|v| v.id.clone()))
            .map(|v| {
                let n = if rng.random_bool(0.15) { 0 } else { rng.random_range(1..50) };
                (v, n)
            })
            .collect();
        inventory.import_levels(&levels, "bench import", "bench").await?;
        progress(handles.len());
    }
    Ok((handles, variants))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// A query mix with facets: words (some misspelt or cut short), categories, colours, price
/// ranges, stock and sort orders, in combinations.
pub fn search_urls(base: &str, count: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let categories: Vec<String> = ROOTS
        .iter()
        .flat_map(|(r, cs)| std::iter::once(*r).chain(cs.iter().copied()))
        .map(|c| c.to_lowercase())
        .collect();
    (0..count)
        .map(|_| {
            let mut q = vec!["facets=true".to_owned(), "currency=EUR".to_owned()];
            let word = match rng.random_range(0..4) {
                0 => pick(&mut rng, MATERIALS).to_owned(),
                1 => pick(&mut rng, NOUNS).to_owned(),
                2 => {
                    // search-as-you-type: a prefix
                    let w = pick(&mut rng, ADJECTIVES);
                    w[..w.len().min(rng.random_range(3..6))].to_owned()
                }
                _ => {
                    // a typo: one letter doubled
                    let w = pick(&mut rng, MATERIALS);
                    let i = rng.random_range(1..w.len());
                    format!("{}{}", &w[..i], &w[i - 1..])
                }
            };
            if rng.random_bool(0.8) {
                q.push(format!("q={}", word.replace(' ', "%20")));
            }
            if rng.random_bool(0.3) {
                q.push(format!("category={}", categories[rng.random_range(0..categories.len())].replace(' ', "-")));
            }
            if rng.random_bool(0.3) {
                q.push(format!("color={}", pick(&mut rng, COLOURS)));
            }
            if rng.random_bool(0.2) {
                let lo = rng.random_range(0..100) * 100;
                q.push(format!("price_min={lo}&price_max={}", lo + 10000));
            }
            if rng.random_bool(0.3) {
                q.push("in_stock=true".into());
            }
            q.push(format!("sort={}", ["relevance", "price_asc", "price_desc", "newest"][rng.random_range(0..4)]));
            format!("{base}/store/products?{}", q.join("&"))
        })
        .collect()
}

/// The handles of every product in the store, and its number of variants.
pub async fn handles(db: &Db) -> anyhow::Result<(Vec<String>, usize)> {
    let catalog = Catalog::new(db.clone());
    let filter = backroom_catalog::ProductFilter::default();
    let mut out = Vec::new();
    let mut variants = 0;
    let mut cursor: Option<String> = None;
    loop {
        let page = backroom_kernel::PageRequest::parse(Some(100), cursor.as_deref())?;
        let found = catalog.list_products(&filter, &page).await?;
        for p in &found.items {
            variants += p.variants.len();
            out.push(p.handle.clone());
        }
        match found.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok((out, variants)),
        }
    }
}
