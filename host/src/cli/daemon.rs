//! `accord run`, `accord migrate`, `accord import`: the operator's commands.
//!
//! Each builds its own multi-thread tokio runtime (`main` stays sync), loads
//! the configuration (`--config`, else `./accord.toml` if present, else the
//! built-in defaults; `ACCORD_*` variables override either), and opens the
//! store — the configured `database_url`, or the embedded PostgreSQL under
//! the data dir.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt as _;

use crate::config::Config;
use crate::ingest::Inboxes;
use crate::pipeline::{self, Context, ImportOutcome, IngestError};
use crate::plugins::{Runtime, RuntimeOptions};
use crate::store::embedded::{EmbeddedPostgres, SOCKET_PORT};
use crate::store::{Channel, Store, StoreOptions};

/// How often the plugins directory is rescanned behind notify.
const PLUGIN_RESCAN: Duration = Duration::from_secs(2);

/// How long in-progress inbox imports get to finish at shutdown; whatever is
/// cut off rolls back and is redone at the next start.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How often the daemon looks for imports left `received` by a store
/// outage, and how old they must be (older than any parse in progress).
const RECOVER_EVERY: Duration = Duration::from_secs(60);

/// Files at least this big get a progress bar in `accord import`.
const PROGRESS_MIN_BYTES: u64 = 8 * 1024 * 1024;

pub(super) fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("accord")
        .build()
        .context("starting the async runtime")
}

/// `--config`, else `./accord.toml` when present, else defaults.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let default = Path::new("accord.toml");
    let path = match path {
        Some(p) => Some(p),
        None if default.is_file() => Some(default),
        None => None,
    };
    Ok(Config::load(path, std::env::vars())?)
}

/// The store, and the embedded server behind it when we run one.
pub(super) struct Database {
    pub(super) store: Store,
    embedded: Option<EmbeddedPostgres>,
}

/// The store's settings from the config.
fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        transaction_cache_bytes: config.transaction_cache_mb << 20,
        ..StoreOptions::default()
    }
}

impl Database {
    /// `own`: stop an embedded server at close even if it was already
    /// running (the daemon adopts one left by a crash); one-shot commands
    /// leave a running daemon's server alone.
    pub(super) async fn open(config: &Config, own: bool) -> anyhow::Result<Database> {
        if let Some(url) = &config.database_url {
            let store = Store::connect_with(url, store_options(config))
                .await
                .with_context(|| format!("connecting to {}", crate::config::redact_url(url)))?;
            return Ok(Database {
                store,
                embedded: None,
            });
        }
        let running = !own && embedded_is_running(&config.data_dir);
        let pg = EmbeddedPostgres::start(&config.data_dir)
            .await
            .context("starting the embedded PostgreSQL")?;
        tracing::info!(socket = %pg.socket_dir().display(), "embedded PostgreSQL up");
        let store = Store::connect_with(pg.url(), store_options(config))
            .await
            .context("connecting to the embedded PostgreSQL")?;
        let embedded = if running {
            // Someone else's (a running daemon's): never stop it.
            std::mem::forget(pg);
            None
        } else {
            Some(pg)
        };
        Ok(Database { store, embedded })
    }

    pub(super) async fn close(self) {
        self.store.close().await;
        if let Some(pg) = self.embedded
            && let Err(e) = pg.stop().await
        {
            tracing::warn!(error = %e, "stopping the embedded PostgreSQL");
        }
    }
}

fn embedded_is_running(data_dir: &Path) -> bool {
    let socket = std::fs::canonicalize(data_dir)
        .unwrap_or_else(|_| data_dir.to_owned())
        .join("run")
        .join(format!(".s.PGSQL.{SOCKET_PORT}"));
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

fn plugin_runtime(config: &Config) -> anyhow::Result<Runtime> {
    std::fs::create_dir_all(&config.plugins_dir)
        .with_context(|| format!("creating {}", config.plugins_dir.display()))?;
    let runtime = Runtime::new(RuntimeOptions {
        plugins_dir: Some(config.plugins_dir.clone()),
        cache_dir: config.data_dir.join("cache"),
    })?;
    let report = runtime.rescan();
    for (name, error) in &report.failed {
        tracing::error!(plugin = %name, error = %error, "plugin failed to load");
    }
    tracing::info!(loaded = ?report.loaded, dir = %config.plugins_dir.display(), "plugins");
    Ok(runtime)
}

/// Log every source whose parser is not an active parser plugin.
fn check_parsers(config: &Config, runtime: &Runtime) {
    for source in &config.sources {
        match runtime.get(&source.parser) {
            Ok(slot) if slot.kind() == crate::domain::PluginKind::Parser => {}
            Ok(slot) => tracing::error!(
                source = %source.name, parser = %source.parser, kind = %slot.kind(),
                "the source's parser plugin is not a parser; its imports will fail"
            ),
            Err(_) => tracing::error!(
                source = %source.name, parser = %source.parser, plugins_dir = %config.plugins_dir.display(),
                "the source's parser plugin is not active; its imports will fail until it is installed"
            ),
        }
    }
}

pub fn migrate(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load_config(config.as_deref())?;
    tokio_runtime()?.block_on(async {
        let db = Database::open(&config, false).await?;
        let result = db.store.migrate().await.context("applying migrations");
        db.close().await;
        result?;
        println!("database schema is up to date");
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load_config(config.as_deref())?;
    tokio_runtime()?.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let db = Database::open(&config, true).await?;
    let result = serve_on(config, db.store.clone()).await;
    db.close().await;
    result
}

async fn serve_on(config: Config, store: Store) -> anyhow::Result<ExitCode> {
    store.migrate().await.context("applying migrations")?;
    let runtime = plugin_runtime(&config)?;
    let _plugin_watch = runtime.watch(PLUGIN_RESCAN)?;
    check_parsers(&config, &runtime);

    let ctx = Arc::new(Context {
        store: store.clone(),
        runtime,
        config: Arc::new(config),
    });
    let recovered = pipeline::recover(&ctx)
        .await
        .context("recovering imports left received")?;
    if recovered > 0 {
        tracing::info!(imports = recovered, "recovered imports");
    }

    let listener = tokio::net::TcpListener::bind(ctx.config.listen)
        .await
        .with_context(|| format!("listening on {}", ctx.config.listen))?;
    let addr = listener.local_addr()?;
    let inboxes = Inboxes::start(ctx.clone()).context("creating the inboxes")?;

    println!("accord is running: http://{addr}");
    for source in &ctx.config.sources {
        if let Some(inbox) = &source.inbox {
            println!(
                "  {:<24} drop {} files into {}",
                source.name,
                inbox.glob,
                inbox.path.display()
            );
        }
        if source.http {
            println!(
                "  {:<24} curl --data-binary @FILE http://{addr}/v1/sources/{}/imports",
                source.name, source.name
            );
        }
    }
    if ctx.config.sources.is_empty() {
        println!("  no sources configured: add [[sources]] to accord.toml");
    }

    let recovery = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let mut tick = tokio::time::interval(RECOVER_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = pipeline::recover_older_than(&ctx, RECOVER_EVERY).await {
                    tracing::warn!(error = %e, "periodic recovery");
                }
            }
        }
    });

    let matching = tokio::spawn(pipeline::matching::run_engine(ctx.clone()));

    let app = crate::api::router(ctx.clone());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    tracing::info!("shutting down");
    recovery.abort();
    // A pass cut off here rolls back; the next start redoes it.
    matching.abort();
    inboxes.shutdown(SHUTDOWN_GRACE).await;
    served.context("serving HTTP")?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// One row of `accord import`'s summary.
struct Row {
    file: String,
    result: Result<ImportOutcome, IngestError>,
}

pub fn import(
    source: String,
    files: Vec<PathBuf>,
    config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config.as_deref())?;
    if config.source(&source).is_none() {
        let known: Vec<_> = config.sources.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "unknown source `{source}` (configured: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    tokio_runtime()?.block_on(async {
        let db = Database::open(&config, false).await?;
        let result = import_files(config, db.store.clone(), &source, &files).await;
        db.close().await;
        let rows = result?;
        print_summary(&rows);
        let failed = rows.iter().any(|r| r.result.is_err());
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}

async fn import_files(
    config: Config,
    store: Store,
    source: &str,
    files: &[PathBuf],
) -> anyhow::Result<Vec<Row>> {
    store.migrate().await.context("applying migrations")?;
    let runtime = plugin_runtime(&config)?;
    check_parsers(&config, &runtime);
    let ctx = Context {
        store,
        runtime,
        config: Arc::new(config),
    };
    let mut rows = Vec::new();
    for path in files {
        let file = path.display().to_string();
        let result = import_one(&ctx, source, path).await;
        if let Err(e) = &result {
            // Unparseable imports were logged by the pipeline.
            if !matches!(e, IngestError::Unparseable { .. }) {
                tracing::error!(file = %file, error = %e, "import failed");
            }
        }
        rows.push(Row { file, result });
    }
    // What a daemon would do next: stage and match what is now there.
    match pipeline::matching::run_until_idle(&ctx).await {
        Ok(stats) => println!(
            "matching: {} import(s) staged, {} payment(s) created, {} settled onto a payment, \
             {} unidentified; {} matched, {} to review, {} without a match, {} matcher error(s)",
            stats.imports_staged,
            stats.staged.payments_created,
            stats.staged.payments_settled,
            stats.staged.unidentified,
            stats.decided.matched,
            stats.decided.reviews,
            stats.decided.unmatched,
            stats.decided.errors,
        ),
        Err(e) => tracing::error!(error = %e, "matching after import"),
    }
    Ok(rows)
}

async fn import_one(
    ctx: &Context,
    source: &str,
    path: &Path,
) -> Result<ImportOutcome, IngestError> {
    let file = tokio::fs::File::open(path).await?;
    let size = file.metadata().await?.len();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let bar = (size >= PROGRESS_MIN_BYTES).then(|| {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(name.clone().unwrap_or_default());
        bar
    });
    let (counting, done) = (bar.clone(), bar.clone());
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1024 * 1024)
        .inspect(move |piece| {
            if let (Some(bar), Ok(piece)) = (&counting, piece) {
                bar.inc(piece.len() as u64);
            }
        })
        .chain(futures::stream::once(async move {
            if let Some(bar) = &done {
                bar.set_message("parsing");
            }
            Ok(bytes::Bytes::new())
        }));
    let result = pipeline::import_stream(
        ctx,
        source,
        Channel::Cli,
        name,
        None,
        u64::MAX,
        Box::pin(body),
    )
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

fn print_summary(rows: &[Row]) {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "file",
        "import",
        "status",
        "accepted",
        "duplicates",
        "rejected",
        "error",
    ]);
    for row in rows {
        let cells = match &row.result {
            Ok(o) => {
                let counts = o.counts.unwrap_or_default();
                let (a, d, r) = match o.counts {
                    Some(_) => (
                        counts.accepted.to_string(),
                        counts.duplicates.to_string(),
                        counts.rejected.to_string(),
                    ),
                    None => Default::default(),
                };
                let note = match o.duplicate_of {
                    Some(first) => format!("same bytes as import {first}"),
                    None => o.error.clone().unwrap_or_default(),
                };
                vec![
                    row.file.clone(),
                    o.import_id.to_string(),
                    o.status.to_string(),
                    a,
                    d,
                    r,
                    note,
                ]
            }
            Err(IngestError::Unparseable { import_id, reason }) => vec![
                row.file.clone(),
                import_id.to_string(),
                "failed".into(),
                String::new(),
                String::new(),
                String::new(),
                reason.clone(),
            ],
            Err(e) => vec![
                row.file.clone(),
                String::new(),
                "error".into(),
                String::new(),
                String::new(),
                String::new(),
                e.to_string(),
            ],
        };
        t.add_row(cells);
    }
    println!("{t}");
    for row in rows {
        if let Ok(o) = &row.result
            && !o.rejects.is_empty()
        {
            println!("rejected rows of {} (first {}):", row.file, o.rejects.len());
            for r in &o.rejects {
                println!(
                    "  row {}: {}{}",
                    r.reject
                        .row
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "?".into()),
                    r.reject
                        .field
                        .as_deref()
                        .map(|f| format!("{f}: "))
                        .unwrap_or_default(),
                    r.reject.reason
                );
            }
        }
    }
}
