//! The sandboxed runtime on real components: hostile plugins, version
//! dispatch, the compile cache, hot-loading under load, and every example
//! parser on its sample files.

use crate::support::{self, PARSER_V1, install, install_example, runtime};
use accord::domain::{Kind, ParsedBatch, Side};
use accord::plugins::{GuestErrorCode, PluginError, PluginStatus, Runtime};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn parse(
    rt: &Runtime,
    name: &str,
    config: Option<serde_json::Value>,
    input: &[u8],
) -> Result<ParsedBatch, PluginError> {
    let mut s = rt.open_parser(name, config.as_ref())?;
    let mut all = s.push(input)?;
    all.append(s.finish()?);
    Ok(all)
}

fn ids(b: &ParsedBatch) -> Vec<String> {
    b.transactions
        .iter()
        .map(|p| p.transaction.external_id.clone())
        .collect()
}

/// A hostile plugin stops only its own call; a fresh instance of the same
/// plugin serves the next one.
fn assert_next_call_succeeds(rt: &Runtime, name: &str) {
    let b = parse(rt, name, None, b"fine\nalso-fine\n").expect("the next call on a fresh instance");
    assert_eq!(ids(&b), ["fine", "also-fine"]);
}

#[test]
fn infinite_loop_is_stopped_at_its_deadline() {
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    install(
        dir.path(),
        "spin",
        "accord-guest-spin-loop",
        &format!("{PARSER_V1}[limits]\ndeadline_ms = 300\n"),
    );
    let rt = runtime(dir.path(), cache.path());
    assert_eq!(rt.rescan().loaded, ["spin"]);

    let started = Instant::now();
    let err = parse(&rt, "spin", None, b"a\nspin\n").unwrap_err();
    assert_eq!(
        err,
        PluginError::Deadline {
            plugin: "spin".into(),
            limit_ms: 300
        }
    );
    // Stopped at the deadline, not whenever: generous slack for a loaded CI box.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_next_call_succeeds(&rt, "spin");
}

#[test]
fn memory_bomb_is_stopped_at_its_cap() {
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    install(
        dir.path(),
        "bomb",
        "accord-guest-mem-bomb",
        &format!("{PARSER_V1}[limits]\nmemory_mib = 64\n"),
    );
    let rt = runtime(dir.path(), cache.path());
    rt.rescan();
    let err = parse(&rt, "bomb", None, b"bomb\n").unwrap_err();
    assert_eq!(
        err,
        PluginError::Memory {
            plugin: "bomb".into(),
            limit_mib: 64
        }
    );
    assert_next_call_succeeds(&rt, "bomb");
}

#[test]
fn panic_fails_the_call_with_the_panic_message() {
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    install(dir.path(), "panicker", "accord-guest-panicker", PARSER_V1);
    let rt = runtime(dir.path(), cache.path());
    rt.rescan();
    match parse(&rt, "panicker", None, b"ok\npanic\n").unwrap_err() {
        PluginError::Panic { plugin, message } => {
            assert_eq!(plugin, "panicker");
            assert!(message.contains("guest gave up on purpose"), "{message}");
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_next_call_succeeds(&rt, "panicker");
}

#[test]
fn filesystem_and_socket_plugins_are_refused_naming_the_import() {
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    install(
        dir.path(),
        "reads-files",
        "accord-guest-escape-fs",
        PARSER_V1,
    );
    install(
        dir.path(),
        "opens-sockets",
        "accord-guest-escape-net",
        PARSER_V1,
    );
    let rt = runtime(dir.path(), cache.path());
    let report = rt.rescan();
    assert!(report.loaded.is_empty(), "{report:?}");
    let status = |name: &str| {
        rt.list()
            .into_iter()
            .find(|p| p.name == name)
            .unwrap()
            .status
    };
    let PluginStatus::Failed(fs) = status("reads-files") else {
        panic!("reads-files not refused")
    };
    assert!(
        fs.contains("plugin `reads-files`") && fs.contains("`wasi:filesystem/preopens@"),
        "{fs}"
    );
    let PluginStatus::Failed(net) = status("opens-sockets") else {
        panic!("opens-sockets not refused")
    };
    assert!(
        net.contains("`wasi:sockets/tcp@") && net.contains("`wasi:sockets/ip-name-lookup@"),
        "{net}"
    );
    assert_eq!(
        parse(&rt, "reads-files", None, b"read\n").unwrap_err(),
        PluginError::NotFound("reads-files".into())
    );
}

#[test]
fn environment_is_empty_inside_the_sandbox() {
    // std links wasi:cli/environment into every component, so it is granted,
    // but empty: the guest panics if it sees any variable.
    // SAFETY: set before the runtime exists; no other thread reads this var.
    unsafe { std::env::set_var("ACCORD_TEST_SECRET", "must-not-leak") };
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    install(
        dir.path(),
        "reads-env",
        "accord-guest-escape-env",
        PARSER_V1,
    );
    let rt = runtime(dir.path(), cache.path());
    rt.rescan();
    let b =
        parse(&rt, "reads-env", None, b"env\nafter\n").expect("an empty environment, not a leak");
    assert_eq!(ids(&b), ["env", "after"]);
}

#[test]
fn unknown_contract_major_is_refused_with_a_clear_message() {
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    install(dir.path(), "future", "accord-guest-future-major", PARSER_V1);
    let rt = runtime(dir.path(), cache.path());
    let report = rt.rescan();
    let (name, reason) = &report.failed[0];
    assert_eq!(name, "future");
    assert!(reason.contains("plugin `future`"), "{reason}");
    assert!(
        reason.contains("accord:parser/parser@1.0.0"),
        "names what it exports: {reason}"
    );
    assert!(
        reason.contains("accord:parser/parser@0.1.x"),
        "names what the host supports: {reason}"
    );
}

#[test]
fn restart_with_unchanged_plugins_compiles_nothing() {
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    install(dir.path(), "echo", "accord-guest-echo-v1", PARSER_V1);
    install_example(dir.path(), "csv");
    let first = runtime(dir.path(), cache.path());
    assert_eq!(first.rescan().loaded.len(), 2);
    assert_eq!(first.cache_stats().compiled, 2);
    drop(first);

    let second = runtime(dir.path(), cache.path());
    assert_eq!(second.rescan().loaded.len(), 2);
    let stats = second.cache_stats();
    assert_eq!(
        (stats.compiled, stats.hits),
        (0, 2),
        "second start must load both from the cache"
    );
    assert_next_call_succeeds(&second, "echo");
    // An unchanged directory rescanned is not even reloaded.
    assert_eq!(second.rescan().loaded.len(), 0);
    assert_eq!(second.cache_stats().hits, 2);
}

#[test]
fn hot_swap_under_load_serves_exactly_one_version_per_call() {
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    install(dir.path(), "echo", "accord-guest-echo-v1", PARSER_V1);
    let rt = runtime(dir.path(), cache.path());
    rt.rescan();
    let _watcher = rt.watch(Duration::from_millis(200)).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (rt, stop) = (rt.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let mut s = rt.open_parser("echo", None).expect("open");
                    let sha = s.identity().sha256.clone();
                    let mut b = s.push(b"x1\nx2\n").expect("push");
                    b.append(s.finish().expect("finish"));
                    let versions: Vec<String> = b
                        .transactions
                        .iter()
                        .map(|p| {
                            p.transaction
                                .extras
                                .iter()
                                .find(|(k, _)| k == "version")
                                .unwrap()
                                .1
                                .clone()
                        })
                        .collect();
                    assert_eq!(versions.len(), 2);
                    assert!(
                        versions.iter().all(|v| *v == versions[0]),
                        "one call saw two versions: {versions:?}"
                    );
                    seen.push((versions[0].clone(), sha));
                }
                seen
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(300));
    install(
        dir.path(),
        "echo",
        "accord-guest-echo-v2",
        "kind = \"parser\"\nversion = \"2.0.0\"\n",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.get("echo").unwrap().identity.version != "2.0.0" {
        assert!(
            Instant::now() < deadline,
            "the new version never became active: {:?}",
            rt.list()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let swapped_at = Instant::now();
    while swapped_at.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Vec<(String, String)>> = workers
        .into_iter()
        .map(|w| w.join().expect("no call failed"))
        .collect();

    let all: Vec<&(String, String)> = seen.iter().flatten().collect();
    assert!(
        all.iter().any(|(v, _)| v == "1"),
        "v1 served before the swap"
    );
    assert!(
        all.iter().any(|(v, _)| v == "2"),
        "v2 served after the swap"
    );
    for calls in &seen {
        // Per worker, calls are sequential: once v2 answered, v1 never again.
        let first_v2 = calls
            .iter()
            .position(|(v, _)| v == "2")
            .unwrap_or(calls.len());
        assert!(
            calls[first_v2..].iter().all(|(v, _)| v == "2"),
            "v1 served after v2: {calls:?}"
        );
    }
    // Each version's output came from that version's component.
    let sha_of = |v: &str| {
        all.iter()
            .filter(|(x, _)| x == v)
            .map(|(_, s)| s.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(sha_of("1").len(), 1);
    assert_eq!(sha_of("2").len(), 1);
    assert_ne!(sha_of("1"), sha_of("2"));
    assert_eq!(rt.list()[0].status, PluginStatus::Active);
}

#[test]
fn a_broken_update_keeps_the_previous_version_serving() {
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    install(dir.path(), "echo", "accord-guest-echo-v1", PARSER_V1);
    let rt = runtime(dir.path(), cache.path());
    rt.rescan();
    std::fs::write(dir.path().join("echo.wasm"), b"\0asm garbage").unwrap();
    let report = rt.rescan();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    match &rt.list()[0].status {
        PluginStatus::UpdateFailed(e) => assert!(e.contains("not a valid WebAssembly"), "{e}"),
        other => panic!("expected update failure, got {other:?}"),
    }
    assert_next_call_succeeds(&rt, "echo");
}

#[test]
fn a_component_without_manifest_is_visible_as_failed() {
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::copy(
        support::wasm("accord-guest-echo-v1"),
        dir.path().join("orphan.wasm"),
    )
    .unwrap();
    let rt = runtime(dir.path(), cache.path());
    rt.rescan();
    let info = rt.list().into_iter().find(|p| p.name == "orphan").unwrap();
    assert!(
        matches!(&info.status, PluginStatus::Failed(e) if e.contains("no manifest")),
        "{:?}",
        info.status
    );
}

#[test]
fn bad_config_and_wrong_kind_are_specific_errors() {
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    install_example(dir.path(), "csv");
    let rt = runtime(dir.path(), cache.path());
    rt.rescan();
    match rt.open_parser(
        "csv",
        Some(&serde_json::json!({"time_zone": "Mars/Olympus"})),
    ) {
        Err(PluginError::Guest { plugin, code, .. }) => {
            assert_eq!(
                (plugin.as_str(), code),
                ("csv", GuestErrorCode::InvalidConfig)
            )
        }
        Err(other) => panic!("expected invalid config, got {other:?}"),
        Ok(_) => panic!("expected invalid config, got a session"),
    }
    assert!(matches!(
        rt.open_matcher("csv", None),
        Err(PluginError::WrongKind { .. })
    ));
    assert_eq!(
        rt.open_parser("nope", None).err(),
        Some(PluginError::NotFound("nope".into()))
    );
}

fn read_json(path: std::path::PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn parse_in_chunks(
    rt: &Runtime,
    name: &str,
    config: Option<serde_json::Value>,
    input: &[u8],
    chunk: usize,
) -> ParsedBatch {
    let mut s = rt.open_parser(name, config.as_ref()).unwrap();
    let mut all = ParsedBatch::default();
    for c in input.chunks(chunk) {
        all.append(s.push(c).unwrap());
    }
    all.append(s.finish().unwrap());
    all
}

#[test]
fn example_parsers_on_their_sample_files() {
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for p in ["csv", "mastercard-tgx2", "visa-vop", "psp-xml"] {
        install_example(dir.path(), p);
    }
    let rt = runtime(dir.path(), cache.path());
    assert_eq!(rt.rescan().loaded.len(), 4, "{:?}", rt.list());

    // Iceland through the configurable CSV parser.
    let csv = std::fs::read(support::fixture("csv", "iceland.csv")).unwrap();
    let cfg = read_json(support::fixture("csv", "iceland.json"));
    let b = parse_in_chunks(&rt, "csv", Some(cfg), &csv, 7);
    let first = &b.transactions[0];
    assert_eq!(first.row, Some(2));
    let tx = &first.transaction;
    assert_eq!(tx.external_id, "7f1d2c3b-0a9e-4d6f-8b21-5c4e3a2f1b00");
    assert_eq!((tx.side, tx.kind), (Side::Merchant, Kind::Sale));
    assert_eq!(
        (tx.amount.minor_units, tx.amount.currency.as_str()),
        (2450, "GBP")
    );
    assert_eq!(tx.occurred_at.to_rfc3339(), "2024-03-09T18:42:10+00:00");
    assert_eq!(tx.provider.as_deref(), Some("visa"));
    assert_eq!(tx.auth_code.as_deref(), Some("731904"));
    assert!(!b.transactions.iter().any(|p| {
        p.transaction
            .auth_code
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("decline"))
    }));
    assert!(
        b.rejects
            .iter()
            .any(|r| r.field.as_deref() == Some("amount")),
        "{:?}",
        b.rejects
    );

    // Mastercard TGX2 settlement (fixed width).
    let tgx2 = std::fs::read(support::fixture("mastercard-tgx2", "settlement.txt")).unwrap();
    let b = parse_in_chunks(
        &rt,
        "mastercard-tgx2",
        Some(serde_json::json!({"feed": "settlement"})),
        &tgx2,
        100,
    );
    assert_eq!((b.transactions.len(), b.rejects.len()), (3, 2));
    let tx = &b.transactions[0].transaction;
    assert_eq!(tx.external_id, "A1B2C3D4E_20240309");
    assert_eq!(tx.amount.minor_units, 2450);
    assert_eq!(tx.occurred_at.to_rfc3339(), "2024-03-09T18:42:00+00:00");
    assert_eq!(
        tx.settlement_key.as_deref(),
        Some("bc603eabbc3298f754704573d386573d05ae6d96776b5ee5ce8a897ca42cdb12")
    );

    // Visa VOP auth messages (NDJSON).
    let vop = std::fs::read(support::fixture("visa-vop", "auth.ndjson")).unwrap();
    let b = parse_in_chunks(
        &rt,
        "visa-vop",
        Some(serde_json::json!({"feed": "auth"})),
        &vop,
        64,
    );
    let tx = &b.transactions[0].transaction;
    assert_eq!(tx.external_id, "VFhOLVNZTlRILTAwMDE");
    assert_eq!(
        (tx.kind, tx.amount.minor_units),
        (Kind::Authorisation, 2450)
    );
    assert_eq!(
        tx.settlement_key.as_deref(),
        Some("0cf08ef0efca1a91c25c4516715b1d9a3e6e308c927a7c9a5c4f398cd717e7e7")
    );
    assert_eq!(tx.card_token.as_deref(), Some("tok-visa-5f3a91"));

    // PSP XML payment file.
    let xml = std::fs::read(support::fixture("psp-xml", "seed-payments.xml")).unwrap();
    let b = parse_in_chunks(&rt, "psp-xml", None, &xml, 1000);
    assert_eq!((b.transactions.len(), b.rejects.len()), (4, 2));
    let tx = &b.transactions[0].transaction;
    assert_eq!(
        (tx.reference_id.as_deref(), tx.account_id.as_deref()),
        (Some("mister_blond"), Some("1"))
    );
    assert_eq!(
        (tx.amount.minor_units, tx.amount.currency.as_str()),
        (4200, "EUR")
    );
    assert!(
        b.rejects
            .iter()
            .any(|r| r.field.as_deref() == Some("ReferenceId")),
        "{:?}",
        b.rejects
    );
}
