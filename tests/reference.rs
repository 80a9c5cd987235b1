//! Reference data for matching (issue 4): merchants, MIDs and the card
//! registry through the HTTP API (`router` + `oneshot`), the store's
//! identification lookup, and `accord mids import` through the real binary —
//! each test on a fresh PostgreSQL database of its own.

use std::sync::Arc;

use accord::config::Config;
use accord::pipeline::Context;
use accord::store::{IdentifierType, Store};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support;

struct Api {
    store: Store,
    app: Router,
    db_url: String,
    dir: tempfile::TempDir,
    _db: DropDb,
}

/// Drops the test's database even when the test panics (on a thread of its
/// own: `Drop` runs inside the test's runtime).
struct DropDb(Option<support::TestDb>);

impl Drop for DropDb {
    fn drop(&mut self) {
        if let Some(db) = self.0.take() {
            let _ = std::thread::spawn(move || db.drop_blocking()).join();
        }
    }
}

/// A fresh database with merchants `iceland` and `wasabi` (no plugins:
/// reference data needs none).
async fn api() -> Api {
    let db = support::TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let plugins_dir = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins_dir).unwrap();
    let runtime = support::runtime(&plugins_dir, &dir.path().join("cache"));
    let config = json!({
        "database_url": db.url,
        "data_dir": dir.path().join("data"),
        "plugins_dir": plugins_dir,
    });
    let toml_path = dir.path().join("accord.toml");
    std::fs::write(&toml_path, support::config_toml(&config)).unwrap();
    let config = Config::load(Some(&toml_path), std::iter::empty()).unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    let ctx = Arc::new(Context {
        store: store.clone(),
        runtime,
        config: Arc::new(config),
    });
    let api = Api {
        store,
        app: accord::api::router(ctx),
        db_url: db.url.clone(),
        dir,
        _db: DropDb(Some(db)),
    };
    for (slug, name) in [("iceland", "Iceland Bonus Card"), ("wasabi", "Wasabi Club")] {
        let (status, body) = api
            .json(
                Method::POST,
                "/v1/merchants",
                json!({ "slug": slug, "name": name }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["mode"], "match");
        assert_eq!(body["match_unregistered_cards"], true);
    }
    api
}

impl Api {
    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "every answer is JSON ({status}: {})",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, body)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn delete(&self, uri: &str) -> (StatusCode, Value) {
        self.send(Request::delete(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn post(&self, uri: &str, content_type: &str, body: &[u8]) -> (StatusCode, Value) {
        self.send(
            Request::post(uri)
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body.to_vec()))
                .unwrap(),
        )
        .await
    }

    async fn json(&self, method: Method, uri: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            Request::builder()
                .method(method)
                .uri(uri)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }
}

const HEADER: &str = "identifier,identifier_type,provider,merchant,location_id,merchant_internal_id,location_name,postcode\n";

fn lines(report: &Value) -> Vec<u64> {
    report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn csv_onboarding_counts_duplicates_and_reports_bad_lines() {
    let api = api().await;
    let csv = format!(
        "{HEADER}\
         CAID001,primary,visa,iceland,L1,ICE-1,Iceland Leeds,LS1 1AA\n\
         51234567,secondary,visa,iceland,L1,ICE-1,Iceland Leeds,LS1 1AA\n\
         CAID001,primary,visa,iceland,L1,,,\n\
         ,primary,visa,iceland,L2,,,\n\
         CAID002,tertiary,visa,iceland,L2,,,\n\
         CAID003,primary,discover,iceland,L2,,,\n\
         CAID004,primary,visa,nobody,L2,,,\n\
         CAID001,primary,amex,wasabi,W1,,,\n"
    );
    let (status, report) = api.post("/v1/mids", "text/csv", csv.as_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["inserted"], 3, "{report}");
    assert_eq!(report["duplicates"], 1, "{report}");
    assert_eq!(lines(&report), [5, 6, 7, 8], "{report}");
    let reasons: Vec<&str> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("empty identifier"), "{reasons:?}");
    assert!(reasons[1].contains("tertiary"), "{reasons:?}");
    assert!(
        reasons[2].contains("unknown provider `discover`"),
        "{reasons:?}"
    );
    assert!(
        reasons[3].contains("unknown merchant `nobody`"),
        "{reasons:?}"
    );
    assert!(reasons[3].contains("POST /v1/merchants"), "{reasons:?}");

    // The same file again: everything good is now a duplicate.
    let (_, again) = api.post("/v1/mids", "text/csv", csv.as_bytes()).await;
    assert_eq!(again["inserted"], 0, "{again}");
    assert_eq!(again["duplicates"], 4, "{again}");

    let (_, page) = api.get("/v1/mids?merchant=iceland").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    let primary = items.iter().find(|m| m["identifier"] == "CAID001").unwrap();
    assert_eq!(primary["identifier_type"], "primary");
    assert_eq!(primary["provider"], "visa");
    assert_eq!(primary["location_id"], "L1");
    assert_eq!(primary["merchant_internal_id"], "ICE-1");
    assert_eq!(primary["location_name"], "Iceland Leeds");
    assert_eq!(primary["postcode"], "LS1 1AA");

    // A file without a required column is refused as a whole.
    let (status, body) = api
        .post("/v1/mids", "text/csv", b"identifier,provider\nx,visa\n")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "unreadable_file");
    let (status, body) = api.post("/v1/mids", "application/xml", b"<x/>").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
}

#[tokio::test]
async fn json_and_multipart_onboarding() {
    let api = api().await;
    let json = json!([
        {"identifier": "AMX1", "identifier_type": "primary", "provider": "amex",
         "merchant": "wasabi", "location_id": 17, "postcode": "EC1A 1BB"},
        {"identifier": "AMX1", "identifier_type": "primary", "provider": "amex", "merchant": "wasabi"},
        {"identifier": "AMX2", "identifier_type": "psimi", "provider": "AMEX", "merchant": "ghost"},
        "not an object"
    ]);
    let (status, report) = api
        .post("/v1/mids", "application/json", json.to_string().as_bytes())
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["inserted"], 1, "{report}");
    assert_eq!(report["duplicates"], 1, "{report}");
    assert_eq!(lines(&report), [3, 4], "{report}");

    let (_, page) = api.get("/v1/mids?identifier=AMX").await;
    assert_eq!(page["items"][0]["location_id"], "17", "{page}");

    let boundary = "XaccordX";
    let csv = format!(
        "{HEADER}MC1,primary,mastercard,iceland,L9,,,\nMC2,secondary,mastercard,iceland,L9,,,\n"
    );
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nignored\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"mids.csv\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n{csv}\r\n--{boundary}--\r\n"
    );
    let (status, report) = api
        .post(
            "/v1/mids",
            &format!("multipart/form-data; boundary={boundary}"),
            form.as_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["inserted"], 2, "{report}");
    assert_eq!(report["rejected"], json!([]));

    let no_file = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--{boundary}--\r\n"
    );
    let (status, body) = api
        .post(
            "/v1/mids",
            &format!("multipart/form-data; boundary={boundary}"),
            no_file.as_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn offboard_and_update() {
    let api = api().await;
    let csv = format!(
        "{HEADER}\
         V1,primary,visa,iceland,L1,,,\n\
         V2,secondary,visa,iceland,L1,,,\n\
         V3,primary,visa,iceland,L2,,,\n\
         V1,primary,amex,iceland,L1,,,\n\
         W1,primary,visa,wasabi,L1,,,\n"
    );
    let (_, report) = api.post("/v1/mids", "text/csv", csv.as_bytes()).await;
    assert_eq!(report["inserted"], 5, "{report}");

    let (status, body) = api
        .delete("/v1/mids?identifier=V1&identifier_type=primary&provider=visa")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["removed"], 1);
    let (_, page) = api.get("/v1/mids?identifier=V1").await;
    let left: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["provider"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["amex"], "only the visa V1 went: {page}");

    // By location: only that merchant's location.
    let (_, body) = api.delete("/v1/mids?merchant=iceland&location_id=L1").await;
    assert_eq!(body["removed"], 2, "{body}");
    let (_, page) = api.get("/v1/mids?location_id=L1").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["items"][0]["merchant"], "wasabi");

    let (status, body) = api.delete("/v1/mids?identifier=V3").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");

    // Update location / internal id.
    let (_, page) = api.get("/v1/mids?identifier=V3").await;
    let id = page["items"][0]["id"].as_i64().unwrap();
    let (status, mid) = api
        .json(
            Method::PATCH,
            &format!("/v1/mids/{id}"),
            json!({ "location_id": "L7", "merchant_internal_id": "ICE-7" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{mid}");
    assert_eq!(mid["location_id"], "L7");
    assert_eq!(mid["merchant_internal_id"], "ICE-7");
    let (_, mid) = api
        .json(
            Method::PATCH,
            &format!("/v1/mids/{id}"),
            json!({ "merchant_internal_id": "" }),
        )
        .await;
    assert_eq!(mid["location_id"], "L7", "untouched: {mid}");
    assert_eq!(mid["merchant_internal_id"], Value::Null, "cleared: {mid}");
    let at = api.store.mids_at_location("iceland", "L7").await.unwrap();
    assert_eq!(at.len(), 1);
    assert_eq!(at[0].identifier, "V3");

    let (status, body) = api
        .json(
            Method::PATCH,
            "/v1/mids/999999",
            json!({ "location_id": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn list_and_search_page_through_everything() {
    let api = api().await;
    let mut csv = HEADER.to_owned();
    for i in 0..25 {
        let merchant = if i % 5 == 0 { "wasabi" } else { "iceland" };
        csv.push_str(&format!("VS{i:03},primary,visa,{merchant},L{},,,\n", i % 3));
    }
    for i in 0..5 {
        csv.push_str(&format!("MC{i:03},primary,mastercard,iceland,L0,,,\n"));
    }
    let (_, report) = api.post("/v1/mids", "text/csv", csv.as_bytes()).await;
    assert_eq!(report["inserted"], 30, "{report}");

    let mut seen = Vec::new();
    let mut uri = "/v1/mids?provider=visa&limit=7".to_owned();
    loop {
        let (status, page) = api.get(&uri).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for m in page["items"].as_array().unwrap() {
            assert_eq!(m["provider"], "visa");
            seen.push(m["id"].as_i64().unwrap());
        }
        match page["next_cursor"].as_i64() {
            Some(c) => uri = format!("/v1/mids?provider=visa&limit=7&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats"
    );

    let (_, page) = api.get("/v1/mids?merchant=wasabi").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    let (_, page) = api.get("/v1/mids?identifier=VS01").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 10, "VS010..VS019");
    let (_, page) = api
        .get("/v1/mids?merchant=iceland&location_id=L0&provider=mastercard")
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    let (status, _) = api.get("/v1/mids?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, merchants) = api.get("/v1/merchants").await;
    let slugs: Vec<&str> = merchants["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["iceland", "wasabi"]);
    let (status, body) = api
        .json(
            Method::POST,
            "/v1/merchants",
            json!({ "slug": "Bad Slug", "name": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = api
        .json(
            Method::POST,
            "/v1/merchants",
            json!({ "slug": "squaremeal", "name": "Squaremeal", "mode": "stream",
                    "match_unregistered_cards": false }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mode"], "stream");
    assert_eq!(body["match_unregistered_cards"], false);
}

#[tokio::test]
async fn resolve_keeps_the_best_type_and_ignores_zero() {
    let api = api().await;
    let csv = format!(
        "{HEADER}\
         P1,primary,visa,iceland,L1,,,\n\
         S1,secondary,visa,iceland,L1,,,\n\
         S2,secondary,visa,iceland,L2,,,\n\
         X1,psimi,visa,iceland,,,,\n\
         0,psimi,visa,wasabi,,,,\n\
         P1,primary,amex,wasabi,,,,\n"
    );
    let (_, report) = api.post("/v1/mids", "text/csv", csv.as_bytes()).await;
    assert_eq!(report["inserted"], 6, "{report}");
    use IdentifierType::{Primary, Psimi, Secondary};
    let store = &api.store;

    // Primary wins over secondary and psimi hits.
    let r = store
        .resolve_mids("visa", &[(Primary, "P1"), (Secondary, "S1"), (Psimi, "X1")])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.merchant, "iceland");
    assert_eq!(r.identifier_type, Primary);
    assert_eq!(
        r.mids
            .iter()
            .map(|m| m.identifier.as_str())
            .collect::<Vec<_>>(),
        ["P1"]
    );

    // No primary hit: both secondary hits, not the psimi one.
    let r = store
        .resolve_mids(
            "visa",
            &[
                (Primary, "nope"),
                (Secondary, "S1"),
                (Secondary, "S2"),
                (Psimi, "X1"),
            ],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.identifier_type, Secondary);
    assert_eq!(r.mids.len(), 2);

    // "0" and "" are no identifier, even though "0" is registered (for wasabi).
    let r = store
        .resolve_mids("visa", &[(Secondary, ""), (Psimi, "0"), (Psimi, "X1")])
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.merchant.as_str(), r.identifier_type), ("iceland", Psimi));
    assert!(
        store
            .resolve_mids("visa", &[(Psimi, "0"), (Secondary, "")])
            .await
            .unwrap()
            .is_none()
    );

    // Per provider: the amex P1 is wasabi's; unknown provider → none.
    let r = store
        .resolve_mids("amex", &[(Primary, "P1")])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.merchant, "wasabi");
    assert!(
        store
            .resolve_mids("mastercard", &[(Primary, "P1")])
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn card_registry_import_and_get() {
    let api = api().await;
    let csv = b"card_token,first_six,last_four,loyalty_id\n\
                tok-1,123456,4321,LOY-1\n\
                tok-2,12345,4321,LOY-2\n\
                ,123456,4321,LOY-3\n\
                tok-3,,9876,\n\
                tok-1,123456,1111,LOY-1b\n";
    let (status, report) = api.post("/v1/cards", "text/csv", csv).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["upserted"], 2, "{report}");
    assert_eq!(lines(&report), [3, 4], "{report}");

    let (status, card) = api.get("/v1/cards/tok-1").await;
    assert_eq!(status, StatusCode::OK, "{card}");
    assert_eq!(card["first_six"], "123456");
    assert_eq!(card["last_four"], "1111", "the later line wins: {card}");
    assert_eq!(card["loyalty_id"], "LOY-1b");
    let (_, card) = api.get("/v1/cards/tok-3").await;
    assert_eq!(card["first_six"], Value::Null);
    assert_eq!(card["last_four"], "9876");

    // JSON replaces an existing entry.
    let json = json!([{ "card_token": "tok-3", "first_six": "654321", "last_four": "9876", "loyalty_id": "LOY-3" }]);
    let (_, report) = api
        .post("/v1/cards", "application/json", json.to_string().as_bytes())
        .await;
    assert_eq!(report["upserted"], 1, "{report}");
    let (_, card) = api.get("/v1/cards/tok-3").await;
    assert_eq!(card["first_six"], "654321");
    assert_eq!(card["loyalty_id"], "LOY-3");

    let (status, body) = api.get("/v1/cards/tok-unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn cli_mids_import_through_the_binary() {
    let api = api().await;
    let dir = api.dir.path();
    let config = dir.join("cli.toml");
    std::fs::write(
        &config,
        support::config_toml(&json!({
            "database_url": api.db_url,
            "data_dir": dir.join("cli-data"),
            "plugins_dir": dir.join("plugins"),
        })),
    )
    .unwrap();
    let run = |args: &[&str]| {
        // Blocking is fine here: nothing else runs on this test's runtime.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_accord"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("ACCORD_CONFIG")
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, out, err) = run(&[
        "merchants",
        "add",
        "costa",
        "--name",
        "Costa",
        "--mode",
        "match",
    ]);
    assert!(ok, "{out}\n{err}");

    let good = dir.join("good.csv");
    std::fs::write(
        &good,
        format!("{HEADER}C1,primary,visa,costa,L1,,,\nC2,primary,visa,costa,L1,,,\n"),
    )
    .unwrap();
    let (ok, out, err) = run(&["mids", "import", good.to_str().unwrap()]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("inserted"), "{out}");

    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        json!([
            {"identifier": "C1", "identifier_type": "primary", "provider": "visa", "merchant": "costa"},
            {"identifier": "C3", "identifier_type": "primary", "provider": "visa", "merchant": "costa"},
            {"identifier": "C4", "identifier_type": "bogus", "provider": "visa", "merchant": "costa"}
        ])
        .to_string(),
    )
    .unwrap();
    let (ok, out, err) = run(&["mids", "import", bad.to_str().unwrap()]);
    assert!(!ok, "a bad line makes the exit non-zero\n{out}\n{err}");
    assert!(
        err.contains("bad.json:3: unknown identifier_type `bogus`"),
        "{err}"
    );

    let page = api
        .store
        .list_mids(&accord::store::MidFilter {
            merchant: Some("costa".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<&str> = page.items.iter().map(|m| m.identifier.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["C1", "C2", "C3"],
        "good lines loaded, the duplicate once"
    );

    let (ok, out, err) = run(&["mids", "list", "--merchant", "costa"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("C3") && out.contains("costa"), "{out}");

    // Update, offboard one, offboard a location.
    let c3 = page.items.iter().find(|m| m.identifier == "C3").unwrap().id;
    let (ok, out, err) = run(&["mids", "update", &c3.to_string(), "--location-id", "L9"]);
    assert!(ok && out.contains("location L9"), "{out}\n{err}");
    let (ok, out, err) = run(&[
        "mids",
        "remove",
        "--identifier",
        "C3",
        "--type",
        "primary",
        "--provider",
        "visa",
    ]);
    assert!(ok && out.contains("1 MID(s) removed"), "{out}\n{err}");
    let (ok, out, err) = run(&[
        "mids",
        "remove",
        "--merchant",
        "costa",
        "--location-id",
        "L1",
    ]);
    assert!(ok && out.contains("2 MID(s) removed"), "{out}\n{err}");
    let (ok, _, err) = run(&["mids", "remove", "--identifier", "C1"]);
    assert!(!ok, "type and provider are required with --identifier");
    assert!(err.contains("--type") || err.contains("required"), "{err}");
    let left = api
        .store
        .list_mids(&accord::store::MidFilter {
            merchant: Some("costa".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(left.items.is_empty(), "{:?}", left.items);

    // Matching settings from the CLI; a bad one is refused naming the flag.
    let (ok, out, err) = run(&[
        "merchants",
        "add",
        "stonegate",
        "--name",
        "Stonegate",
        "--unmatched-after-days",
        "2",
        "--tolerance-minor",
        "3",
    ]);
    assert!(ok, "{out}\n{err}");
    let m = api.store.get_merchant("stonegate").await.unwrap().unwrap();
    assert_eq!(
        (m.settings.unmatched_after_days, m.settings.tolerance_minor),
        (Some(2), 3)
    );
    let (ok, _, err) = run(&[
        "merchants",
        "add",
        "stonegate",
        "--name",
        "S",
        "--tolerance-bp",
        "5000",
    ]);
    assert!(!ok && err.contains("--tolerance-bp"), "{err}");
}
