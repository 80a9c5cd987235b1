//! The real `accord run` binary: inbox and HTTP in, HTTP API out, and the
//! crash test (SIGKILL at random points of a multi-file import, restart,
//! exactly once and no file lost).

use crate::support::{self, TestDb, archived, drop_file, files_in, install_example, shop_csv};
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One daemon's world on disk: config, data dir, plugins.
struct World {
    root: tempfile::TempDir,
    port: u16,
}

impl World {
    fn new(db: &TestDb, sources: Value) -> World {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        install_example(&data.join("plugins"), "csv");
        // Every daemon of the run shares one compile cache: each start would
        // otherwise compile the plugin afresh.
        let cache = support::shared_cache_dir();
        std::fs::create_dir_all(&cache).unwrap();
        std::os::unix::fs::symlink(&cache, data.join("cache")).unwrap();
        let port = free_port();
        let config = support::config_toml(&json!({
            "database_url": db.url,
            "data_dir": "data",
            "listen": format!("127.0.0.1:{port}"),
            "max_body_bytes": 1_000_000,
            "sources": sources,
        }));
        std::fs::write(root.path().join("accord.toml"), config).unwrap();
        World { root, port }
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn inbox(&self, source: &str) -> PathBuf {
        self.data().join("inbox").join(source)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Start `accord run` and wait until it answers.
    fn start(&self) -> Daemon {
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.root.path().join(name))
                .unwrap()
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_accord"));
        cmd.arg("run")
            .arg("--config")
            .arg(self.root.path().join("accord.toml"))
            .current_dir(self.root.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log("daemon.out"))
            .stderr(log("daemon.err"));
        for (k, _) in std::env::vars() {
            if k.starts_with("ACCORD_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("starting accord run");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("accord run exited early ({status}):\n{}", self.logs());
            }
            if let Ok((200, _)) = get(&self.url("/healthz")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "accord run did not come up:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon { child }
    }

    fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.root.path().join(n)).unwrap_or_default();
        format!(
            "--- stdout\n{}\n--- stderr (tail)\n{}",
            read("daemon.out"),
            read("daemon.err")
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

struct Daemon {
    child: Child,
}

impl Daemon {
    fn kill(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status of the graceful shutdown.
    fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("accord run ignored SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn get(url: &str) -> Result<(u16, Value), ureq::Error> {
    let mut resp = agent().get(url).call()?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_json::<Value>().unwrap_or(Value::Null);
    Ok((status, body))
}

fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let mut resp = agent()
        .post(url)
        .header("content-type", content_type)
        .send(body)
        .expect("POST");
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_json::<Value>().unwrap_or(Value::Null);
    (status, body)
}

/// Send only the head of a POST declaring `length` body bytes; read the answer.
fn declare_only(world: &World, path: &str, length: u64) -> (u16, Value) {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", world.port)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/csv\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_response(stream)
}

/// POST `size` bytes chunked, in 64 KiB chunks, stopping quietly if the
/// server stops reading; read the answer.
fn post_chunked(world: &World, path: &str, size: usize) -> (u16, Value) {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", world.port)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/csv\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        let n = chunk.len().min(size - sent);
        if write!(stream, "{n:x}\r\n")
            .and_then(|_| stream.write_all(&chunk[..n]))
            .and_then(|_| stream.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
        sent += n;
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    read_response(stream)
}

fn read_response(mut stream: std::net::TcpStream) -> (u16, Value) {
    use std::io::Read as _;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // The body is JSON, possibly in one chunk of a chunked response.
    let json = body
        .find('{')
        .and_then(|start| body.rfind('}').map(|end| &body[start..=end]))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

fn shop_source(inbox: bool) -> Value {
    let mut s = json!({
        "name": "shop", "side": "merchant", "parser": "csv",
        "config": support::shop_csv_config(),
    });
    if inbox {
        s["inbox"] = json!({ "path": "data/inbox/shop", "glob": "*.csv" });
    }
    s
}

#[test]
fn daemon_takes_inbox_and_http_imports_and_serves_them_back() {
    let db = TestDb::create_blocking();
    let world = World::new(
        &db,
        json!([
            {
                "name": "iceland", "side": "merchant", "parser": "csv",
                "content_types": ["text/csv"],
                "inbox": { "path": "data/inbox/iceland", "glob": "*.csv" },
                "config": support::iceland_config(),
            },
            shop_source(false),
        ]),
    );
    let daemon = world.start();
    let out = std::fs::read_to_string(world.root.path().join("daemon.out")).unwrap();
    assert!(
        out.contains(&world.inbox("iceland").display().to_string()),
        "start-up says where the inbox is:\n{out}"
    );

    // Directory channel.
    let iceland = std::fs::read(support::fixture("csv", "iceland.csv")).unwrap();
    drop_file(&world.inbox("iceland"), "day-1.csv", &iceland);

    // HTTP channel, while the file is being taken in.
    let (status, body) = post(
        &world.url("/v1/sources/shop/imports?name=batch-1.csv"),
        "text/csv",
        &shop_csv(1..=3),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "parsed");
    assert_eq!(body["counts"]["accepted"], 3);
    let id = body["import_id"].as_i64().unwrap();
    let (status, import) = get(&world.url(&format!("/v1/imports/{id}"))).unwrap();
    assert_eq!(status, 200);
    assert_eq!(import["channel"], "http");
    assert_eq!(import["status"], "parsed");
    assert_eq!(import["counts"]["accepted"], 3);

    // The same payload again is a duplicate (200), nothing new.
    let (status, body) = post(
        &world.url("/v1/sources/shop/imports"),
        "text/csv",
        &shop_csv(1..=3),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "duplicate");
    assert_eq!(body["duplicate_of"], id);

    // Bad input: each a JSON error with a stable code, and the daemon goes on.
    let (status, body) = post(&world.url("/v1/sources/nope/imports"), "text/csv", b"x");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_source"))
    );
    let (status, body) = post(
        &world.url("/v1/sources/iceland/imports"),
        "application/json",
        b"{}",
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_content_type"))
    );
    let (status, body) = post(
        &world.url("/v1/sources/shop/imports"),
        "text/csv",
        b"not,the,header\n1,2,3\n",
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("unparseable")),
        "{body}"
    );
    // Over the limit: refused on the declared length, before any body is
    // sent (a client still sending would see the connection close instead).
    let (status, body) = declare_only(&world, "/v1/sources/shop/imports", 1_000_001);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    // A chunked body (no length) that runs over is stopped by the pipeline.
    let (status, body) = post_chunked(&world, "/v1/sources/shop/imports", 1_000_001);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );

    // The inbox file, read back through the API.
    support::wait_until("the inbox to empty", Duration::from_secs(30), || {
        files_in(&world.inbox("iceland")).is_empty()
    });
    assert_eq!(archived(&world.data(), "iceland"), ["day-1.csv"]);
    let (_, page) = get(&world.url("/v1/imports?source=iceland")).unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["status"], "parsed");
    assert_eq!(items[0]["channel"], "directory");
    assert_eq!(items[0]["counts"]["accepted"], 4);
    assert_eq!(items[0]["counts"]["rejected"], 2);
    let (_, txs) = get(&world.url("/v1/transactions?source=iceland")).unwrap();
    assert_eq!(txs["items"].as_array().unwrap().len(), 4, "{txs}");
    let (_, txs) = get(&world.url("/v1/transactions?source=shop")).unwrap();
    assert_eq!(txs["items"].as_array().unwrap().len(), 3, "{txs}");
    let (status, _) = get(&world.url("/readyz")).unwrap();
    assert_eq!(status, 200);

    let status = daemon.terminate();
    assert!(
        status.success(),
        "graceful shutdown: {status}\n{}",
        world.logs()
    );
    db.drop_blocking();
}

/// Files of one crash trial: `FILES` files of `ROWS` rows, each overlapping
/// the next by `OVERLAP` ids (cross-file duplicates).
const FILES: u64 = 5;
const ROWS: u64 = 10_000;
const OVERLAP: u64 = 1_000;

fn trial_files() -> Vec<(String, Vec<u8>)> {
    (0..FILES)
        .map(|f| {
            let first = f * (ROWS - OVERLAP) + 1;
            (format!("batch-{f}.csv"), shop_csv(first..first + ROWS))
        })
        .collect()
}

fn unique_rows() -> u64 {
    (FILES - 1) * (ROWS - OVERLAP) + ROWS
}

#[test]
fn sigkill_at_random_points_loses_nothing_and_stores_every_row_once() {
    let seed: u64 = std::env::var("ACCORD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let trials: u32 = std::env::var("ACCORD_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    eprintln!("crash test: seed {seed} ({trials} trials; rerun with ACCORD_CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let files = trial_files();
    for trial in 0..trials {
        let delay = Duration::from_millis(rng.random_range(200..1600));
        let kills = rng.random_range(1..=2u32);
        crash_trial(trial, seed, delay, kills, &files);
    }
}

fn crash_trial(trial: u32, seed: u64, delay: Duration, kills: u32, files: &[(String, Vec<u8>)]) {
    let db = TestDb::create_blocking();
    let world = World::new(&db, json!([shop_source(true)]));
    let inbox = world.inbox("shop");
    let ctx = format!("trial {trial} (seed {seed}, kill after {delay:?}, {kills} kill(s))");

    let daemon = world.start();
    for (name, bytes) in files {
        drop_file(&inbox, name, bytes);
    }
    std::thread::sleep(delay);
    daemon.kill();
    // Where the kill landed, for the record (a good seed mix hits before,
    // during and after the imports).
    eprintln!(
        "{ctx}: killed with {} file(s) in the inbox, {} archived",
        files_in(&inbox).len(),
        archived(&world.data(), "shop").len()
    );
    for _ in 1..kills {
        // Killed again during recovery.
        let daemon = world.start();
        std::thread::sleep(delay / 2);
        daemon.kill();
    }

    let daemon = world.start();
    let failed = world.data().join("failed").join("shop");
    let deadline = Instant::now() + Duration::from_secs(60);
    while archived(&world.data(), "shop").len() + files_in(&failed).len() < files.len() {
        assert!(
            Instant::now() < deadline,
            "{ctx}: files not all disposed: inbox {:?}, archive {:?}, failed {:?}\n{}",
            files_in(&inbox),
            archived(&world.data(), "shop"),
            files_in(&failed),
            world.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Every file in exactly one of inbox / archive / failed (and here:
    // archive, since every file is good).
    let inbox_now = files_in(&inbox);
    let archive_now = archived(&world.data(), "shop");
    let failed_now = files_in(&failed);
    for (name, _) in files {
        let places = [&inbox_now, &archive_now, &failed_now]
            .iter()
            .map(|names| names.iter().filter(|n| *n == name).count())
            .sum::<usize>();
        assert_eq!(places, 1, "{ctx}: {name} is in {places} places");
    }
    assert!(inbox_now.is_empty(), "{ctx}: inbox {inbox_now:?}");
    assert!(
        failed_now.is_empty(),
        "{ctx}: failed {failed_now:?}\n{}",
        world.logs()
    );

    // Every row stored exactly once, and no import recorded twice.
    let (transactions, distinct, parsed, other, accepted): (i64, i64, i64, i64, i64) =
        support::block_on(async {
            let store = accord::store::Store::connect(&db.url).await.unwrap();
            let row = sqlx::query_as(
                "SELECT (SELECT count(*) FROM transactions WHERE source = 'shop'), \
                        (SELECT count(DISTINCT external_id) FROM transactions WHERE source = 'shop'), \
                        (SELECT count(*) FROM imports WHERE status = 'parsed'), \
                        (SELECT count(*) FROM imports WHERE status <> 'parsed'), \
                        (SELECT coalesce(sum(accepted), 0)::bigint FROM imports)",
            )
            .fetch_one(store.pool())
            .await
            .unwrap();
            store.close().await;
            row
        });
    assert_eq!(transactions as u64, unique_rows(), "{ctx}");
    assert_eq!(distinct, transactions, "{ctx}");
    assert_eq!(accepted, transactions, "{ctx}: accepted counts add up");
    assert_eq!(parsed as u64, FILES, "{ctx}: one parsed import per file");
    assert_eq!(other, 0, "{ctx}: no duplicate, failed or pending imports");

    let status = daemon.terminate();
    assert!(status.success(), "{ctx}: {status}");
    db.drop_blocking();
    drop(world);
}
