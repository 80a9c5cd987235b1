//! Persistence: the only module with SQL.
//!
//! Owns the schema (`migrations/`, exported as [`MIGRATOR`]) and every read
//! and write of it. An import goes through two database transactions:
//!
//! 1. **Receive** ([`Store::begin_receive`] → [`Receiving`]): the raw bytes
//!    are streamed into `import_chunks` while their sha256 and size are
//!    computed; at [`Receiving::finish`] the import row is written as
//!    `received`, or as a `duplicate` of an earlier import of the same bytes
//!    for the same source (its chunks are then discarded). Until that commit
//!    nothing of the import is visible, so a crash mid-body leaves no trace.
//! 2. **Parse** ([`Store::begin_parse`] → [`Parsing`]): parsed batches are
//!    COPYed into a per-transaction staging table (and rejects straight into
//!    `rejects`), then [`Parsing::commit`] merges them into `transactions`
//!    with `ON CONFLICT DO NOTHING` and marks the import `parsed` — all of
//!    one import or none of it. An import still `received` after a crash is
//!    re-parsed from its retained chunks ([`Store::pending_imports`],
//!    [`Store::import_chunks`]).
//!
//! Every transition also appends to `events`, which the database itself keeps
//! append-only.
//!
//! This module must not know about plugins, HTTP or files on disk: it speaks
//! [`crate::domain`] types and plain values. [`embedded`] is the exception
//! that proves the rule: it runs a private PostgreSQL server, and still no
//! SQL leaves this module.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres};

pub mod cache;
pub mod embedded;
mod identify;
pub mod matching;
mod parse;
mod read;
mod receive;
mod reference;
#[cfg(test)]
mod tests;

pub use cache::TransactionCache;
pub use matching::{
    Explanation, MatchFilter, MatchRow, PaymentFilter, PaymentRow, RedressError, Reidentified,
    ReviewRow, StageCounts,
};
pub use parse::{ParseCounts, Parsing};
pub use read::{ImportFilter, ImportRow, Page, StoredReject, StoredTransaction, TransactionFilter};
pub use receive::{CHUNK_SIZE, NewImport, Received, Receiving};
pub use reference::{
    Card, IdentifierType, MatchSettings, Merchant, MerchantMode, Mid, MidFilter, MidImport,
    MidUpdate, NewMerchant, NewMid, Resolution, RowError, SettingsPatch, valid_slug,
};

/// The schema, embedded at compile time; applied at start-up and by
/// `accord migrate`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Pool size: the daemon's concurrency is bounded elsewhere (ingest queues);
/// each in-flight receive or parse holds one connection for its whole
/// transaction, and 8 keeps a small PostgreSQL comfortable on 2 cores.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;

/// How long a caller waits for a pooled connection before the store reports
/// itself [`StoreError::Unavailable`] (HTTP 503) instead of hanging a request.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operation contradicts the current state (e.g. parsing an import
    /// that is no longer `received`, or a uniqueness violation).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The database cannot be reached or cannot take the work right now
    /// (connection refused or lost, pool exhausted, shutting down, disk full).
    /// Retrying later may succeed; HTTP answers 503.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("database error: {0}")]
    Db(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                StoreError::Unavailable(e)
            }
            E::Database(db) => match db.code().as_deref() {
                // 08: connection exception; 53: insufficient resources (disk
                // full, out of memory, too many connections); 57P01-03: the
                // server is shutting down or starting up.
                Some(c) if c.starts_with("08") || c.starts_with("53") => StoreError::Unavailable(e),
                Some("57P01" | "57P02" | "57P03") => StoreError::Unavailable(e),
                Some("23505") => StoreError::Conflict(db.message().to_owned()),
                _ => StoreError::Db(e),
            },
            _ => StoreError::Db(e),
        }
    }
}

impl StoreError {
    /// True when retrying later could succeed (see [`StoreError::Unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// True when PostgreSQL rolled the transaction back to break a deadlock
    /// or a serialization conflict with a concurrent one (40P01, 40001):
    /// nothing was written, and running it again is the remedy.
    pub fn is_concurrency_abort(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("40P01" | "40001"))
            }
            _ => false,
        }
    }
}

/// How an import arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Directory,
    Http,
    Cli,
}

/// Where an import is in its life: `received` → `parsed` | `failed`, or
/// `duplicate` from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    Received,
    Parsed,
    Failed,
    Duplicate,
}

macro_rules! sql_enum {
    ($t:ident { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($s => Ok(Self::$v),)*
                    other => Err(format!("unknown {} `{other}`", stringify!($t))),
                }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

sql_enum!(Channel { Directory => "directory", Http => "http", Cli => "cli" });
sql_enum!(ImportStatus {
    Received => "received",
    Parsed => "parsed",
    Failed => "failed",
    Duplicate => "duplicate",
});

/// Settings for [`Store::connect_with`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// Size of the in-memory copy of stored transactions between staging
    /// and matching ([`TransactionCache`]); 0 turns it off.
    pub transaction_cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            transaction_cache_bytes: cache::DEFAULT_CACHE_BYTES,
        }
    }
}

/// Handle to the database; cheap to clone (it wraps the pool and shares
/// the transaction cache).
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    transactions: Arc<TransactionCache>,
}

impl Store {
    /// Connect with [`StoreOptions::default`]. Fails with
    /// [`StoreError::Unavailable`] if the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Store> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Store> {
        let connect: PgConnectOptions = url.parse().map_err(StoreError::Db)?;
        // accord's statements are many and short-lived; the JIT's compile
        // time (tens to hundreds of ms a statement once the planner's cost
        // passes `jit_above_cost`) is paid on every matching batch and never
        // won back (`bench match`).
        let connect = connect.options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        Ok(Store {
            pool,
            transactions: Arc::new(TransactionCache::new(options.transaction_cache_bytes)),
        })
    }

    /// Wrap an existing pool (tests get one from `#[sqlx::test]`), with a
    /// transaction cache of the default size.
    pub fn from_pool(pool: PgPool) -> Store {
        Store {
            pool,
            transactions: Arc::new(TransactionCache::new(cache::DEFAULT_CACHE_BYTES)),
        }
    }

    /// The in-memory copy of stored transactions (see [`TransactionCache`]).
    pub fn transaction_cache(&self) -> &TransactionCache {
        &self.transactions
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Apply pending migrations. Safe to run concurrently from several
    /// processes (sqlx takes an advisory lock).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// A cheap round trip, for readiness probes.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Close the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Append one row to the event log on `conn` (inside the caller's
/// transaction, so the event commits or vanishes with what it describes).
pub(crate) async fn record_event(
    conn: &mut PgConnection,
    entity: &str,
    entity_id: i64,
    stage: &str,
    actor: &str,
    detail: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (entity, entity_id, stage, actor, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(entity)
    .bind(entity_id)
    .bind(stage)
    .bind(actor)
    .bind(sqlx::types::Json(detail))
    .execute(conn)
    .await?;
    Ok(())
}

/// How a plugin build is named in `events.actor`.
pub(crate) fn plugin_actor(plugin: &crate::domain::PluginIdentity) -> String {
    format!("plugin:{}@{}", plugin.name, plugin.version)
}

type Tx = sqlx::Transaction<'static, Postgres>;
