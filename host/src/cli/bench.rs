//! `accord bench …`: benchmarks that print figures (never timed tests).

use super::plugin::{build, cli_runtime};
use crate::plugins::PluginError;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
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
    let native_run = || -> anyhow::Result<(Duration, usize)> {
        let t = Instant::now();
        let b = accord_plugin_sdk::testing::run_parser::<accord_plugin_csv::CsvParser>(
            &native_config,
            &data,
            CHUNK,
        )
        .map_err(|e| anyhow::anyhow!("native parser: {}", e.message))?;
        Ok((t.elapsed(), b.transactions.len()))
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
