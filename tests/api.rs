//! The HTTP API over the real pipeline: `accord::api::router` driven with
//! `oneshot`, the real CSV plugin (wasm, built from source) and a fresh
//! PostgreSQL database per test.

use std::sync::Arc;

use accord::config::Config;
use accord::pipeline::Context;
use accord::store::Store;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support;

const ICELAND_CSV: &[u8] = include_bytes!("../plugins/csv/fixtures/iceland.csv");

struct Api {
    ctx: Arc<Context>,
    app: Router,
    _db: DropDb,
    _dir: tempfile::TempDir,
}

/// Drops the test's database even when the test panics (on a thread of its
/// own: `Drop` runs inside the test's runtime, which must not block on another).
struct DropDb(Option<support::TestDb>);

impl Drop for DropDb {
    fn drop(&mut self) {
        if let Some(db) = self.0.take() {
            let _ = std::thread::spawn(move || db.drop_blocking()).join();
        }
    }
}

/// A daemon's worth of state: sources `iceland` (the CSV fixture's config),
/// `iceland-csv` (only `text/csv` over HTTP) and `dropbox` (inbox only).
async fn api(max_body_bytes: u64) -> Api {
    let db = support::TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let plugins_dir = dir.path().join("plugins");
    support::install_example(&plugins_dir, "csv");
    let runtime = support::runtime(&plugins_dir, &support::shared_cache_dir());
    let report = runtime.rescan();
    assert!(report.failed.is_empty(), "{report:?}");

    let iceland = support::iceland_config();
    let source = |name: &str, extra: Value| {
        let mut s = json!({
            "name": name,
            "side": "merchant",
            "parser": "csv",
            "config": iceland,
        });
        s.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s
    };
    let config = json!({
        "database_url": db.url,
        "data_dir": dir.path().join("data"),
        "plugins_dir": plugins_dir,
        "max_body_bytes": max_body_bytes,
        "sources": [
            source("iceland", json!({})),
            source("iceland-csv", json!({ "content_types": ["text/csv"] })),
            source("dropbox", json!({ "http": false, "inbox": { "path": "inbox" } })),
        ],
    });
    let toml_path = dir.path().join("accord.toml");
    std::fs::write(&toml_path, support::config_toml(&config)).unwrap();
    let config = Config::load(Some(&toml_path), std::iter::empty()).unwrap();

    // TestDb::create has migrated it.
    let store = Store::connect(&db.url).await.unwrap();
    let ctx = Arc::new(Context {
        store,
        runtime,
        config: Arc::new(config),
    });
    Api {
        app: accord::api::router(ctx.clone()),
        ctx,
        _db: DropDb(Some(db)),
        _dir: dir,
    }
}

impl Api {
    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .unwrap();
        assert_eq!(
            content_type.as_deref(),
            Some("application/json"),
            "every answer is JSON ({status}: {})",
            String::from_utf8_lossy(&bytes)
        );
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn post(&self, uri: &str, content_type: &str, body: &[u8]) -> (StatusCode, Value) {
        self.send(
            Request::post(uri)
                .header(header::CONTENT_TYPE, content_type)
                .header(header::CONTENT_LENGTH, body.len())
                .body(Body::from(body.to_vec()))
                .unwrap(),
        )
        .await
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

#[tokio::test]
async fn posts_a_csv_and_reads_it_back() {
    let api = api(1 << 20).await;
    let (status, body) = api
        .post(
            "/v1/sources/iceland/imports?name=iceland.csv",
            "text/csv",
            ICELAND_CSV,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["source"], "iceland");
    assert_eq!(body["status"], "parsed");
    assert_eq!(body["duplicate_of"], Value::Null);
    assert_eq!(
        body["counts"],
        json!({ "accepted": 4, "duplicates": 0, "rejected": 2 })
    );
    let rejects = body["rejects"].as_array().unwrap();
    let fields: Vec<_> = rejects
        .iter()
        .map(|r| (r["row"].as_u64(), r["field"].as_str()))
        .collect();
    assert_eq!(
        fields,
        [(Some(6), Some("amount")), (Some(9), Some("occurred_at"))]
    );
    assert!(
        rejects
            .iter()
            .all(|r| r["reason"].as_str().is_some_and(|s| !s.is_empty()))
    );
    assert!(rejects[0]["raw"].as_str().unwrap().contains("twelve"));
    assert!(rejects[0]["byte_offset"].is_u64());
    let id = body["import_id"].as_i64().unwrap();

    let (status, import) = api.get(&format!("/v1/imports/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{import}");
    assert_eq!(import["id"], id);
    assert_eq!(import["status"], "parsed");
    assert_eq!(import["channel"], "http");
    assert_eq!(import["original_name"], "iceland.csv");
    assert_eq!(import["size_bytes"], ICELAND_CSV.len());
    assert_eq!(import["plugin"]["name"], "csv");

    let (status, page) = api.get(&format!("/v1/transactions?import_id={id}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(page["next_cursor"], Value::Null);
    let first = items
        .iter()
        .find(|t| t["external_id"] == "7f1d2c3b-0a9e-4d6f-8b21-5c4e3a2f1b00")
        .unwrap_or_else(|| panic!("24.50 GBP row missing from {page}"));
    assert_eq!(
        first["amount"],
        json!({ "minor_units": 2450, "currency": "GBP" })
    );
    assert_eq!(first["import_id"], id);
    assert_eq!(first["source"], "iceland");
    assert_eq!(first["source_row"], 2);

    let (status, stored) = api.get(&format!("/v1/imports/{id}/rejects")).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["items"].as_array().unwrap().len(), 2);

    let (status, events) = api.get(&format!("/v1/imports/{id}/events")).await;
    assert_eq!(status, StatusCode::OK, "{events}");
    assert!(!events["items"].as_array().unwrap().is_empty(), "{events}");

    // The same bytes again: a duplicate import, nothing new stored.
    let (status, again) = api
        .post("/v1/sources/iceland/imports", "text/csv", ICELAND_CSV)
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["duplicate_of"], id);
    assert_ne!(again["import_id"], id);
    let (_, page) = api.get("/v1/transactions?source=iceland").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn name_from_content_disposition() {
    let api = api(1 << 20).await;
    let (status, body) = api
        .send(
            Request::post("/v1/sources/iceland/imports")
                .header(
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"exports/day 1.csv\"",
                )
                .body(Body::from(ICELAND_CSV))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, import) = api.get(&format!("/v1/imports/{}", body["import_id"])).await;
    assert_eq!(import["original_name"], "day 1.csv");
}

#[tokio::test]
async fn unknown_and_closed_sources_are_404() {
    let api = api(1 << 20).await;
    let (status, body) = api
        .post("/v1/sources/nope/imports", "text/csv", ICELAND_CSV)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "unknown_source");
    assert!(body["error"]["message"].as_str().unwrap().contains("nope"));

    let (status, body) = api
        .post("/v1/sources/dropbox/imports", "text/csv", ICELAND_CSV)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "http_disabled");

    let (_, page) = api.get("/v1/imports").await;
    assert_eq!(page["items"], json!([]), "nothing recorded");
}

#[tokio::test]
async fn too_large_is_413_declared_or_streamed() {
    let api = api(64).await;
    // Declared length: refused before the body is read.
    let (status, body) = api
        .post("/v1/sources/iceland/imports", "text/csv", ICELAND_CSV)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(code(&body), "too_large");

    // No length (chunked): stopped by the pipeline while streaming.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = ICELAND_CSV
        .chunks(16)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let (status, body) = api
        .send(
            Request::post("/v1/sources/iceland/imports")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(code(&body), "too_large");

    let (_, page) = api.get("/v1/imports").await;
    assert_eq!(
        page["items"],
        json!([]),
        "an oversized payload leaves no import"
    );
}

#[tokio::test]
async fn refused_content_type_is_415() {
    let api = api(1 << 20).await;
    let (status, body) = api
        .post(
            "/v1/sources/iceland-csv/imports",
            "application/json",
            ICELAND_CSV,
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert_eq!(code(&body), "unsupported_content_type");

    let (status, body) = api
        .post(
            "/v1/sources/iceland-csv/imports",
            "text/csv; charset=utf-8",
            ICELAND_CSV,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn unparseable_is_422_and_recorded_failed() {
    let api = api(1 << 20).await;
    // The mapped `TransactionId` column is missing from the header.
    let csv = String::from_utf8_lossy(ICELAND_CSV).replace("TransactionId", "Id");
    let (status, body) = api
        .post("/v1/sources/iceland/imports", "text/csv", csv.as_bytes())
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "unparseable");
    let id = body["error"]["import_id"].as_i64().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TransactionId"),
        "{body}"
    );

    let (status, import) = api.get(&format!("/v1/imports/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(import["status"], "failed");
    assert!(
        import["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{import}"
    );

    let (_, page) = api.get("/v1/imports?status=failed").await;
    assert_eq!(page["items"][0]["id"], id);
}

#[tokio::test]
async fn store_unavailable_is_503() {
    let api = api(1 << 20).await;
    let (status, _) = api.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);

    api.ctx.store.close().await;
    let (status, body) = api
        .post("/v1/sources/iceland/imports", "text/csv", ICELAND_CSV)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(code(&body), "store_unavailable");
    assert!(
        !body["error"]["message"].as_str().unwrap().contains("pool"),
        "5xx messages stay generic: {body}"
    );

    let (status, body) = api.get("/v1/imports").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(code(&body), "store_unavailable");

    let (status, body) = api.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(code(&body), "store_unavailable");

    let (status, body) = api.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "alive even without a store");
    assert_eq!(body, json!({ "status": "ok" }));
}

#[tokio::test]
async fn lists_page_by_cursor() {
    let api = api(1 << 20).await;
    let mut ids = Vec::new();
    // Three different payloads (a different trailing line each), so three imports.
    for i in 0..3 {
        let mut csv = ICELAND_CSV.to_vec();
        csv.extend_from_slice(
            format!("454321,4821,09/27,2,Visa,ICE-STORE-0457,2024-07-03 08:00:00,1.00,GBP,.00,GBP,extra-{i},1\r\n")
                .as_bytes(),
        );
        let (status, body) = api
            .post("/v1/sources/iceland/imports", "text/csv", &csv)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["import_id"].as_i64().unwrap());
    }

    let mut seen = Vec::new();
    let mut uri = "/v1/imports?source=iceland&limit=1".to_owned();
    loop {
        let (status, page) = api.get(&uri).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{page}");
        seen.push(items[0]["id"].as_i64().unwrap());
        match page["next_cursor"].as_i64() {
            Some(cursor) => uri = format!("/v1/imports?source=iceland&limit=1&cursor={cursor}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");

    // 4 fixture rows + its extra row from the first file, then only the
    // extra row of each later one (the rest are counted duplicates).
    let mut count = 0;
    let mut uri = "/v1/transactions?source=iceland&limit=1".to_owned();
    loop {
        let (status, page) = api.get(&uri).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        count += page["items"].as_array().unwrap().len();
        match page["next_cursor"].as_i64() {
            Some(cursor) => {
                uri = format!("/v1/transactions?source=iceland&limit=1&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(count, 7);

    let (_, page) = api.get("/v1/imports?status=parsed&limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_i64());
    let (_, page) = api.get("/v1/imports?source=dropbox").await;
    assert_eq!(page, json!({ "items": [], "next_cursor": null }));

    for bad in [
        "/v1/imports?status=done",
        "/v1/imports?limit=abc",
        "/v1/imports?limit=0",
        "/v1/imports?cursor=x",
        "/v1/transactions?import_id=x",
    ] {
        let (status, body) = api.get(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(code(&body), "bad_request", "{bad}");
    }
}

#[tokio::test]
async fn probes_plugins_and_json_errors_everywhere() {
    let api = api(1 << 20).await;
    assert_eq!(
        api.get("/healthz").await,
        (StatusCode::OK, json!({ "status": "ok" }))
    );
    let (status, _) = api.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);

    let (status, plugins) = api.get("/v1/plugins").await;
    assert_eq!(status, StatusCode::OK);
    let csv = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "csv")
        .unwrap_or_else(|| panic!("csv missing from {plugins}"));
    assert_eq!(csv["kind"], "parser");
    // What `accord plugin list` decodes.
    let infos: Vec<accord::plugins::PluginInfo> = serde_json::from_value(plugins.clone()).unwrap();
    assert!(infos.iter().any(|p| p.name == "csv"));

    let (status, body) = api.get("/v1/imports/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "not_found");
    let (status, body) = api.get("/v1/imports/999999/rejects").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "not_found");
    let (status, body) = api.get("/v1/imports/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "bad_request");
    let (status, body) = api.get("/v2/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "not_found");
    let (status, body) = api
        .send(
            Request::builder()
                .method(Method::DELETE)
                .uri("/v1/imports")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(code(&body), "method_not_allowed");
}
