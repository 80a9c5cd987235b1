//! Shared test support: builds every plugin and test guest to a component
//! once per test run (in its own target dir, like wasmtime's test-programs),
//! and installs them into temporary plugins directories.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// Where guest builds go: beside the main target dir, so `cargo test` and
/// this build never wait on each other's lock.
pub fn guest_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d).join("guests"),
        None => workspace().join("target/guests"),
    }
}

const PLUGINS: &[&str] = &[
    "csv",
    "mastercard-tgx2",
    "visa-vop",
    "psp-xml",
    "amex",
    "mastercard-auth",
    "merchant-feeds",
    "harmonia",
];
const GUESTS: &[&str] = &[
    "spin-loop",
    "mem-bomb",
    "panicker",
    "escape-fs",
    "escape-net",
    "escape-env",
    "echo-v1",
    "echo-v2",
    "future-major",
];

/// Build all components once; returns the directory holding `<crate>.wasm`.
pub fn components() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.current_dir(workspace())
            .args([
                "build",
                "--profile",
                "plugin",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(guest_target_dir());
        for p in PLUGINS {
            cmd.args(["-p", &format!("accord-plugin-{p}")]);
        }
        for g in GUESTS {
            cmd.args(["-p", &format!("accord-guest-{g}")]);
        }
        // The test harness's own RUSTFLAGS etc. are for the host, not wasm.
        cmd.env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        let status = cmd
            .status()
            .expect("running cargo to build the test components");
        assert!(
            status.success(),
            "building the wasm components failed (rustup target add wasm32-wasip2?)"
        );
        guest_target_dir().join("wasm32-wasip2/plugin")
    })
}

/// Path of a built component by crate name (`accord-guest-spin-loop`).
pub fn wasm(crate_name: &str) -> PathBuf {
    components().join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// Install a component as plugin `name` with the given manifest body
/// (`kind`, `version`, `[limits]`, `[config]` …; `name` is added).
pub fn install(dir: &Path, name: &str, crate_name: &str, manifest_body: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::copy(wasm(crate_name), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("name = \"{name}\"\n{manifest_body}"),
    )
    .unwrap();
}

/// Install one of the example plugins with its own manifest.toml.
pub fn install_example(dir: &Path, plugin: &str) {
    let manifest = std::fs::read_to_string(
        workspace()
            .join("plugins")
            .join(plugin)
            .join("manifest.toml"),
    )
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        wasm(&format!("accord-plugin-{plugin}")),
        dir.join(format!("{plugin}.wasm")),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{plugin}.toml")), manifest).unwrap();
}

pub const PARSER_V1: &str = "kind = \"parser\"\nversion = \"1.0.0\"\n";

pub fn runtime(plugins_dir: &Path, cache_dir: &Path) -> accord::plugins::Runtime {
    accord::plugins::Runtime::new(accord::plugins::RuntimeOptions {
        plugins_dir: Some(plugins_dir.to_path_buf()),
        cache_dir: cache_dir.to_path_buf(),
    })
    .unwrap()
}

pub fn fixture(plugin: &str, file: &str) -> PathBuf {
    workspace()
        .join("plugins")
        .join(plugin)
        .join("fixtures")
        .join(file)
}

/// The server the integration tests create their databases on.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let authority = rest.split('/').next().unwrap_or(rest);
    match query {
        Some(q) => format!("{scheme}://{authority}/{db}?{q}"),
        None => format!("{scheme}://{authority}/{db}"),
    }
}

/// A fresh, migrated database of its own for one test; dropped by
/// [`TestDb::drop_database`] (best effort: a failed test leaves it for
/// inspection).
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        use sqlx::Connection as _;
        let admin = database_url();
        let name = format!("accord_test_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("connecting to {admin} (set DATABASE_URL): {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        let url = with_database(&admin, &name);
        let store = accord::store::Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        store.close().await;
        TestDb { name, url }
    }

    /// [`TestDb::create`] from synchronous code.
    pub fn create_blocking() -> TestDb {
        block_on(TestDb::create())
    }

    pub async fn drop_database(self) {
        use sqlx::Connection as _;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&database_url()).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
            conn.close().await.ok();
        }
    }

    pub fn drop_blocking(self) {
        block_on(self.drop_database())
    }
}

/// Run a future to completion on a private runtime (for sync tests).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A compile cache shared by every test of this run, so each plugin is
/// compiled once rather than once per test.
pub fn shared_cache_dir() -> PathBuf {
    guest_target_dir().join("compile-cache")
}

/// The CSV parser config of the generated `shop` files.
pub fn shop_csv_config() -> serde_json::Value {
    serde_json::json!({
        "side": "merchant",
        "kind": "sale",
        "date_format": "%Y-%m-%d %H:%M:%S",
        "time_zone": "UTC",
        "columns": {
            "external_id": "id",
            "amount": "amount",
            "currency": "currency",
            "occurred_at": "occurred_at"
        }
    })
}

/// The iceland fixture's parser config.
pub fn iceland_config() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("csv", "iceland.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// An `accord.toml` body from a JSON description (serialised as TOML).
pub fn config_toml(config: &serde_json::Value) -> String {
    toml::to_string(config).expect("config as TOML")
}

/// A `shop` CSV with one row per id, in order.
pub fn shop_csv(ids: impl IntoIterator<Item = u64>) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = b"id,amount,currency,occurred_at\n".to_vec();
    for id in ids {
        writeln!(
            out,
            "shop-{id:08},{}.{:02},EUR,2024-03-{:02} {:02}:{:02}:00",
            id % 1000,
            id % 100,
            1 + id % 28,
            id % 24,
            id % 60
        )
        .unwrap();
    }
    out
}

/// Drop a file into an inbox the way a careful sender does: write it under
/// a partial name, then rename it into place.
pub fn drop_file(inbox: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(inbox).unwrap();
    let part = inbox.join(format!("{name}.part"));
    std::fs::write(&part, bytes).unwrap();
    std::fs::rename(&part, inbox.join(name)).unwrap();
}

/// Names of the regular files directly in `dir` (none if it is missing).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Names of the files under `<data_dir>/archive/<source>/<day>/`, all days.
pub fn archived(data_dir: &Path, source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let root = data_dir.join("archive").join(source);
    for day in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        names.extend(files_in(&day.path()));
    }
    names.sort();
    names
}

/// Wait for `cond` up to `timeout`, polling; panics with `what` on timeout.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
