use crate::both;
use crate::support::TestApp;

both!(health_readiness_and_metrics, |app: TestApp| async move {
    assert_eq!(app.get("/healthz").await.expect(200)["status"], "ok");
    assert_eq!(app.get("/readyz").await.expect(200)["status"], "ready");
    app.get("/store/products").await.expect(200);
    let r = app.send(app.client.get(app.url("/metrics"))).await;
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/plain"));
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("http_requests_total{") && l.contains("route=\"/store/products\"")),
        "{text}"
    );
    assert!(text.contains("http_request_duration_seconds_bucket{"), "{text}");
    assert!(text.contains("route=\"/store/products\""));
});

both!(openapi_is_served_and_requests_carry_an_id, |app: TestApp| async move {
    let doc = app.get("/openapi.json").await.expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/admin/products"]["post"].is_object());
    let r = app.get("/healthz").await;
    assert!(r.headers.get("x-request-id").is_some());
});

both!(readyz_fails_when_the_database_is_gone, |app: TestApp| async move {
    app.db.close().await;
    let r = app.get("/readyz").await;
    assert_eq!(r.status, 503);
    // Requests that need the database answer 503 problem+json, not a hang or a panic.
    app.get("/store/products").await.problem(503, "unavailable");
});

both!(metrics_cover_checkout_outcomes_stock_conflicts_writer_batches_and_outbox_lag, |app: TestApp| async move {
    let p = app.product("metered", &["METER-1"]).await;
    let v = p["variants"][0]["id"].as_str().unwrap().to_owned();
    app.stock(&v, 1).await;
    let first = app.cart_with("EUR", &[(&v, 1)]).await;
    let second = app.cart_with("EUR", &[(&v, 1)]).await;
    app.send(app.checkout_req(&first, Some("m-1"), "tok_visa")).await.expect(201);
    app.send(app.checkout_req(&second, Some("m-2"), "tok_visa")).await.problem(409, "insufficient_stock");
    // The worker publishes the outbox gauges on its first pass.
    let mut text = String::new();
    for _ in 0..50 {
        text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if text.contains("outbox_lag_seconds") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let has = |prefix: &str, part: &str| text.lines().any(|l| l.starts_with(prefix) && l.contains(part));
    assert!(has("checkout_outcomes_total{", "result=\"placed\""), "{text}");
    assert!(has("checkout_outcomes_total{", "result=\"insufficient_stock\""), "{text}");
    assert!(has("stock_conflicts_total", ""), "{text}");
    assert!(has("db_writer_batch_size_bucket{", "le=\"1\""), "{text}");
    assert!(has("db_writer_batches_total{", "result=\"committed\""), "{text}");
    assert!(has("db_writer_commit_seconds_bucket{", ""), "{text}");
    assert!(has("outbox_lag_seconds", ""), "{text}");
    assert!(has("outbox_pending_events", ""), "{text}");
});

both!(metrics_are_described_and_start_at_zero, |app: TestApp| async move {
    // Before any checkout, shed write or recovery: the counters are there at 0, every metric
    // has its help text.
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    // (A metric whose labels are known only when recorded, such as a route's, is shown from
    // its first sample on; the exporter prints no empty families.)
    for m in backroom_api::telemetry::METRICS.iter().filter(|m| !m.zero.is_empty()) {
        assert!(text.contains(&format!("# HELP {} ", m.name)), "no HELP for {}:\n{text}", m.name);
    }
    let again = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(again.contains("# HELP http_requests_total "), "{again}");
    for line in [
        "db_writer_shed_total{why=\"queue_full\"}",
        "checkout_outcomes_total{result=\"placed\"}",
        "http_requests_shed_total",
    ] {
        assert!(text.lines().any(|l| l.starts_with(line)), "{line} missing:\n{text}");
    }
});
