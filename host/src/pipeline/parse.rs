//! Stage 2: run a received import's retained bytes through its source's
//! parser plugin and commit the result, all of it or none.
//!
//! Three things run at once so neither the sandbox nor the database waits
//! on the other: a feeder reads retained chunks from the store, a blocking
//! thread owns the plugin session and parses them, and the caller's task
//! COPYs each batch into staging. The queues between them hold
//! [`QUEUE_DEPTH`] items, so memory stays at a few chunks and their batches
//! whatever the file's size.

use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::{Context, ImportOutcome, IngestError};
use crate::domain::{ParsedBatch, PluginIdentity};
use crate::plugins::{ParseSession, PluginError};
use crate::store::{ImportRow, ImportStatus, ParseCounts, Parsing, StoreError};

/// How many rejected rows an outcome carries; the rest are in the store.
pub const REJECTS_IN_OUTCOME: u32 = 100;

/// Chunks (and batches) in flight between the three parties: two keeps each
/// busy while the next is on its way.
const QUEUE_DEPTH: usize = 2;

/// Parse and commit import `import_id`, which must have been received.
///
/// An import that is no longer `received` (another worker got there first)
/// is not parsed again: its current outcome is returned. A plugin that is
/// missing, refuses the input or traps fails the import with the reason
/// (and the plugin build) recorded, and returns [`IngestError::Unparseable`].
/// When the store is unavailable the import stays `received` and the error
/// is returned: [`recover`] or a later attempt redoes it.
pub async fn parse_import(ctx: &Context, import_id: i64) -> Result<ImportOutcome, IngestError> {
    let Some(row) = ctx.store.get_import(import_id).await? else {
        return Err(StoreError::NotFound(format!("import {import_id}")).into());
    };
    let root = tracing::info_span!("import", id = import_id, source = %row.source);
    async move {
        if row.status != ImportStatus::Received {
            return settled(ctx, row).await;
        }
        let Some(source) = ctx.config.source(&row.source) else {
            // Without its source we do not know the parser: leave it received
            // until the source is configured again.
            return Err(IngestError::UnknownSource(row.source.clone()));
        };
        let mut plugin = None;
        let result = run(
            ctx,
            &row,
            &source.parser,
            &source.parser_config,
            &mut plugin,
        )
        .await;
        match result {
            Ok(counts) => {
                tracing::info!(
                    accepted = counts.accepted,
                    duplicates = counts.duplicates,
                    rejected = counts.rejected,
                    "import parsed"
                );
                let rejects = if counts.rejected > 0 {
                    ctx.store
                        .rejects_for_import(import_id, REJECTS_IN_OUTCOME)
                        .await?
                } else {
                    Vec::new()
                };
                Ok(ImportOutcome {
                    import_id,
                    source: row.source.clone(),
                    status: ImportStatus::Parsed,
                    duplicate_of: None,
                    counts: Some(counts),
                    rejects,
                    error: None,
                })
            }
            Err(Failure::Store(e)) if e.is_unavailable() => Err(e.into()),
            Err(Failure::Store(StoreError::Conflict(_))) => {
                // Parsed or failed meanwhile by someone else (recovery racing
                // a channel): theirs is the answer.
                let Some(row) = ctx.store.get_import(import_id).await? else {
                    return Err(StoreError::NotFound(format!("import {import_id}")).into());
                };
                settled(ctx, row).await
            }
            Err(failure) => {
                let reason = match failure {
                    Failure::Plugin(e) => e.to_string(),
                    Failure::Store(e) => format!("storing the parsed rows failed: {e}"),
                    Failure::Panicked => "the parser stopped unexpectedly".to_owned(),
                };
                match ctx
                    .store
                    .fail_import(import_id, &reason, plugin.as_ref())
                    .await
                {
                    Ok(()) => {}
                    Err(StoreError::Conflict(_)) => {
                        let Some(row) = ctx.store.get_import(import_id).await? else {
                            return Err(StoreError::NotFound(format!("import {import_id}")).into());
                        };
                        return settled(ctx, row).await;
                    }
                    Err(e) => return Err(e.into()),
                }
                tracing::error!(reason = %reason, "import failed");
                Err(IngestError::Unparseable { import_id, reason })
            }
        }
    }
    .instrument(root)
    .await
}

/// Re-parse every import still `received` (crash recovery), oldest first.
/// Returns how many were settled (parsed or failed). One import's failure
/// does not stop the others; an unavailable store does.
pub async fn recover(ctx: &Context) -> Result<usize, IngestError> {
    recover_older_than(ctx, std::time::Duration::ZERO).await
}

/// [`recover`], for imports received at least `age` ago only: the daemon
/// runs this periodically to pick up imports whose parse was cut short by a
/// store outage, without racing the channels' own work in progress (a race
/// would be harmless — the store lets one parse commit — but wasteful).
pub async fn recover_older_than(
    ctx: &Context,
    age: std::time::Duration,
) -> Result<usize, IngestError> {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or_default();
    let pending: Vec<_> = ctx
        .store
        .pending_imports()
        .await?
        .into_iter()
        .filter(|row| row.received_at <= cutoff)
        .collect();
    if !pending.is_empty() {
        tracing::info!(imports = pending.len(), "recovering imports left received");
    }
    let mut settled = 0;
    for row in pending {
        match parse_import(ctx, row.id).await {
            Ok(_) | Err(IngestError::Unparseable { .. }) => settled += 1,
            Err(IngestError::Store(e)) if e.is_unavailable() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(import = row.id, source = %row.source, error = %e, "import left received")
            }
        }
    }
    Ok(settled)
}

/// The outcome of an import that is already past parsing.
pub(crate) async fn settled(ctx: &Context, row: ImportRow) -> Result<ImportOutcome, IngestError> {
    let rejects = match (row.status, row.counts) {
        (ImportStatus::Parsed, Some(c)) if c.rejected > 0 => {
            ctx.store
                .rejects_for_import(row.id, REJECTS_IN_OUTCOME)
                .await?
        }
        _ => Vec::new(),
    };
    if row.status == ImportStatus::Failed {
        return Err(IngestError::Unparseable {
            import_id: row.id,
            reason: row.error.unwrap_or_default(),
        });
    }
    Ok(ImportOutcome {
        import_id: row.id,
        source: row.source,
        status: row.status,
        duplicate_of: row.duplicate_of,
        counts: row.counts,
        rejects,
        error: row.error,
    })
}

enum Failure {
    Plugin(PluginError),
    Store(StoreError),
    /// The blocking parser thread died without a result (a host bug).
    Panicked,
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// What the caller's task sends the parser thread.
enum Feed {
    Chunk(Bytes),
    End,
}

/// What the parser thread sends back.
enum Parsed {
    Batch(ParsedBatch),
    Finished(ParsedBatch),
    Failed(PluginError),
}

async fn run(
    ctx: &Context,
    row: &ImportRow,
    parser: &str,
    config: &serde_json::Value,
    plugin: &mut Option<PluginIdentity>,
) -> Result<ParseCounts, Failure> {
    let parse_span = tracing::info_span!(
        "parse",
        plugin = %parser,
        version = tracing::field::Empty,
        chunks = tracing::field::Empty,
        bytes = tracing::field::Empty,
    );
    let session = {
        let runtime = ctx.runtime.clone();
        let (parser, config) = (parser.to_owned(), config.clone());
        let span = parse_span.clone();
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| runtime.open_parser(&parser, Some(&config)))
        })
        .await
        .map_err(|_| Failure::Panicked)?
        .map_err(Failure::Plugin)?
    };
    let identity = session.identity().clone();
    parse_span.record("version", identity.version.as_str());
    *plugin = Some(identity.clone());

    let mut parsing = ctx
        .store
        .begin_parse(row.id, &identity)
        .instrument(parse_span.clone())
        .await?;

    let (feed_tx, feed_rx) = mpsc::channel::<Feed>(QUEUE_DEPTH);
    let (out_tx, out_rx) = mpsc::channel::<Parsed>(QUEUE_DEPTH);
    let thread = {
        let span = parse_span.clone();
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| parse_thread(session, feed_rx, out_tx))
        })
    };

    let feeder = async {
        let mut chunks = std::pin::pin!(ctx.store.import_chunks(row.id));
        let (mut n, mut bytes) = (0u64, 0u64);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            n += 1;
            bytes += chunk.len() as u64;
            if feed_tx.send(Feed::Chunk(chunk)).await.is_err() {
                // The parser stopped early; the stager reports why.
                return Ok((n, bytes));
            }
        }
        let _ = feed_tx.send(Feed::End).await;
        Ok::<_, StoreError>((n, bytes))
    };
    let stager = stage_all(&mut parsing, out_rx);
    let (fed, staged) = tokio::join!(feeder, stager.instrument(parse_span.clone()));
    // The thread exits once both queues are settled; wait so its session is
    // gone before the outcome is reported.
    let _ = thread.await;
    let (chunks, bytes) = fed?;
    parse_span.record("chunks", chunks);
    parse_span.record("bytes", bytes);
    staged?;
    parse_span.in_scope(|| tracing::debug!(chunks, bytes, "parsed and staged"));

    let commit_span = tracing::info_span!(
        "commit",
        accepted = tracing::field::Empty,
        duplicates = tracing::field::Empty,
        rejected = tracing::field::Empty,
    );
    let counts = parsing.commit().instrument(commit_span.clone()).await?;
    commit_span.record("accepted", counts.accepted);
    commit_span.record("duplicates", counts.duplicates);
    commit_span.record("rejected", counts.rejected);
    Ok(counts)
}

/// Stage every batch the parser thread sends until it finishes.
async fn stage_all(
    parsing: &mut Parsing,
    mut out_rx: mpsc::Receiver<Parsed>,
) -> Result<(), Failure> {
    while let Some(out) = out_rx.recv().await {
        match out {
            Parsed::Batch(batch) => parsing.stage(&batch).await?,
            Parsed::Finished(batch) => {
                parsing.stage(&batch).await?;
                return Ok(());
            }
            Parsed::Failed(e) => return Err(Failure::Plugin(e)),
        }
    }
    // The thread ended without finishing: either the feeder stopped (its
    // error wins in the caller) or the thread panicked.
    Err(Failure::Panicked)
}

/// The blocking side: owns the plugin session, one `push` per chunk.
fn parse_thread(
    mut session: ParseSession,
    mut feed_rx: mpsc::Receiver<Feed>,
    out_tx: mpsc::Sender<Parsed>,
) {
    while let Some(feed) = feed_rx.blocking_recv() {
        match feed {
            Feed::Chunk(chunk) => match session.push(&chunk) {
                Ok(batch) => {
                    if out_tx.blocking_send(Parsed::Batch(batch)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = out_tx.blocking_send(Parsed::Failed(e));
                    return;
                }
            },
            Feed::End => {
                let out = match session.finish() {
                    Ok(batch) => Parsed::Finished(batch),
                    Err(e) => Parsed::Failed(e),
                };
                let _ = out_tx.blocking_send(out);
                return;
            }
        }
    }
    // Feed closed without End: the caller gave up (store error); drop the
    // session unfinished.
}
