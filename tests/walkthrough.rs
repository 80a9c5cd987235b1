//! The README's matching walkthrough, done by the real `accord run` binary on
//! the shipped example config: onboard a merchant, its MIDs and a card over
//! HTTP, drop a Visa file and an Iceland file into the inboxes, and see the
//! match (and why) through the API. Then the redress endpoints: tokens,
//! force match, merchant settings.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{self, TestDb, drop_file, install_example};

const TOKEN: &str = "dev-only-token-change-me";

struct Daemon {
    child: Child,
    root: tempfile::TempDir,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// `accord run` on examples/accord.toml with its `../accord-data` paths
    /// moved into a temporary directory, on `db`.
    fn start(db: &TestDb) -> Daemon {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("accord-data");
        for p in [
            "csv",
            "mastercard-tgx2",
            "visa-vop",
            "psp-xml",
            "merchant-feeds",
            "harmonia",
        ] {
            install_example(&data.join("plugins"), p);
        }
        std::os::unix::fs::symlink(support::shared_cache_dir(), data.join("cache")).unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let example =
            std::fs::read_to_string(support::workspace().join("examples/accord.toml")).unwrap();
        let config = example.replace("../accord-data", data.to_str().unwrap());
        let config_path = root.path().join("accord.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = |name: &str| std::fs::File::create(root.path().join(name)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_accord"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log("daemon.out"))
            .stderr(log("daemon.err"));
        for (k, _) in std::env::vars() {
            if k.starts_with("ACCORD_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ACCORD_DATABASE_URL", &db.url)
            .env("ACCORD_LISTEN", format!("127.0.0.1:{port}"));
        let child = cmd.spawn().expect("starting accord run");
        let daemon = Daemon { child, root, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(daemon.get("/healthz"), (200, _)) {
            assert!(Instant::now() < deadline, "no daemon:\n{}", daemon.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.root.path().join(n)).unwrap_or_default();
        let err = read("daemon.err");
        let tail: Vec<&str> = err.lines().rev().take(40).collect();
        format!(
            "--- stdout\n{}\n--- stderr (tail)\n{}",
            read("daemon.out"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    fn inbox(&self, source: &str) -> std::path::PathBuf {
        self.root.path().join("accord-data/inbox").join(source)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let url = self.url(path);
        let response = match method {
            "GET" => {
                let mut r = agent.get(&url);
                if let Some(t) = token {
                    r = r.header("authorization", &format!("Bearer {t}"));
                }
                r.call()
            }
            m => {
                let mut r = match m {
                    "POST" => agent.post(&url),
                    "PATCH" => agent.patch(&url),
                    other => panic!("method {other}"),
                };
                if let Some(t) = token {
                    r = r.header("authorization", &format!("Bearer {t}"));
                }
                r.header("content-type", content_type).send(body)
            }
        };
        match response {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let text = r.body_mut().read_to_string().unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, None, "", b"")
    }

    fn post_json(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send(
            "POST",
            path,
            token,
            "application/json",
            body.to_string().as_bytes(),
        )
    }

    /// Poll `path` until `ready` says yes (the daemon works asynchronously).
    fn wait_for(&self, path: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.get(path);
            if status == 200 && ready(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: last answer {status} {body}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn walkthrough_file(name: &str) -> Vec<u8> {
    std::fs::read(support::workspace().join("examples/walkthrough").join(name)).unwrap()
}

fn send_file(d: &Daemon, path: &str, file: &Path) -> (u16, Value) {
    d.send(
        "POST",
        path,
        None,
        "text/csv",
        &std::fs::read(file).unwrap(),
    )
}

#[test]
fn readme_walkthrough_matches_a_visa_payment_to_an_iceland_record() {
    let db = TestDb::create_blocking();
    let d = Daemon::start(&db);
    let walkthrough = support::workspace().join("examples/walkthrough");

    // 1. Onboard: the merchant, its MIDs, the cardholder's card.
    let (status, merchant) = d.post_json(
        "/v1/merchants",
        None,
        json!({"slug": "iceland-bonus-card", "name": "Iceland"}),
    );
    assert_eq!(status, 200, "{merchant}");
    assert_eq!(merchant["matcher"], "harmonia");
    assert_eq!(merchant["lookback_days"], 14);
    let (status, mids) = send_file(&d, "/v1/mids", &walkthrough.join("mids.csv"));
    assert_eq!(
        (status, mids["inserted"].as_u64()),
        (200, Some(3)),
        "{mids}"
    );
    let (status, cards) = send_file(&d, "/v1/cards", &walkthrough.join("cards.csv"));
    assert_eq!(
        (status, cards["upserted"].as_u64()),
        (200, Some(1)),
        "{cards}"
    );

    // 2. Drop the Visa auth and the Iceland file into their inboxes.
    drop_file(
        &d.inbox("visa-auth"),
        "visa-auth.ndjson",
        &walkthrough_file("visa-auth.ndjson"),
    );
    drop_file(
        &d.inbox("iceland"),
        "iceland.csv",
        &walkthrough_file("iceland.csv"),
    );

    // 3. The match, through the API.
    let matches = d.wait_for(
        "/v1/matches?merchant=iceland-bonus-card",
        "the walkthrough's match",
        |b| b["items"].as_array().is_some_and(|i| !i.is_empty()),
    );
    let items = matches["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{matches}");
    let m = &items[0];
    assert_eq!(m["kind"], "matched");
    assert_eq!(m["actor"], "plugin:harmonia@0.1.0");
    assert_eq!(m["plugin"]["name"], "harmonia");
    assert_eq!(m["candidates"], 2);
    assert_eq!(m["confidence"], 90);
    assert_eq!(
        m["reason"],
        "visa: auth-code → 2 candidates; time-window(60s) → 1 candidate"
    );
    // Which Iceland row: the one at the payment's second, not the decoy
    // two minutes later with the same amount and auth code.
    let merchant_tx = m["merchant_transaction_id"].as_i64().unwrap();
    let (status, explained) = d.get(&format!("/v1/transactions/{merchant_tx}"));
    assert_eq!(status, 200, "{explained}");
    assert_eq!(explained["transaction"]["external_id"], "ICE-WALK-0001");
    assert_eq!(explained["stage"], "matched");
    let payment_tx = m["payment_transaction_id"].as_i64().unwrap();
    let (_, explained) = d.get(&format!("/v1/transactions/{payment_tx}"));
    assert_eq!(
        explained["transaction"]["external_id"],
        "V0FMSy1WSVNBLTAwMDE"
    );
    assert_eq!(explained["stage"], "matched");
    assert_eq!(explained["payment"]["merchant"], "iceland-bonus-card");
    assert_eq!(explained["match"]["plugin"]["version"], "0.1.0");
    let stages: Vec<&str> = explained["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["stage"].as_str().unwrap())
        .collect();
    for stage in [
        "import parsed",
        "payment created",
        "matching attempt",
        "matched",
    ] {
        assert!(stages.contains(&stage), "{stage} missing from {stages:?}");
    }

    // The decoy stays pending on the merchant side.
    let decoy = d.get("/v1/transactions?source=iceland").1["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["external_id"] == "ICE-WALK-0002")
        .cloned()
        .unwrap();
    let (_, decoy) = d.get(&format!("/v1/transactions/{}", decoy["id"]));
    assert_eq!(decoy["stage"], "pending");
    assert_eq!(decoy["scheme"]["mids"], json!(["CAID77001234"]));

    // 4. Redress needs a token; the matched payment cannot be forced again.
    let body = json!({
        "payment_transaction_id": payment_tx,
        "merchant_transaction_id": decoy["transaction"]["id"],
        "reason": "operator says so",
    });
    let (status, e) = d.post_json("/v1/matches", None, body.clone());
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, e) = d.post_json("/v1/matches", Some("not-a-token"), body.clone());
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, e) = d.post_json("/v1/matches", Some(TOKEN), body);
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{e}"
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("matched"),
        "{e}"
    );

    // 5. A second Visa purchase with no merchant record yet stays pending;
    //    force-matching it to the decoy is recorded with the token's name.
    let second = String::from_utf8(walkthrough_file("visa-auth.ndjson"))
        .unwrap()
        .replace("V0FMSy1WSVNBLTAwMDE", "V0FMSy1WSVNBLTAwMDI")
        .replace("\"24.50\"", "\"11.00\"");
    let (status, imported) = d.send(
        "POST",
        "/v1/sources/visa-auth/imports",
        None,
        "application/octet-stream",
        second.as_bytes(),
    );
    assert_eq!(status, 201, "{imported}");
    let second_tx = d.wait_for(
        "/v1/payments?merchant=iceland-bonus-card&status=pending",
        "the second payment pending after its first attempt",
        |b| {
            b["items"]
                .as_array()
                .is_some_and(|i| i.len() == 1 && i[0]["attempts"].as_i64() >= Some(1))
        },
    )["items"][0]["transaction_id"]
        .as_i64()
        .unwrap();
    // By status: the first purchase alone is matched (`payments_status`
    // leaves matched payments out; both lists must still be right).
    let (_, matched) = d.get("/v1/payments?merchant=iceland-bonus-card&status=matched");
    let matched = matched["items"].as_array().unwrap();
    assert_eq!(matched.len(), 1, "{matched:?}");
    assert_ne!(matched[0]["transaction_id"].as_i64(), Some(second_tx));
    assert_eq!(matched[0]["status"], "matched", "{matched:?}");
    let (_, explained) = d.get(&format!("/v1/transactions/{second_tx}"));
    assert_eq!(explained["payment"]["last_candidates"], 0, "{explained}");
    assert!(
        explained["payment"]["last_reason"]
            .as_str()
            .unwrap()
            .starts_with("no candidates"),
        "{explained}"
    );
    let (status, forced) = d.post_json(
        "/v1/matches",
        Some(TOKEN),
        json!({
            "payment_transaction_id": second_tx,
            "merchant_transaction_id": decoy["transaction"]["id"],
            "reason": "till receipt checked by hand",
        }),
    );
    assert_eq!(status, 201, "{forced}");
    assert_eq!(forced["kind"], "forced");
    assert_eq!(forced["actor"], "api:ops");
    assert_eq!(forced["reason"], "till receipt checked by hand");
    let (_, explained) = d.get(&format!("/v1/transactions/{second_tx}"));
    assert_eq!(explained["stage"], "forced");

    // 6. Merchant settings: validated, unknown merchant 404.
    let patch = |slug: &str, body: Value| {
        d.send(
            "PATCH",
            &format!("/v1/merchants/{slug}"),
            None,
            "application/json",
            body.to_string().as_bytes(),
        )
    };
    let (status, m) = patch(
        "iceland-bonus-card",
        json!({"tolerance_minor": 5, "auto_confirm_confidence": 95, "unmatched_after_days": 3}),
    );
    assert_eq!(status, 200, "{m}");
    assert_eq!(
        (
            &m["tolerance_minor"],
            &m["auto_confirm_confidence"],
            &m["unmatched_after_days"]
        ),
        (&json!(5), &json!(95), &json!(3))
    );
    let (status, m) = patch("iceland-bonus-card", json!({"unmatched_after_days": null}));
    assert_eq!((status, &m["unmatched_after_days"]), (200, &Value::Null));
    let (status, e) = patch("iceland-bonus-card", json!({"tolerance_bp": 5000}));
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tolerance_bp")
    );
    let (status, e) = patch("iceland-bonus-card", json!({"tolerence_minor": 1}));
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tolerence_minor")
    );
    let (status, _) = patch("nobody", json!({"tolerance_minor": 1}));
    assert_eq!(status, 404);
    let (status, e) = d.get("/v1/matches?kind=sideways");
    assert_eq!(status, 400, "{e}");
    let (status, _) = d.get("/v1/transactions/999999");
    assert_eq!(status, 404);

    drop(d);
    db.drop_blocking();
}
