//! Issue 15: orders out for systems that poll (`updated_since`), the marketplace feed, and
//! the CSV import/export of products.

use serde_json::{Value, json};

use crate::both;
use crate::support::TestApp;

/// A placed order of one unit of `variant`.
async fn placed(app: &TestApp, variant: &str, key: &str) -> String {
    let cart = app.cart_with("EUR", &[(variant, 1)]).await;
    let order = app.send(app.checkout_req(&cart, Some(key), "tok_visa")).await.expect(201);
    order["id"].as_str().unwrap().to_owned()
}

fn pairs(page: &Value) -> Vec<(String, String)> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["id"].as_str().unwrap().to_owned(), o["updated_at"].as_str().unwrap().to_owned()))
        .collect()
}

both!(updated_since_pages_by_change_and_sees_an_order_changed_meanwhile, |app: TestApp| async move {
    let p = app.product("poll", &["POLL-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 100).await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(placed(&app, &v, &format!("poll-{i}")).await);
    }
    let since = before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let first = app.admin_get(&format!("/admin/orders?updated_since={}&limit=2", urlencode(&since))).await.expect(200);
    let mut seen = pairs(&first);
    assert_eq!(seen.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), ids[..2].to_vec(), "oldest change first");
    // The first order changes between two pages: it moves past the cursor and is listed
    // again, with its new updated_at; nothing is skipped.
    app.admin_post(&format!("/admin/orders/{}/cancel", ids[0]), json!({})).await.expect(200);
    let mut cursor = first["next_cursor"].as_str().unwrap().to_owned();
    loop {
        let page = app
            .admin_get(&format!("/admin/orders?updated_since={}&limit=2&cursor={cursor}", urlencode(&since)))
            .await
            .expect(200);
        seen.extend(pairs(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let order: Vec<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        order,
        vec![ids[0].clone(), ids[1].clone(), ids[2].clone(), ids[3].clone(), ids[4].clone(), ids[0].clone()]
    );
    assert!(seen[5].1 > seen[0].1, "the change has a later updated_at: {seen:?}");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "no pair repeated: {seen:?}");

    // Polling again from the last updated_at seen gives the last change (and only it).
    let last = &seen[5].1;
    let again = app.admin_get(&format!("/admin/orders?updated_since={}", urlencode(last))).await.expect(200);
    assert_eq!(pairs(&again), vec![seen[5].clone()]);
    // Offsets other than Z are understood.
    let plus = before
        .with_timezone(&chrono::FixedOffset::east_opt(7200).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    let all = app.admin_get(&format!("/admin/orders?updated_since={}&limit=100", urlencode(&plus))).await.expect(200);
    assert_eq!(all["items"].as_array().unwrap().len(), 5);

    // Bad values are named.
    for bad in ["yesterday", "2026-13-01T00:00:00Z", "2026-12-01", "2026-12-01T08:00:00"] {
        let e = app
            .admin_get(&format!("/admin/orders?updated_since={}", urlencode(bad)))
            .await
            .problem(422, "validation_failed");
        assert_eq!(e["errors"][0]["field"], "updated_since", "{bad}: {e}");
    }
    let e = app
        .admin_get(&format!("/admin/orders?updated_since={}&cursor=c1.nope", urlencode(&since)))
        .await
        .problem(422, "validation_failed");
    assert_eq!(e["errors"][0]["field"], "cursor", "{e}");
});

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The feed's items: each a map of its child elements' names to their text.
async fn feed(app: &TestApp, currency: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let (status, headers, body) =
        app.send_raw(app.client.get(app.url(&format!("/feeds/products.xml?currency={currency}")))).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/rss+xml"));
    parse_feed(&body)
}

fn parse_feed(body: &[u8]) -> Vec<std::collections::BTreeMap<String, String>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut items = Vec::new();
    let mut item: Option<std::collections::BTreeMap<String, String>> = None;
    let mut field: Option<String> = None;
    let mut depth = 0;
    let mut buf = Vec::new();
    let mut rss_ns = false;
    loop {
        match reader.read_event_into(&mut buf).expect("well-formed XML") {
            Event::Start(e) => {
                depth += 1;
                let name = e.name().as_ref().to_owned();
                if name == "rss" {
                    rss_ns = e.attributes().any(|a| {
                        let a = a.unwrap();
                        a.key.as_ref() == "xmlns:g" && a.value == "http://base.google.com/ns/1.0"
                    });
                }
                if name == "item" {
                    item = Some(Default::default());
                } else if item.is_some() {
                    field = Some(name);
                }
            }
            Event::Text(t) => {
                if let (Some(i), Some(f)) = (item.as_mut(), field.as_ref()) {
                    let text = t.into_inner().into_owned();
                    i.entry(f.clone()).or_default().push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                if let (Some(i), Some(f)) = (item.as_mut(), field.as_ref()) {
                    let name = r.into_inner();
                    let c = match name.as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        other => panic!("unexpected entity {other}"),
                    };
                    i.entry(f.clone()).or_default().push_str(c);
                }
            }
            Event::End(e) => {
                depth -= 1;
                if e.name().as_ref() == "item" {
                    items.push(item.take().unwrap());
                }
                field = None;
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    assert_eq!(depth, 0, "every element closed");
    assert!(rss_ns, "the g: namespace is declared");
    items
}

both!(
    product_feed_is_valid_xml_of_published_variants_in_a_currency_and_follows_price_changes,
    |app: TestApp| async move {
        let shirt = app
        .admin_post(
            "/admin/products",
            json!({"title": "Fish & Chips <Deluxe> \"tee\"", "handle": "fish-tee", "status": "published",
                "description": "Cotton & <b>love</b>",
                "attributes": {"brand": "R&D", "gtin": "4006381333931"},
                "images": [{"url": "https://img.example.com/a.jpg?x=1&y=2"}],
                "variants": [
                    {"sku": "FISH-S", "title": "S", "prices": [{"amount": 1250, "currency": "EUR"}, {"amount": 1400, "currency": "USD"}]},
                    {"sku": "FISH-M", "title": "M", "prices": [{"amount": 1300, "currency": "EUR"}], "allow_backorder": false}]}),
        )
        .await
        .expect(201);
        let s = shirt["variants"][0]["id"].as_str().unwrap().to_owned();
        let m = shirt["variants"][1]["id"].as_str().unwrap().to_owned();
        app.stock(&s, 3).await;
        app.stock(&m, 0).await;
        app.admin_post(
            "/admin/products",
            json!({"title": "Secret draft", "handle": "draft", "status": "draft",
            "variants": [{"sku": "DRAFT-1", "prices": [{"amount": 100, "currency": "EUR"}]}]}),
        )
        .await
        .expect(201);

        let items = feed(&app, "EUR").await;
        assert_eq!(items.len(), 2, "{items:?}");
        let by_id = |id: &str| items.iter().find(|i| i["g:id"] == id).cloned().unwrap();
        let small = by_id(&s);
        assert_eq!(small["g:title"], "Fish & Chips <Deluxe> \"tee\" (S)");
        assert_eq!(small["g:description"], "Cotton & <b>love</b>");
        assert_eq!(small["g:item_group_id"], shirt["id"].as_str().unwrap());
        assert_eq!(small["g:price"], "12.50 EUR");
        assert_eq!(small["g:availability"], "in_stock");
        assert_eq!(small["g:link"], "http://localhost:3000/products/fish-tee");
        assert_eq!(small["g:image_link"], "https://img.example.com/a.jpg?x=1&y=2");
        assert_eq!((small["g:brand"].as_str(), small["g:gtin"].as_str()), ("R&D", "4006381333931"));
        assert_eq!(small["g:condition"], "new");
        assert_eq!(by_id(&m)["g:availability"], "out_of_stock");
        assert!(!items.iter().any(|i| i["g:title"].contains("draft")));

        // Only variants priced in the currency.
        let usd = feed(&app, "USD").await;
        assert_eq!(
            usd.iter().map(|i| (i["g:id"].clone(), i["g:price"].clone())).collect::<Vec<_>>(),
            vec![(s.clone(), "14.00 USD".into())]
        );

        // Served again from the cache, then dropped by a price change.
        assert_eq!(feed(&app, "EUR").await, items);
        app.admin_patch(&format!("/admin/variants/{s}"), json!({"prices": [{"amount": 999, "currency": "EUR"}]}))
            .await
            .expect(200);
        assert_eq!(feed(&app, "EUR").await.iter().find(|i| i["g:id"] == s).unwrap()["g:price"], "9.99 EUR");

        // Bad currencies.
        for q in ["", "?currency=", "?currency=EURO", "?currency=XYZ", "?currency=eur%26"] {
            let r = app.send(app.client.get(app.url(&format!("/feeds/products.xml{q}")))).await;
            let e = r.problem(422, "validation_failed");
            assert_eq!(e["errors"][0]["field"], "currency", "{q}: {e}");
        }
    }
);
