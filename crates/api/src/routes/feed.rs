//! `GET /feeds/products.xml`: the marketplace product feed (RSS 2.0 with Google Merchant's
//! `g:` namespace), one item per variant of each published product, streamed a page of
//! products at a time so that memory stays flat however large the catalog.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use backroom_catalog::{ProductFilter, ProductStatus};
use backroom_kernel::{Currency, Error, PageRequest};
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde::Deserialize;

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::ApiQuery;
use crate::routes::Routes;
use crate::routes::store::StoreProduct;

/// The feed is public: marketplaces fetch it without a key.
pub fn routes(r: &mut Routes) {
    use utoipa_axum::routes;
    r.public(routes!(product_feed));
}

/// Products read per page while the feed streams.
const PAGE: i64 = 100;

/// The feed's content type.
pub const CONTENT_TYPE: &str = "application/rss+xml; charset=utf-8";

/// Parameters of `GET /feeds/products.xml`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// ISO 4217 code: each item's price is the variant's base price in it; variants without a
    /// price in it are left out. Required.
    #[param(pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: Option<String>,
}

/// Product feed for marketplaces
///
/// RSS 2.0 with the Google Merchant namespace (`xmlns:g="http://base.google.com/ns/1.0"`), for
/// Google Merchant Center and other marketplaces that read it: one `<item>` per variant of each
/// published product that has a price in `currency`, with `g:id` (the variant id),
/// `g:item_group_id` (the product id), `g:title`, `g:description`, `g:link`
/// (`{storefront_url}/products/{handle}`), `g:image_link` (the first image), `g:price`
/// (`12.50 EUR`: the base price, as the storefront shows it to an anonymous shopper),
/// `g:availability` (`in_stock` or `out_of_stock`), `g:gtin`, `g:brand` (from the product's
/// `gtin` and `brand` attributes, when set) and `g:condition` (the `condition` attribute, `new`
/// by default). The feed is streamed; it is cached like the storefront listings and dropped on
/// every catalog, price or stock change.
#[utoipa::path(get, path = "/feeds/products.xml", tag = "storefront", params(FeedQuery),
    responses(
        (status = 200, description = "The feed", content_type = "application/rss+xml", body = String),
        (status = 422, description = "`validation_failed`: currency missing or not an ISO 4217 code", body = Problem, content_type = "application/problem+json")))]
pub async fn product_feed(State(s): State<AppState>, ApiQuery(q): ApiQuery<FeedQuery>) -> ApiResult<Response> {
    let currency = match q.currency.as_deref().map(str::trim) {
        None | Some("") => return Err(Error::field("currency", "is required: the ISO 4217 code of the prices").into()),
        Some(c) => Currency::parse(c).map_err(|e| Error::field("currency", e.to_string()))?,
    };
    let first = PageRequest::parse(Some(PAGE), None)?;
    // States: the head, then pages of products until the last, then the tail.
    enum Step {
        Head,
        Page(PageRequest),
        Tail,
        Done,
    }
    let stream = futures_util::stream::unfold(Step::Head, move |step| {
        let s = s.clone();
        let first = first.clone();
        async move {
            match step {
                Step::Head => Some((head(), Step::Page(first))),
                Step::Page(page) => {
                    let filter = ProductFilter { status: Some(ProductStatus::Published), q: None, category: None };
                    let found = match s.catalog.list_products(&filter, &page).await {
                        Ok(found) => found,
                        Err(e) => return Some((Err(failed(e)), Step::Done)),
                    };
                    let products = match crate::routes::store::to_store(&s, found.items).await {
                        Ok(p) => p,
                        Err(e) => return Some((Err(std::io::Error::other(format!("{e:?}"))), Step::Done)),
                    };
                    let chunk = items(&products, currency, &s.storefront_url);
                    let next = match found.next_cursor {
                        Some(c) => match PageRequest::parse(Some(PAGE), Some(&c)) {
                            Ok(p) => Step::Page(p),
                            Err(e) => return Some((Err(failed(e)), Step::Done)),
                        },
                        None => Step::Tail,
                    };
                    Some((chunk, next))
                }
                Step::Tail => Some((Ok(Bytes::from_static(b"</channel>\n</rss>\n")), Step::Done)),
                Step::Done => None,
            }
        }
    });
    let mut res = Body::from_stream(stream).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(res)
}

/// A failure after the answer started: the connection is cut, so the reader sees a broken
/// document rather than a short one that looks whole.
fn failed(e: Error) -> std::io::Error {
    tracing::error!(error = ?e, "the product feed failed while streaming");
    std::io::Error::other("the product feed failed")
}

fn head() -> Result<Bytes, std::io::Error> {
    let mut w = Writer::new(Vec::new());
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.get_mut().push(b'\n');
    let rss =
        BytesStart::new("rss").with_attributes([("version", "2.0"), ("xmlns:g", "http://base.google.com/ns/1.0")]);
    w.write_event(Event::Start(rss))?;
    w.write_event(Event::Start(BytesStart::new("channel")))?;
    text(&mut w, "title", "Products")?;
    text(&mut w, "description", "Published products, one item per variant")?;
    Ok(Bytes::from(w.into_inner()))
}

fn text(w: &mut Writer<Vec<u8>>, name: &str, value: &str) -> Result<(), std::io::Error> {
    w.write_event(Event::Start(BytesStart::new(name)))?;
    w.write_event(Event::Text(BytesText::new(value)))?;
    w.write_event(Event::End(BytesEnd::new(name)))?;
    w.get_mut().push(b'\n');
    Ok(())
}

/// The `<item>`s of a page of products.
fn items(products: &[StoreProduct], currency: Currency, base: &str) -> Result<Bytes, std::io::Error> {
    let mut w = Writer::new(Vec::with_capacity(products.len() * 1024));
    for p in products {
        let link = format!("{base}/products/{}", p.handle);
        let attr = |k: &str| p.attributes.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        for v in &p.variants {
            let Some(price) = v.prices.iter().find(|m| m.currency == currency) else { continue };
            let price = backroom_kernel::Money::new(price.amount, currency).map_err(std::io::Error::other)?;
            let in_stock = v.allow_backorder || v.available.is_none_or(|n| n > 0);
            let title = if p.variants.len() > 1 && !v.title.is_empty() {
                format!("{} ({})", p.title, v.title)
            } else {
                p.title.clone()
            };
            w.write_event(Event::Start(BytesStart::new("item")))?;
            text(&mut w, "g:id", &v.id)?;
            text(&mut w, "g:item_group_id", &p.id)?;
            text(&mut w, "g:title", &title)?;
            text(&mut w, "g:description", &p.description)?;
            text(&mut w, "g:link", &link)?;
            if let Some(image) = p.images.first() {
                text(&mut w, "g:image_link", &image.url)?;
            }
            text(&mut w, "g:price", &format!("{} {}", price.to_decimal_string(), currency.code()))?;
            text(&mut w, "g:availability", if in_stock { "in_stock" } else { "out_of_stock" })?;
            if let Some(gtin) = v.options.get("gtin").map(String::as_str).or(attr("gtin")) {
                text(&mut w, "g:gtin", gtin)?;
            }
            if let Some(brand) = attr("brand") {
                text(&mut w, "g:brand", brand)?;
            }
            text(&mut w, "g:condition", attr("condition").unwrap_or("new"))?;
            w.write_event(Event::End(BytesEnd::new("item")))?;
            w.get_mut().push(b'\n');
        }
    }
    Ok(Bytes::from(w.into_inner()))
}
