//! `accord bench …`: benchmarks that print figures (never timed tests).

use super::plugin::{build, cli_runtime};
use crate::plugins::PluginError;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHUNK: usize = 1 << 20;

/// The CSV parser config the benchmark's generated file needs.
fn csv_config() -> serde_json::Value {
    serde_json::json!({
        "side": "merchant",
        "date_format": "%Y-%m-%d %H:%M:%S",
        "time_zone": "Europe/London",
        "columns": {
            "external_id": "id",
            "amount": "amount",
            "currency": "currency",
            "occurred_at": "occurred_at",
            "merchant_id": "mid",
            "auth_code": "auth_code",
            "card_last_four": "last_four"
        }
    })
}

/// A merchant-feed-like CSV of `rows` rows (deterministic).
pub fn generate_csv(rows: usize) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(rows * 72 + 64);
    out.extend_from_slice(b"id,amount,currency,occurred_at,mid,auth_code,last_four\n");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (h, m, s) = ((x >> 8) % 24, (x >> 16) % 60, (x >> 24) % 60);
        let day = 1 + (x >> 32) % 28;
        writeln!(
            out,
            "TX{i:09},{}.{:02},GBP,2024-03-{day:02} {h:02}:{m:02}:{s:02},MID{:05},{:06},{:04}",
            (x >> 40) % 500,
            (x >> 20) % 100,
            (x >> 4) % 1000,
            x % 1_000_000,
            (x >> 12) % 10_000
        )
        .expect("writing to a Vec");
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn plugins(rows: usize, wasm: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let cache = tempfile::tempdir()?;
    let wasm = match wasm {
        Some(w) => w,
        None => {
            eprintln!("building plugins/csv for wasm32-wasip2 …");
            build(&[PathBuf::from("plugins/csv")], cache.path())?;
            cache.path().join("csv.wasm")
        }
    };
    let runtime = cli_runtime(None)?;
    let manifest_path = wasm.with_extension("toml");
    let manifest = crate::plugins::Manifest::load(&manifest_path).ok();
    let slot = runtime
        .load_file(&wasm, manifest)
        .context("loading the CSV parser component")?;
    let config = csv_config();

    // Fixed per-call overhead: an empty push on an open session.
    let mut session = runtime.open_parser_on(slot.clone(), Some(&config))?;
    session.push(b"id,amount,currency,occurred_at,mid,auth_code,last_four\n")?;
    let calls = 20_000u32;
    let t = Instant::now();
    for _ in 0..calls {
        session.push(b"")?;
    }
    let per_call = t.elapsed() / calls;
    let opens = 200u32;
    let t = Instant::now();
    for _ in 0..opens {
        drop(runtime.open_parser_on(slot.clone(), Some(&config))?);
    }
    let per_open = t.elapsed() / opens;

    let data = generate_csv(rows);
    let mb = data.len() as f64 / 1e6;
    let wasm_run = || -> Result<(Duration, usize), PluginError> {
        let t = Instant::now();
        let mut s = runtime.open_parser_on(slot.clone(), Some(&config))?;
        let mut n = 0;
        for chunk in data.chunks(CHUNK) {
            n += s.push(chunk)?.transactions.len();
        }
        n += s.finish()?.transactions.len();
        Ok((t.elapsed(), n))
    };
    let native_config = config.to_string();
    // The same logic natively, driven the way the host drives the
    // component: one batch per chunk, dropped once counted.
    let native_run = || -> anyhow::Result<(Duration, usize)> {
        use accord_plugin_sdk::{Batch, Parser as _};
        let t = Instant::now();
        let cfg = accord_plugin_sdk::parse_config(&native_config)
            .map_err(|e| anyhow::anyhow!("native parser config: {}", e.message))?;
        let mut p = accord_plugin_csv::CsvParser::open(cfg)
            .map_err(|e| anyhow::anyhow!("native parser: {}", e.message))?;
        let mut n = 0;
        for chunk in data.chunks(CHUNK) {
            let mut b = Batch::new();
            p.push(chunk, &mut b)
                .map_err(|e| anyhow::anyhow!("native parser: {}", e.message))?;
            n += b.transactions.len();
        }
        let mut b = Batch::new();
        p.finish(&mut b)
            .map_err(|e| anyhow::anyhow!("native parser: {}", e.message))?;
        n += b.transactions.len();
        Ok((t.elapsed(), n))
    };
    let mut wasm_times = Vec::new();
    let mut native_times = Vec::new();
    for _ in 0..3 {
        let (d, n) = wasm_run()?;
        anyhow::ensure!(n == rows, "wasm parser produced {n} of {rows} rows");
        wasm_times.push(d);
        let (d, n) = native_run()?;
        anyhow::ensure!(n == rows, "native parser produced {n} of {rows} rows");
        native_times.push(d);
    }
    let (w, n) = (median(wasm_times), median(native_times));
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!("accord bench plugins — {rows} rows, {mb:.1} MB, {CHUNK} B chunks, median of 3");
    println!(
        "  per-call overhead (empty push):      {:>10.2} µs",
        per_call.as_secs_f64() * 1e6
    );
    println!(
        "  session open (fresh instance):       {:>10.2} µs",
        per_open.as_secs_f64() * 1e6
    );
    println!(
        "  csv parser, wasm:   {:>8.3} s  {:>12.0} records/s  {:>7.1} MB/s",
        w.as_secs_f64(),
        rate(w),
        mb / w.as_secs_f64()
    );
    println!(
        "  csv parser, native: {:>8.3} s  {:>12.0} records/s  {:>7.1} MB/s",
        n.as_secs_f64(),
        rate(n),
        mb / n.as_secs_f64()
    );
    println!(
        "  wasm / native time: {:>8.2}x",
        w.as_secs_f64() / n.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// `accord bench ingest`: the CSV plugin into PostgreSQL with the production
/// schema, against a raw COPY of the same rows into an identically indexed
/// table; then the peak RSS of `accord import` on a large file.
pub fn ingest(rows: usize, big_mb: u64, database_url: Option<String>) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(ingest_async(rows, big_mb, database_url))
}

async fn ingest_async(
    rows: usize,
    big_mb: u64,
    database_url: Option<String>,
) -> anyhow::Result<ExitCode> {
    use crate::config::Config;
    use crate::pipeline::{Context, import_stream};
    use crate::store::{Channel, Store};
    use futures::TryStreamExt;
    use sqlx::Connection;

    let server = database_url
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("accord_bench_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await?;
    let url = with_database(&server, &db);
    let result = async {
        let work = tempfile::tempdir()?;
        let plugins = work.path().join("plugins");
        eprintln!("building plugins/csv for wasm32-wasip2 …");
        build(&[PathBuf::from("plugins/csv")], &plugins)?;
        let config_path = work.path().join("accord.toml");
        let mut config = toml::Table::new();
        config.insert("database_url".into(), url.clone().into());
        config.insert("data_dir".into(), work.path().join("data").display().to_string().into());
        config.insert("plugins_dir".into(), plugins.display().to_string().into());
        let mut source = toml::Table::new();
        source.insert("name".into(), "bench".into());
        source.insert("side".into(), "merchant".into());
        source.insert("parser".into(), "csv".into());
        source.insert("config".into(), toml::Value::try_from(csv_config())?);
        config.insert("sources".into(), toml::Value::Array(vec![source.into()]));
        std::fs::write(&config_path, toml::to_string(&config)?)?;
        let config = Arc::new(Config::load(Some(&config_path), std::iter::empty::<(String, String)>())?);

        let store = Store::connect(&url).await?;
        store.migrate().await?;
        let runtime = cli_runtime(Some(plugins.clone()))?;
        runtime.rescan();
        let ctx = Context { store: store.clone(), runtime, config: config.clone() };

        let data = generate_csv(rows);
        let mb = data.len() as f64 / 1e6;
        let body = futures::stream::iter(
            data.chunks(1 << 20).map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c))).collect::<Vec<_>>(),
        );
        let t = Instant::now();
        let outcome = import_stream(&ctx, "bench", Channel::Cli, Some("bench.csv".into()), None, u64::MAX, body).await?;
        let accord_time = t.elapsed();
        let accepted = outcome.counts.map(|c| c.accepted).unwrap_or(0);
        anyhow::ensure!(accepted as usize == rows, "accord stored {accepted} of {rows} rows: {outcome:?}");

        // The same rows, byte for byte as stored, COPYed into a table with the
        // same columns and indexes.
        let mut conn = store.pool().acquire().await?;
        sqlx::query("CREATE TABLE bench_raw (LIKE transactions INCLUDING ALL)").execute(&mut *conn).await?;
        let mut copy_text = Vec::with_capacity(data.len() * 3);
        {
            let mut out = conn.copy_out_raw("COPY transactions TO STDOUT").await?;
            while let Some(chunk) = out.try_next().await? {
                copy_text.extend_from_slice(&chunk);
            }
        }
        let t = Instant::now();
        let mut copy = conn.copy_in_raw("COPY bench_raw FROM STDIN").await?;
        for chunk in copy_text.chunks(1 << 20) {
            copy.send(chunk).await?;
        }
        let copied = copy.finish().await?;
        let copy_time = t.elapsed();
        anyhow::ensure!(copied as usize == rows, "raw COPY loaded {copied} rows");
        drop(conn);

        let rate = |d: Duration| rows as f64 / d.as_secs_f64();
        println!("accord bench ingest — {rows} rows, {mb:.1} MB CSV, PostgreSQL at {}", crate::config::redact_url(&server));
        println!(
            "  accord (wasm csv parser → COPY staging → merge, raw bytes retained): {:>7.2} s  {:>9.0} rows/s",
            accord_time.as_secs_f64(),
            rate(accord_time)
        );
        println!(
            "  raw COPY into an identically indexed table:                          {:>7.2} s  {:>9.0} rows/s",
            copy_time.as_secs_f64(),
            rate(copy_time)
        );
        println!("  ratio accord / raw COPY: {:.2}", rate(accord_time) / rate(copy_time));
        store.close().await;
        drop(copy_text);
        drop(data);

        if big_mb > 0 {
            let big = work.path().join("big.csv");
            {
                use std::io::Write;
                let mut f = std::io::BufWriter::new(std::fs::File::create(&big)?);
                let block = generate_csv(100_000);
                let body = &block[block.iter().position(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0)..];
                f.write_all(b"id,amount,currency,occurred_at,mid,auth_code,last_four\n")?;
                let mut written = 0u64;
                let mut round = 0u64;
                while written < big_mb << 20 {
                    // Unique ids per round: rewrite the id prefix.
                    let tagged: Vec<u8> = body
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .flat_map(|l| {
                            let mut v = format!("R{round:04}").into_bytes();
                            v.extend_from_slice(l);
                            v.push(b'\n');
                            v
                        })
                        .collect();
                    f.write_all(&tagged)?;
                    written += tagged.len() as u64;
                    round += 1;
                }
            }
            let size = std::fs::metadata(&big)?.len();
            let exe = std::env::current_exe()?;
            let t = Instant::now();
            let mut child = std::process::Command::new(exe)
                .args(["import", "bench"])
                .arg(&big)
                .arg("--config")
                .arg(&config_path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?;
            let (status, peak_kib) = wait_with_peak_rss(&mut child)?;
            anyhow::ensure!(status == 0, "accord import of the large file exited with {status}");
            println!(
                "  `accord import` of a {:.2} GB file: {:.1} s, peak RSS {:.0} MB",
                size as f64 / 1e9,
                t.elapsed().as_secs_f64(),
                peak_kib as f64 / 1024.0
            );
        }
        anyhow::Ok(())
    }
    .await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// `url` with its database name replaced by `db`.
pub(super) fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// Wait for `child`; its exit code and peak resident set (KiB).
///
/// The peak is the child's own `VmHWM`, read until it exits: `ru_maxrss`
/// from wait4 would also count the pages it shared with this (large) bench
/// process between fork and exec.
fn wait_with_peak_rss(child: &mut std::process::Child) -> anyhow::Result<(i32, i64)> {
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0i64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok());
            if let Some(hwm) = hwm {
                peak_kib = peak_kib.max(hwm);
            }
        }
        if let Some(status) = child.try_wait()? {
            return Ok((status.code().unwrap_or(-1), peak_kib));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
