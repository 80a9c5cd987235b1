//! Phase A: receiving raw bytes into `import_chunks`, deciding duplicate or
//! not, in one database transaction.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Channel, ImportStatus, Result, Store, StoreError, Tx, record_event};

/// Largest `import_chunks.bytes` value. Big enough that a 1 GB file is ~1000
/// rows, small enough that reading one back is a trivial allocation.
pub const CHUNK_SIZE: usize = 1024 * 1024;

/// What the caller knows before the first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewImport {
    pub source: String,
    pub channel: Channel,
    /// File name (directory, CLI) or whatever the HTTP client supplied.
    pub original_name: Option<String>,
}

/// Outcome of [`Receiving::finish`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Received {
    pub import_id: i64,
    /// Hex sha256 of the whole body.
    pub sha256: String,
    pub size: u64,
    /// Set when the same bytes were already imported for this source; the
    /// import is then recorded with status `duplicate` and nothing else
    /// happens to it.
    pub duplicate_of: Option<i64>,
}

/// An import being received. Dropping it without [`Receiving::finish`] rolls
/// everything back: no import row, no chunks.
pub struct Receiving {
    tx: Tx,
    import_id: i64,
    new: NewImport,
    hasher: Sha256,
    size: u64,
    next_seq: i32,
    /// Bytes not yet written, always < CHUNK_SIZE between calls, so chunk
    /// boundaries do not depend on how the caller slices the body.
    pending: Vec<u8>,
}

impl std::fmt::Debug for Receiving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiving")
            .field("import_id", &self.import_id)
            .field("source", &self.new.source)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Start receiving an import. The id is reserved now (so it can name the
    /// work in logs); the row appears only when [`Receiving::finish`] commits.
    pub async fn begin_receive(&self, new: NewImport) -> Result<Receiving> {
        let mut tx = self.pool.begin().await?;
        let import_id: i64 =
            sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('imports', 'id'))")
                .fetch_one(&mut *tx)
                .await?;
        Ok(Receiving {
            tx,
            import_id,
            new,
            hasher: Sha256::new(),
            size: 0,
            next_seq: 0,
            pending: Vec::with_capacity(CHUNK_SIZE),
        })
    }
}

impl Receiving {
    pub fn import_id(&self) -> i64 {
        self.import_id
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append the next bytes of the body; any slicing works.
    pub async fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = CHUNK_SIZE - self.pending.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.pending.extend_from_slice(now);
            rest = later;
            if self.pending.len() == CHUNK_SIZE {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        sqlx::query("INSERT INTO import_chunks (import_id, seq, bytes) VALUES ($1, $2, $3)")
            .bind(self.import_id)
            .bind(self.next_seq)
            .bind(self.pending.as_slice())
            .execute(&mut *self.tx)
            .await?;
        self.next_seq += 1;
        self.pending.clear();
        Ok(())
    }

    /// Write the import row (received or duplicate), its event, and commit.
    pub async fn finish(mut self) -> Result<Received> {
        self.flush().await?;
        let sha256 = hex::encode(self.hasher.clone().finalize());
        let size = i64::try_from(self.size).map_err(|_| {
            StoreError::Conflict(format!("import of {} bytes is too large", self.size))
        })?;
        let Receiving {
            mut tx,
            import_id,
            new,
            size: received_bytes,
            ..
        } = self;

        // Two receivers of the same bytes must not both see "no earlier
        // import": serialise them on (source, sha256) until commit. A hash
        // collision between different keys only costs a short wait.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))")
            .bind(&new.source)
            .bind(&sha256)
            .execute(&mut *tx)
            .await?;
        let earlier: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM imports WHERE source = $1 AND sha256 = $2 \
             AND status IN ('received', 'parsed') ORDER BY id LIMIT 1",
        )
        .bind(&new.source)
        .bind(&sha256)
        .fetch_optional(&mut *tx)
        .await?;

        let status = if earlier.is_some() {
            // The bytes are already retained under the earlier import.
            sqlx::query("DELETE FROM import_chunks WHERE import_id = $1")
                .bind(import_id)
                .execute(&mut *tx)
                .await?;
            ImportStatus::Duplicate
        } else {
            ImportStatus::Received
        };

        sqlx::query(
            "INSERT INTO imports (id, source, channel, original_name, size_bytes, sha256, status, duplicate_of) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(import_id)
        .bind(&new.source)
        .bind(new.channel.as_str())
        .bind(&new.original_name)
        .bind(size)
        .bind(&sha256)
        .bind(status.as_str())
        .bind(earlier)
        .execute(&mut *tx)
        .await?;

        record_event(
            &mut tx,
            "import",
            import_id,
            status.as_str(),
            new.channel.as_str(),
            serde_json::json!({
                "source": new.source,
                "original_name": new.original_name,
                "size_bytes": size,
                "sha256": sha256,
                "duplicate_of": earlier,
            }),
        )
        .await?;
        tx.commit().await?;

        Ok(Received {
            import_id,
            sha256,
            size: received_bytes,
            duplicate_of: earlier,
        })
    }
}
