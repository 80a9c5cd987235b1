//! The pipeline: each stage a plain async fn over domain types.
//!
//! ingest (channels) → receive (raw bytes retained) → parse (plugin) → commit
//! → identify + match ([`matching`]: staging, candidate selection, matcher
//! plugins, sweep). Route and deliver will go beside them.
//!
//! The channels (directory, HTTP, CLI) all call [`import_stream`]; crash
//! recovery calls [`recover`]. What this module guarantees:
//!
//! - **Receive** ([`import_stream`]) streams the body into the store, which
//!   retains it byte for byte and decides duplicate-or-not in one database
//!   transaction. Memory is bounded by one store chunk
//!   ([`crate::store::CHUNK_SIZE`]) plus one body piece. A body over the
//!   limit is dropped before anything is recorded (the receive transaction
//!   rolls back): the caller gets [`IngestError::TooLarge`] and logs or
//!   answers it; a payload we refused to take has no bytes to retain.
//! - **Parse + commit** ([`parse_import`]) streams the retained chunks back
//!   through the source's parser plugin and COPYs each batch into staging as
//!   it comes, then commits the whole import in one database transaction.
//!   Anything the plugin could not do (unknown plugin, guest error, trap)
//!   marks the import `failed` with that reason; a store that is unavailable
//!   leaves it `received`, for [`recover`] (or the next attempt) to redo.
//!
//! This module must not know about files, HTTP or SQL: the channels own
//! the first two, the store the last.

pub mod matching;
mod parse;
mod receive;
pub mod reference;

pub(crate) use parse::settled;
pub use parse::{REJECTS_IN_OUTCOME, parse_import, recover, recover_older_than};
pub use receive::import_stream;

use crate::config::Config;
use crate::plugins::Runtime;
use crate::store::{ImportStatus, ParseCounts, Store, StoreError, StoredReject};
use std::sync::Arc;

/// Everything a stage needs.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub runtime: Runtime,
    pub config: Arc<Config>,
}

/// What happened to one import.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportOutcome {
    pub import_id: i64,
    pub source: String,
    pub status: ImportStatus,
    /// For a duplicate import: the import that first brought these bytes.
    pub duplicate_of: Option<i64>,
    /// accepted / duplicates / rejected, once parsed.
    pub counts: Option<ParseCounts>,
    /// The first rejected rows with their reasons (bounded).
    pub rejects: Vec<StoredReject>,
    /// Why the import failed, when it did.
    pub error: Option<String>,
}

/// Why an import could not be taken in at all, or failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("unknown source `{0}`")]
    UnknownSource(String),
    #[error("payload exceeds the {limit} byte limit")]
    TooLarge { limit: u64 },
    #[error("source `{source_name}` does not accept content type `{content_type}`")]
    UnsupportedContentType {
        source_name: String,
        content_type: String,
    },
    /// The plugin could not read the input as a whole (or trapped); the
    /// import is recorded as failed with this reason.
    #[error("import {import_id} failed: {reason}")]
    Unparseable { import_id: i64, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the payload: {0}")]
    Io(#[from] std::io::Error),
}
