//! A product page loads in a constant number of SQL statements, whatever its number of
//! variants and images: counted from sqlx's own per-statement log events. This binary holds a single
//! test, so the process-wide counter sees only its own statements.

use std::sync::atomic::{AtomicUsize, Ordering};

use backroom_catalog::{Catalog, ImageInput, NewProduct, NewVariant, PriceInput, ProductFilter, ProductStatus};
use backroom_db::{ConnectOptions, Db};
use backroom_kernel::PageRequest;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

static STATEMENTS: AtomicUsize = AtomicUsize::new(0);

struct CountStatements;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountStatements {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            STATEMENTS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn product(handle: &str, variants: usize, images: usize) -> NewProduct {
    NewProduct {
        title: handle.into(),
        handle: Some(handle.into()),
        description: None,
        status: Some(ProductStatus::Published),
        attributes: Some([("brand".to_owned(), "Acme".to_owned())].into()),
        category_ids: None,
        images: Some(
            (0..images)
                .map(|i| ImageInput { url: format!("https://images.example.com/{handle}-{i}.jpg"), alt: None })
                .collect(),
        ),
        variants: Some(
            (0..variants)
                .map(|i| NewVariant {
                    sku: format!("{handle}-{i}"),
                    title: None,
                    options: Some([("size".to_owned(), i.to_string())].into()),
                    prices: Some(vec![PriceInput { amount: 100, currency: "EUR".into() }]),
                    allow_backorder: None,
                    weight_g: None,
                    tax_class: None,
                })
                .collect(),
        ),
    }
}

async fn statements_for<F: std::future::Future>(f: F) -> (usize, F::Output) {
    let before = STATEMENTS.load(Ordering::SeqCst);
    let out = f.await;
    (STATEMENTS.load(Ordering::SeqCst) - before, out)
}

async fn check(db: Db) {
    db.migrate().await.unwrap();
    let catalog = Catalog::new(db.clone());
    catalog.create_product(&product("one", 1, 1)).await.unwrap();
    catalog.create_product(&product("many", 500, 50)).await.unwrap();

    // The fewest statements over a few runs: opening a pooled connection logs its own
    // set-up statements, which are not the page's.
    let (mut small, mut large) = (usize::MAX, usize::MAX);
    for _ in 0..3 {
        let (n, p1) = statements_for(catalog.product_by_key("one", true)).await;
        assert_eq!(p1.unwrap().variants.len(), 1);
        small = small.min(n);
        let (n, p500) = statements_for(catalog.product_by_key("many", true)).await;
        let p500 = p500.unwrap();
        assert_eq!((p500.variants.len(), p500.images.len()), (500, 50));
        large = large.min(n);
    }
    assert!(small > 0, "the statement counter must see statements");
    assert_eq!(
        small, large,
        "loading 500 variants and 50 images took {large} statements, 1 variant and 1 image took {small}"
    );

    let page = PageRequest::parse(Some(100), None).unwrap();
    let (list, found) = statements_for(catalog.list_products(&ProductFilter::default(), &page)).await;
    assert_eq!(found.unwrap().items.len(), 2);
    assert!(list <= small + 1, "a list page took {list} statements");

    // Cart and order lines: one statement for the products of any number of variants.
    let one: Vec<String> =
        catalog.product_by_key("one", true).await.unwrap().variants.into_iter().map(|v| v.id).collect();
    let many: Vec<String> =
        catalog.product_by_key("many", true).await.unwrap().variants.into_iter().map(|v| v.id).collect();
    let mut read = db.read().await.unwrap();
    let (n_one, found) = statements_for(backroom_catalog::line_products(&mut read.conn(), &one)).await;
    assert_eq!(found.unwrap().len(), 1);
    let (n_many, found) = statements_for(backroom_catalog::line_products(&mut read.conn(), &many)).await;
    let found = found.unwrap();
    assert_eq!(found.len(), 500);
    assert_eq!(found[&many[7]].thumbnail.as_deref(), Some("https://images.example.com/many-0.jpg"));
    assert_eq!((n_one, n_many), (1, 1), "line products took {n_one} and {n_many} statements");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_pages_load_in_constant_statements() {
    tracing_subscriber::registry().with(CountStatements).init();

    let dir = tempfile::tempdir().unwrap();
    let sqlite = Db::connect(&ConnectOptions::new(backroom_db::sqlite_url_in(dir.path()))).await.unwrap();
    check(sqlite).await;

    if let Some(pg) = backroom_db::testing::fresh_postgres().await {
        let url = pg.url().to_owned();
        check(Db::connect(&ConnectOptions::new(url)).await.unwrap()).await;
    }
}
