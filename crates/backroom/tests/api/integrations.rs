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
