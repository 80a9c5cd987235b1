//! Stage 1: take a payload in from any channel and retain it.

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use tracing::Instrument as _;

use super::{Context, ImportOutcome, IngestError, parse_import};
use crate::store::{Channel, ImportStatus, NewImport};

/// Receive one payload for `source` and take it through the pipeline.
///
/// The body is written to the store as it arrives (the store cuts it into
/// [`crate::store::CHUNK_SIZE`] rows), so memory stays at one chunk whatever
/// the payload's size. Bytes the store already holds for this source come
/// back as a `duplicate` outcome naming the first import; anything else is
/// parsed and committed by [`parse_import`].
///
/// Errors: [`IngestError::UnknownSource`] and
/// [`IngestError::UnsupportedContentType`] before anything is read;
/// [`IngestError::TooLarge`] once more than `max_bytes` arrived, and
/// [`IngestError::Io`] when the body stream fails — in both cases the
/// receive is rolled back and nothing is recorded; [`IngestError::Unparseable`]
/// when the import was recorded and then failed; [`IngestError::Store`] when
/// the database could not take it.
pub async fn import_stream<S>(
    ctx: &Context,
    source: &str,
    channel: Channel,
    original_name: Option<String>,
    content_type: Option<&str>,
    max_bytes: u64,
    mut body: S,
) -> Result<ImportOutcome, IngestError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
{
    let Some(src) = ctx.config.source(source) else {
        return Err(IngestError::UnknownSource(source.to_owned()));
    };
    // The content type is the HTTP channel's business: files have none.
    if channel == Channel::Http && !src.accepts_content_type(content_type) {
        return Err(IngestError::UnsupportedContentType {
            source_name: source.to_owned(),
            content_type: content_type.unwrap_or("(none)").to_owned(),
        });
    }

    let mut receiving = ctx
        .store
        .begin_receive(NewImport {
            source: source.to_owned(),
            channel,
            original_name,
        })
        .await?;
    let import_id = receiving.import_id();
    let root = tracing::info_span!("import", id = import_id, source = %source);

    let received = async {
        let span = tracing::info_span!(
            "receive",
            channel = %channel,
            bytes = tracing::field::Empty,
            duplicate_of = tracing::field::Empty,
        );
        async {
            while let Some(piece) = body.next().await {
                let piece = piece?;
                if receiving.size() + piece.len() as u64 > max_bytes {
                    // Dropping `receiving` rolls the receive back.
                    return Err(IngestError::TooLarge { limit: max_bytes });
                }
                receiving.write_chunk(&piece).await?;
            }
            let received = receiving.finish().await?;
            let span = tracing::Span::current();
            span.record("bytes", received.size);
            if let Some(first) = received.duplicate_of {
                span.record("duplicate_of", first);
            }
            tracing::debug!(sha256 = %received.sha256, "received");
            Ok(received)
        }
        .instrument(span)
        .await
    }
    .instrument(root.clone())
    .await?;

    if let Some(first) = received.duplicate_of {
        root.in_scope(|| tracing::info!(duplicate_of = first, "duplicate of an earlier import"));
        return Ok(ImportOutcome {
            import_id,
            source: source.to_owned(),
            status: ImportStatus::Duplicate,
            duplicate_of: Some(first),
            counts: None,
            rejects: Vec::new(),
            error: None,
        });
    }
    parse_import(ctx, import_id).await
}
