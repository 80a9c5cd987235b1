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

const PLUGINS: &[&str] = &["csv", "mastercard-tgx2", "visa-vop", "psp-xml"];
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
