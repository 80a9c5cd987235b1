//! `accord plugin …`: the plugin author's path — new → build → check → test
//! → drop into the plugins directory → list.

use super::PluginCommand;
use crate::domain::{ParsedBatch, PluginKind};
use crate::plugins::{Manifest, PluginError, PluginInfo, Runtime, RuntimeOptions};
use anyhow::{Context, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::New {
            kind,
            name,
            dir,
            sdk,
        } => new(kind, &name, &dir, sdk),
        PluginCommand::Build { crates, out } => {
            let installed = build(&crates, &out)?;
            for (name, path) in installed {
                println!("installed {name} -> {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Check { file, kind } => check(&file, kind),
        PluginCommand::Test {
            file,
            input,
            config,
            json,
            chunk_size,
        } => test(&file, &input, config.as_deref(), json, chunk_size),
        PluginCommand::List {
            plugins_dir,
            daemon,
            json,
        } => list(&plugins_dir, &daemon, json),
    }
}

/// A runtime for one-off CLI work, with its compile cache under the user's
/// cache directory.
pub fn cli_runtime(plugins_dir: Option<PathBuf>) -> anyhow::Result<Runtime> {
    let cache_dir = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("accord/compiled");
    Runtime::new(RuntimeOptions {
        plugins_dir,
        cache_dir,
    })
}

fn check(file: &Path, kind: Option<PluginKind>) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let runtime = cli_runtime(None)?;
    let (found, verdict) = runtime.check(&name, &bytes, kind);
    println!("file:      {}", file.display());
    if let Some(found) = &found {
        println!(
            "contract:  {}",
            found
                .contract_section
                .as_deref()
                .unwrap_or("(no accord-contract section: not built with the SDK)")
        );
        println!("exports:   {}", found.exports.join(", "));
        println!("imports:");
        for i in &found.imports {
            println!("  {i}");
        }
    }
    match verdict {
        Ok(v) => {
            // Compile and pre-instantiate too: the verdict is what the daemon would do.
            let manifest = Manifest::for_file(file, v.kind);
            match runtime.load_file(file, Some(manifest)) {
                Ok(_) => {
                    println!("kind:      {}", v.kind);
                    println!("version:   {} ({})", v.version, v.export);
                    println!("verdict:   accepted");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("verdict:   refused: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Err(e) => {
            println!("verdict:   refused: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Read a parser config from a JSON or TOML file.
fn read_config(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "toml") {
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(serde_json::to_value(table)?)
    } else {
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Run a parser over `input` in chunks, returning everything it produced.
pub fn parse_file(
    runtime: &Runtime,
    slot: std::sync::Arc<crate::plugins::Slot>,
    config: Option<&serde_json::Value>,
    input: &Path,
    chunk_size: usize,
) -> anyhow::Result<Result<ParsedBatch, PluginError>> {
    use std::io::Read;
    let mut session = match runtime.open_parser_on(slot, config) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    let mut file =
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let mut buf = vec![0u8; chunk_size.max(1)];
    let mut all = ParsedBatch::default();
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        match session.push(&buf[..n]) {
            Ok(b) => all.append(b),
            Err(e) => return Ok(Err(e)),
        }
    }
    match session.finish() {
        Ok(b) => all.append(b),
        Err(e) => return Ok(Err(e)),
    }
    Ok(Ok(all))
}

fn test(
    file: &Path,
    input: &Path,
    config: Option<&Path>,
    json: bool,
    chunk_size: usize,
) -> anyhow::Result<ExitCode> {
    let runtime = cli_runtime(None)?;
    let slot = runtime.load_file(file, None)?;
    let config = config.map(read_config).transpose()?;
    let batch = match parse_file(&runtime, slot, config.as_ref(), input, chunk_size)? {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if json {
        let out = serde_json::json!({
            "transactions": batch.transactions.iter().map(|p| serde_json::json!({"row": p.row, "transaction": p.transaction})).collect::<Vec<_>>(),
            "rejects": batch.rejects,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "row",
        "external id",
        "side",
        "kind",
        "amount",
        "currency",
        "occurred at",
        "provider",
        "merchant ids",
        "auth",
        "settlement key",
    ]);
    for p in &batch.transactions {
        let tx = &p.transaction;
        t.add_row(vec![
            p.row.map(|r| r.to_string()).unwrap_or_default(),
            tx.external_id.clone(),
            tx.side.to_string(),
            tx.kind.to_string(),
            tx.amount.minor_units.to_string(),
            tx.amount.currency.clone(),
            tx.occurred_at.to_rfc3339(),
            tx.provider.clone().unwrap_or_default(),
            tx.merchant_ids
                .iter()
                .map(|m| format!("{}:{}", m.kind, m.value))
                .collect::<Vec<_>>()
                .join(" "),
            tx.auth_code.clone().unwrap_or_default(),
            tx.settlement_key
                .clone()
                .map(|k| k.chars().take(16).collect())
                .unwrap_or_default(),
        ]);
    }
    println!("{t}");
    println!(
        "{} transactions (amounts in minor units)",
        batch.transactions.len()
    );
    if !batch.rejects.is_empty() {
        let mut r = Table::new();
        r.load_preset(UTF8_FULL_CONDENSED)
            .set_header(vec!["row", "offset", "field", "reason", "raw"]);
        for rej in &batch.rejects {
            r.add_row(vec![
                rej.row.map(|r| r.to_string()).unwrap_or_default(),
                rej.byte_offset.map(|r| r.to_string()).unwrap_or_default(),
                rej.field.clone().unwrap_or_default(),
                rej.reason.clone(),
                rej.raw.chars().take(60).collect(),
            ]);
        }
        println!("{r}");
    }
    println!("{} rejected", batch.rejects.len());
    Ok(ExitCode::SUCCESS)
}

fn list(plugins_dir: &Path, daemon: &str, json: bool) -> anyhow::Result<ExitCode> {
    let url = format!("{}/v1/plugins", daemon.trim_end_matches('/'));
    let from_daemon: Option<Vec<PluginInfo>> = ureq::get(&url)
        .config()
        .timeout_global(Some(std::time::Duration::from_secs(2)))
        .build()
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_json::<Vec<PluginInfo>>().ok());
    let (infos, origin) = match from_daemon {
        Some(infos) => (infos, format!("from the daemon at {daemon}")),
        None => {
            let runtime = cli_runtime(Some(plugins_dir.to_path_buf()))?;
            runtime.rescan();
            (
                runtime.list(),
                format!(
                    "daemon not reachable at {daemon}; loaded {} directly",
                    plugins_dir.display()
                ),
            )
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "name", "kind", "version", "contract", "sha256", "status",
    ]);
    for p in &infos {
        t.add_row(vec![
            p.name.clone(),
            p.kind.map(|k| k.to_string()).unwrap_or_default(),
            p.version.clone().unwrap_or_default(),
            p.contract.clone().unwrap_or_default(),
            p.sha256
                .clone()
                .map(|s| s[..16.min(s.len())].to_string())
                .unwrap_or_default(),
            p.status.to_string(),
        ]);
    }
    println!("{t}");
    println!("{origin}");
    Ok(ExitCode::SUCCESS)
}

/// Build plugin crates for wasm32-wasip2 and install `<name>.wasm` +
/// `<name>.toml` into `out`, each by write-then-rename so a watching daemon
/// never sees half a file.
pub fn build(crates: &[PathBuf], out: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let crates: Vec<PathBuf> = if crates.is_empty() {
        let mut found: Vec<PathBuf> = std::fs::read_dir("plugins")
            .context("no crates given and no ./plugins directory")?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("manifest.toml").exists())
            .collect();
        found.sort();
        found
    } else {
        crates.to_vec()
    };
    if crates.is_empty() {
        bail!("no plugin crates (directories with Cargo.toml and manifest.toml) to build");
    }
    let mut packages = Vec::new();
    for dir in &crates {
        let cargo: toml::Table = toml::from_str(
            &std::fs::read_to_string(dir.join("Cargo.toml"))
                .with_context(|| format!("{}/Cargo.toml", dir.display()))?,
        )?;
        let pkg = cargo
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .with_context(|| format!("{}/Cargo.toml has no package name", dir.display()))?
            .to_string();
        let manifest = Manifest::load(&dir.join("manifest.toml")).map_err(anyhow::Error::msg)?;
        packages.push((dir.clone(), pkg, manifest));
    }
    let first = &crates[0];
    let meta = std::process::Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(first)
        .output()
        .context("running cargo metadata")?;
    if !meta.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&meta.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&meta.stdout)?;
    let target_dir = PathBuf::from(
        meta["target_directory"]
            .as_str()
            .context("cargo metadata: no target_directory")?,
    );

    let mut cmd = std::process::Command::new("cargo");
    cmd.args(["build", "--profile", "plugin", "--target", "wasm32-wasip2"])
        .current_dir(first);
    for (_, pkg, _) in &packages {
        cmd.args(["-p", pkg]);
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!(
            "cargo build of the plugins failed (is the target installed? `rustup target add wasm32-wasip2`)"
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut installed = Vec::new();
    for (dir, pkg, manifest) in &packages {
        let wasm = target_dir
            .join("wasm32-wasip2/plugin")
            .join(format!("{}.wasm", pkg.replace('-', "_")));
        let dest = out.join(format!("{}.wasm", manifest.name));
        install(&wasm, &dest)?;
        install(
            &dir.join("manifest.toml"),
            &out.join(format!("{}.toml", manifest.name)),
        )?;
        installed.push((manifest.name.clone(), dest));
    }
    Ok(installed)
}

fn install(from: &Path, to: &Path) -> anyhow::Result<()> {
    let tmp = to.with_file_name(format!(
        ".{}.tmp",
        to.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::copy(from, &tmp)
        .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("installing {}", to.display()))?;
    Ok(())
}

/// The SDK this binary was built with, when its source is still there.
fn default_sdk() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    p.join("Cargo.toml")
        .exists()
        .then(|| p.canonicalize().unwrap_or(p))
}

fn inside_a_workspace(dir: &Path) -> bool {
    dir.ancestors().any(|d| {
        std::fs::read_to_string(d.join("Cargo.toml"))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
    })
}

fn new(kind: PluginKind, name: &str, dir: &Path, sdk: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!("plugin name `{name}` must be lower-case letters, digits and dashes");
    }
    let sdk = sdk.or_else(default_sdk).context(
        "cannot find the accord plugin SDK: pass --sdk PATH/TO/accord/plugin-sdk or set ACCORD_SDK_PATH",
    )?;
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("SDK path {}", sdk.display()))?;
    if !sdk.join("Cargo.toml").exists() {
        bail!("{} is not the plugin SDK (no Cargo.toml)", sdk.display());
    }
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    std::fs::create_dir_all(root.join("src"))?;
    let standalone = !inside_a_workspace(&dir);
    let ident: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let mut cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
accord-plugin-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
"#,
        sdk = sdk.display()
    );
    if standalone {
        cargo.push_str(
            r#"
# A workspace of its own, so it builds wherever it is created.
[workspace]

[profile.plugin]
inherits = "release"
lto = true
codegen-units = 1
"#,
        );
    }
    std::fs::write(root.join("Cargo.toml"), cargo)?;
    std::fs::write(
        root.join("manifest.toml"),
        format!(
            "name = \"{name}\"\nkind = \"{kind}\"\nversion = \"0.1.0\"\ndescription = \"\"\n\n[limits]\ndeadline_ms = 5000\nmemory_mib = 256\n\n[config]\n"
        ),
    )?;
    let src = match kind {
        PluginKind::Parser => PARSER_TEMPLATE,
        PluginKind::Matcher => MATCHER_TEMPLATE,
        PluginKind::Router => ROUTER_TEMPLATE,
    };
    std::fs::write(root.join("src/lib.rs"), src.replace("Template", &ident))?;
    std::fs::write(
        root.join("README.md"),
        format!(
            "# {name}\n\nAn accord {kind} plugin.\n\n```sh\ncargo test                                                # native unit tests\ncargo build --profile plugin --target wasm32-wasip2       # the component\naccord plugin check target/wasm32-wasip2/plugin/{us}.wasm\ncp target/wasm32-wasip2/plugin/{us}.wasm PLUGINS_DIR/{name}.wasm\ncp manifest.toml PLUGINS_DIR/{name}.toml\naccord plugin list --plugins-dir PLUGINS_DIR\n```\n",
            us = name.replace('-', "_")
        ),
    )?;
    println!("created {kind} plugin `{name}` in {}", root.display());
    println!(
        "  cd {} && cargo test && cargo build --profile plugin --target wasm32-wasip2",
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}

const PARSER_TEMPLATE: &str = r#"//! A parser plugin: one transaction per `id,amount,currency,time` line.

use accord_plugin_sdk::prelude::*;

#[derive(serde::Deserialize)]
pub struct Config {
    /// Zone for times without an offset.
    #[serde(default = "utc")]
    pub zone: String,
}

fn utc() -> String {
    "UTC".into()
}

pub struct Template {
    zone: String,
    lines: LineSplitter,
}

fn parse_line(zone: &str, line: &Line<'_>) -> Result<Transaction, FieldError> {
    let text = line.text()?;
    let f: Vec<&str> = text.split(',').collect();
    let [id, amount, currency, at] = f[..] else {
        return Err(FieldError::reason(format!("expected 4 fields, found {}", f.len())));
    };
    let amount = money::parse_major(amount, currency).map_err(|e| e.on("amount"))?;
    let at = time::parse_instant(at, zone).map_err(|e| e.on("time"))?;
    Ok(Transaction::new(id, Side::Merchant, Kind::Sale, amount, at))
}

impl Parser for Template {
    type Config = Config;

    fn open(config: Config) -> Result<Self, PluginError> {
        time::zone(&config.zone).map_err(PluginError::invalid_config)?;
        Ok(Template { zone: config.zone, lines: LineSplitter::new() })
    }

    fn push(&mut self, chunk: &[u8], out: &mut Batch) -> Result<(), PluginError> {
        let zone = &self.zone;
        self.lines.push(chunk, |line| match parse_line(zone, &line) {
            Ok(tx) => out.accept(line.number, tx),
            Err(e) => out.reject(e.reject(&line)),
        });
        Ok(())
    }

    fn finish(&mut self, out: &mut Batch) -> Result<(), PluginError> {
        let zone = &self.zone;
        self.lines.finish(|line| match parse_line(zone, &line) {
            Ok(tx) => out.accept(line.number, tx),
            Err(e) => out.reject(e.reject(&line)),
        });
        Ok(())
    }
}

accord_plugin_sdk::export_parser!(Template);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_rejects_bad_ones() {
        let input = b"A1,24.50,GBP,2024-03-09T18:42:10Z\nA2,oops,GBP,2024-03-09T18:43:00Z\n";
        let out = accord_plugin_sdk::testing::run_parser::<Template>("{}", input, 5).unwrap();
        assert_eq!(out.transactions.len(), 1);
        assert_eq!(out.transactions[0].transaction.amount.minor_units, 2450);
        assert_eq!(out.rejects[0].row, Some(2));
        assert_eq!(out.rejects[0].field.as_deref(), Some("amount"));
    }
}
"#;

const MATCHER_TEMPLATE: &str = r#"//! A matcher plugin: the one candidate with the payment's auth code, else none.

use accord_plugin_sdk::prelude::*;

#[derive(serde::Deserialize)]
pub struct Config {}

pub struct Template;

impl Matcher for Template {
    type Config = Config;

    fn open(_config: Config) -> Result<Self, PluginError> {
        Ok(Template)
    }

    fn decide(&mut self, group: &Group) -> Decision {
        let same_code: Vec<usize> = group
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.auth_code.is_some() && c.auth_code == group.payment.auth_code)
            .map(|(i, _)| i)
            .collect();
        match same_code[..] {
            [one] => Decision::chosen(one, "auth-code", 100),
            [] => Decision::none("no candidate with the auth code"),
            _ => Decision::none("ambiguous: several candidates with the auth code"),
        }
    }
}

accord_plugin_sdk::export_matcher!(Template);

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(id: &str, code: &str) -> Transaction {
        let mut t = Transaction::new(id, Side::Merchant, Kind::Sale, Money::new(2450, "GBP"), Timestamp::new(0, 0, 0));
        t.auth_code = Some(code.into());
        t
    }

    #[test]
    fn picks_the_candidate_with_the_auth_code() {
        let group = Group { payment: tx("p", "731904"), cardholder: None, candidates: vec![tx("a", "000000"), tx("b", "731904")] };
        let d = accord_plugin_sdk::testing::run_matcher::<Template>("{}", &[group]).unwrap();
        assert_eq!(d[0].chosen, Some(1));
    }
}
"#;

const ROUTER_TEMPLATE: &str = r##"//! A router plugin: every transaction to the `default` destination as JSON.

use accord_plugin_sdk::prelude::*;

#[derive(serde::Deserialize)]
pub struct Config {
    #[serde(default = "default_destination")]
    pub destination: String,
}

fn default_destination() -> String {
    "default".into()
}

pub struct Template {
    destination: String,
}

impl Router for Template {
    type Config = Config;

    fn open(config: Config) -> Result<Self, PluginError> {
        Ok(Template { destination: config.destination })
    }

    fn route(&mut self, item: &Item) -> Result<Vec<Route>, PluginError> {
        let Item::Transaction(tx) = item else { return Ok(vec![]) };
        let payload = format!(
            r#"{{"id":"{}","amount_minor":{},"currency":"{}"}}"#,
            tx.external_id, tx.amount.minor_units, tx.amount.currency
        );
        Ok(vec![Route {
            destination: self.destination.clone(),
            payload: payload.into_bytes(),
            content_type: "application/json".into(),
            idempotency_key: tx.external_id.clone(),
            not_before: None,
        }])
    }
}

accord_plugin_sdk::export_router!(Template);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_each_transaction_once() {
        let tx = Transaction::new("t1", Side::Standalone, Kind::Transfer, Money::new(100, "EUR"), Timestamp::new(0, 0, 0));
        let routes = accord_plugin_sdk::testing::run_router::<Template>("{}", &[Item::Transaction(tx)]).unwrap();
        assert_eq!(routes[0][0].idempotency_key, "t1");
    }
}
"##;
