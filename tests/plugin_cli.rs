//! The plugin author's path through the real `accord` binary: new → build →
//! test → check → drop into a plugins directory → list.

use crate::support;
use std::path::Path;
use std::process::{Command, Output};

fn accord(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_accord"))
        .args(args)
        .current_dir(cwd)
        // Keep the CLI's compile cache inside the test's temp dir.
        .env("XDG_CACHE_HOME", cwd.join(".cache"))
        .output()
        .expect("running accord")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_refuses_a_filesystem_plugin_with_nonzero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = support::wasm("accord-guest-escape-fs");
    let out = accord(&["plugin", "check", wasm.to_str().unwrap()], tmp.path());
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("verdict:   refused") && t.contains("wasi:filesystem/preopens"),
        "{t}"
    );

    let wasm = support::wasm("accord-plugin-csv");
    let out = accord(&["plugin", "check", wasm.to_str().unwrap()], tmp.path());
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("kind:      parser")
            && t.contains("accord:parser/parser@0.1.0")
            && t.contains("verdict:   accepted"),
        "{t}"
    );
}

#[test]
fn test_runs_a_parser_over_a_file_as_json_and_table() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = support::wasm("accord-plugin-csv");
    let input = support::fixture("csv", "iceland.csv");
    let config = support::fixture("csv", "iceland.json");
    let args = [
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let out = accord(&[&args[..], &["--json"]].concat(), tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["transactions"][0]["transaction"]["external_id"],
        "7f1d2c3b-0a9e-4d6f-8b21-5c4e3a2f1b00"
    );
    assert_eq!(
        v["transactions"][0]["transaction"]["amount"]["minor_units"],
        2450
    );
    assert!(
        v["rejects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["field"] == "amount")
    );

    let out = accord(&args, tmp.path());
    let t = text(&out);
    assert!(
        out.status.success()
            && t.contains("7f1d2c3b-0a9e-4d6f-8b21-5c4e3a2f1b00")
            && t.contains("rejected"),
        "{t}"
    );
}

/// The whole author path for a crate created outside this repository.
#[test]
fn new_plugin_outside_the_repo_builds_tests_checks_and_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let out = accord(
        &[
            "plugin",
            "new",
            "--kind",
            "parser",
            "acme-feed",
            "--dir",
            tmp.path().to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let krate = tmp.path().join("acme-feed");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = support::guest_target_dir().join("scaffold");
    let run = |args: &[&str]| {
        let o = Command::new(&cargo)
            .args(args)
            .arg("--target-dir")
            .arg(&target)
            .current_dir(&krate)
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        assert!(o.status.success(), "cargo {args:?}: {}", text(&o));
    };
    run(&["test", "--quiet"]);
    run(&["build", "--profile", "plugin", "--target", "wasm32-wasip2"]);
    let wasm = target.join("wasm32-wasip2/plugin/acme_feed.wasm");

    let out = accord(&["plugin", "check", wasm.to_str().unwrap()], tmp.path());
    assert!(out.status.success(), "{}", text(&out));

    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(&wasm, plugins.join("acme-feed.wasm")).unwrap();
    std::fs::copy(krate.join("manifest.toml"), plugins.join("acme-feed.toml")).unwrap();
    let out = accord(
        &[
            "plugin",
            "list",
            "--plugins-dir",
            plugins.to_str().unwrap(),
            "--daemon",
            "http://127.0.0.1:9",
            "--json",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "acme-feed");
    assert_eq!(v[0]["status"]["state"], "active");
    assert_eq!(v[0]["version"], "0.1.0");
    assert_eq!(v[0]["sha256"].as_str().unwrap().len(), 64);
}
