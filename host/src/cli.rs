//! The command line: what a user or operator types. Parsing lives here; each
//! command group has its own module.

mod bench;
mod bench_match;
mod daemon;
mod plugin;
mod reference;

use crate::domain::PluginKind;
use crate::store::MerchantMode;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "accord",
    version,
    about = "Payment-operations daemon: sandboxed wasm parsers, matchers and routers over PostgreSQL"
)]
pub struct Cli {
    /// More log output (debug level); `RUST_LOG` overrides.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: watch the inboxes, serve the HTTP API, parse and
    /// store everything that arrives.
    Run {
        /// Configuration file (default: ./accord.toml if present, else
        /// built-in defaults; ACCORD_* variables override either).
        #[arg(long, env = "ACCORD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        #[arg(long, env = "ACCORD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run files through a source's pipeline once and print a summary.
    Import {
        /// The source (as named in the configuration).
        source: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, env = "ACCORD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Work with plugins: scaffold, build, check, test, list.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Merchant identifiers (MIDs): onboard from a file, list.
    #[command(subcommand)]
    Mids(MidsCommand),
    /// Merchants (loyalty schemes) that MIDs belong to.
    #[command(subcommand)]
    Merchants(MerchantsCommand),
    /// The card registry (card token → first six, last four, loyalty id).
    #[command(subcommand)]
    Cards(CardsCommand),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Scaffold a plugin crate that builds and tests green.
    New {
        #[arg(long, value_parser = parse_kind)]
        kind: PluginKind,
        /// Crate / plugin name, e.g. `acme-csv`.
        name: String,
        /// Parent directory of the new crate (default: current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path to the `plugin-sdk` directory (default: the one this accord was
        /// built from, or $ACCORD_SDK_PATH).
        #[arg(long, env = "ACCORD_SDK_PATH")]
        sdk: Option<PathBuf>,
    },
    /// Build plugin crates to components and install them (wasm + manifest)
    /// into a plugins directory.
    Build {
        /// Plugin crate directories (each with a manifest.toml); default: every
        /// crate under ./plugins.
        crates: Vec<PathBuf>,
        /// Where to install `<name>.wasm` + `<name>.toml`.
        #[arg(long, default_value = "accord-data/plugins")]
        out: PathBuf,
    },
    /// Inspect a component: kind, contract version, imports, and the verdict.
    Check {
        file: PathBuf,
        /// Also require this kind.
        #[arg(long, value_parser = parse_kind)]
        kind: Option<PluginKind>,
    },
    /// Run a parser component over a file and print its transactions and rejects.
    Test {
        file: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// Parser config: a JSON or TOML file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Bytes per push call.
        #[arg(long, default_value_t = 256 * 1024)]
        chunk_size: usize,
    },
    /// Show the plugins in a plugins directory with version, sha256 and status
    /// (from the running daemon when it answers, else by loading the directory).
    List {
        #[arg(long, default_value = "accord-data/plugins")]
        plugins_dir: PathBuf,
        /// The daemon's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        daemon: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MidsCommand {
    /// Onboard MIDs from a CSV or JSON file (by extension). Bad lines are
    /// printed and make the exit status non-zero; the good ones load.
    Import {
        file: PathBuf,
        #[arg(long, env = "ACCORD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Offboard MIDs: one by identifier + type + provider, or every MID of
    /// a merchant's location.
    Remove {
        #[arg(long, requires_all = ["identifier_type", "provider"], conflicts_with_all = ["merchant", "location_id"])]
        identifier: Option<String>,
        #[arg(long = "type", value_parser = parse_identifier_type)]
        identifier_type: Option<crate::store::IdentifierType>,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long, requires = "location_id")]
        merchant: Option<String>,
        #[arg(long)]
        location_id: Option<String>,
        #[arg(long, env = "ACCORD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Change a MID's location id and/or merchant internal id (`""` clears).
    Update {
        /// The MID's id (from `accord mids list`).
        id: i64,
        #[arg(long)]
        location_id: Option<String>,
        #[arg(long)]
        merchant_internal_id: Option<String>,
        #[arg(long, env = "ACCORD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Show registered MIDs, newest first.
    List {
        /// Only this merchant's (slug).
        #[arg(long)]
        merchant: Option<String>,
        /// Only this provider's (visa, amex, mastercard).
        #[arg(long)]
        provider: Option<String>,
        #[arg(long, env = "ACCORD_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MerchantsCommand {
    /// Create a merchant, or update an existing slug.
    Add {
        slug: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "match", value_parser = parse_mode)]
        mode: MerchantMode,
        /// Do not match payments whose card token is not in the registry.
        #[arg(long)]
        registered_cards_only: bool,
        /// Candidates ingested since the start of (today - N days) (default 14).
        #[arg(long)]
        lookback_days: Option<i32>,
        /// Pending payments dated before the start of (today - N days)
        /// become UNMATCHED (default: never).
        #[arg(long)]
        unmatched_after_days: Option<i32>,
        /// Absolute amount tolerance, in minor units (default 0: exact).
        #[arg(long)]
        tolerance_minor: Option<i64>,
        /// Percent amount tolerance, in basis points of the payment (100 = 1 %).
        #[arg(long)]
        tolerance_bp: Option<i32>,
        /// Decisions below this confidence go to review (default 80).
        #[arg(long)]
        auto_confirm_confidence: Option<i16>,
        /// Matcher plugin (default `harmonia`).
        #[arg(long)]
        matcher: Option<String>,
        /// Matcher config as a JSON object (default `{}`; the host adds the
        /// merchant's slug as "merchant").
        #[arg(long, value_parser = parse_json_object)]
        matcher_config: Option<serde_json::Value>,
        #[arg(long, env = "ACCORD_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn parse_json_object(s: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err("expected a JSON object".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Subcommand)]
pub enum CardsCommand {
    /// Load card-registry entries from a CSV or JSON file (by extension).
    Import {
        file: PathBuf,
        #[arg(long, env = "ACCORD_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Per-call overhead and CSV parser throughput, wasm vs native.
    Plugins {
        /// Rows in the generated CSV.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// The CSV parser component (default: build plugins/csv).
        #[arg(long)]
        wasm: Option<PathBuf>,
    },
    /// CSV plugin → PostgreSQL vs raw COPY of the same rows; peak RSS of
    /// `accord import` on a large file.
    Ingest {
        /// Rows in the generated CSV.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Size of the large file for the peak-RSS run, in MiB (0: skip).
        #[arg(long, default_value_t = 1024)]
        big_mb: u64,
        /// PostgreSQL server to create the bench database on (default:
        /// $DATABASE_URL, else the local server).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Matching: Visa and Mastercard payments against a merchant feed over
    /// many merchants with Harmonia's rules and deliberate ambiguity, from
    /// ingested to all matches committed; matches/s and a correctness check.
    Match {
        /// Purchases: payment-side transactions, each with one true
        /// merchant-side record (about one in ten also gets a decoy).
        #[arg(long, default_value_t = 1_000_000)]
        payments: usize,
        /// Merchants the purchases are spread over.
        #[arg(long, default_value_t = 1000)]
        merchants: usize,
        /// PostgreSQL server to create the bench database on (default:
        /// $DATABASE_URL, else the local server).
        #[arg(long)]
        database_url: Option<String>,
        /// Keep the bench database (its URL is printed) instead of dropping it.
        #[arg(long)]
        keep_database: bool,
        /// The daemon's `transaction_cache_mb` for the run.
        #[arg(long, default_value_t = crate::config::DEFAULT_TRANSACTION_CACHE_MB)]
        transaction_cache_mb: u64,
        /// The daemon's `match_workers` for the run (1–64).
        #[arg(long, default_value_t = crate::config::DEFAULT_MATCH_WORKERS)]
        match_workers: usize,
    },
}

fn parse_identifier_type(s: &str) -> Result<crate::store::IdentifierType, String> {
    s.parse()
}

fn parse_mode(s: &str) -> Result<MerchantMode, String> {
    s.parse()
}

fn parse_kind(s: &str) -> Result<PluginKind, String> {
    s.parse()
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => daemon::run(config),
        Command::Migrate { config } => daemon::migrate(config),
        Command::Import {
            source,
            files,
            config,
        } => daemon::import(source, files, config),
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Mids(MidsCommand::Import { file, config }) => reference::import_mids(file, config),
        Command::Mids(MidsCommand::Remove {
            identifier,
            identifier_type,
            provider,
            merchant,
            location_id,
            config,
        }) => reference::remove_mids(
            identifier.zip(identifier_type).zip(provider),
            merchant.zip(location_id),
            config,
        ),
        Command::Mids(MidsCommand::Update {
            id,
            location_id,
            merchant_internal_id,
            config,
        }) => reference::update_mid(id, location_id, merchant_internal_id, config),
        Command::Mids(MidsCommand::List {
            merchant,
            provider,
            config,
        }) => reference::list_mids(merchant, provider, config),
        Command::Merchants(MerchantsCommand::Add {
            slug,
            name,
            mode,
            lookback_days,
            unmatched_after_days,
            tolerance_minor,
            tolerance_bp,
            auto_confirm_confidence,
            matcher,
            matcher_config,
            registered_cards_only,
            config,
        }) => reference::add_merchant(
            slug,
            name,
            mode,
            !registered_cards_only,
            crate::store::SettingsPatch {
                lookback_days,
                unmatched_after_days: unmatched_after_days.map(Some),
                tolerance_minor,
                tolerance_bp,
                auto_confirm_confidence,
                matcher,
                matcher_config,
                ..Default::default()
            },
            config,
        ),
        Command::Cards(CardsCommand::Import { file, config }) => {
            reference::import_cards(file, config)
        }
        Command::Bench(BenchCommand::Plugins { rows, wasm }) => bench::plugins(rows, wasm),
        Command::Bench(BenchCommand::Ingest {
            rows,
            big_mb,
            database_url,
        }) => bench::ingest(rows, big_mb, database_url),
        Command::Bench(BenchCommand::Match {
            payments,
            merchants,
            database_url,
            keep_database,
            transaction_cache_mb,
            match_workers,
        }) => bench_match::run(
            payments,
            merchants,
            database_url,
            keep_database,
            bench_match::Tuning {
                cache_mb: transaction_cache_mb,
                match_workers,
            },
        ),
    }
}
