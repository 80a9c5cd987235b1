//! Reads: imports, retained bytes, transactions, rejects and events, for the
//! pipeline's recovery and the HTTP API.

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Utc};
use futures::Stream;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Row};

use super::{Channel, ImportStatus, ParseCounts, Result, Store, StoreError};
use crate::domain::{MerchantIdentifier, Money, PluginIdentity, Reject, Transaction};

/// Page size when the caller gives none, and the most one page may hold.
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;

/// One import as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportRow {
    pub id: i64,
    pub source: String,
    pub channel: Channel,
    pub original_name: Option<String>,
    pub size_bytes: i64,
    pub sha256: String,
    pub received_at: DateTime<Utc>,
    pub status: ImportStatus,
    pub error: Option<String>,
    pub duplicate_of: Option<i64>,
    /// The plugin build that parsed (or failed to parse) it.
    pub plugin: Option<PluginIdentity>,
    /// Set once parsed.
    pub counts: Option<ParseCounts>,
    pub parsed_at: Option<DateTime<Utc>>,
    pub disposed_to: Option<String>,
    pub disposed_at: Option<DateTime<Utc>>,
}

/// A transaction as stored: the domain transaction plus where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredTransaction {
    pub id: i64,
    pub import_id: i64,
    pub source: String,
    pub source_row: Option<i64>,
    pub created_at: DateTime<Utc>,
    /// `occurred_at` is back in the offset it was observed in.
    #[serde(flatten)]
    pub transaction: Transaction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredReject {
    pub id: i64,
    pub import_id: i64,
    #[serde(flatten)]
    pub reject: Reject,
}

/// One event-log entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub entity: String,
    pub entity_id: Option<i64>,
    pub stage: String,
    pub actor: String,
    pub detail: serde_json::Value,
}

/// Keyset page, newest first: pass `next_cursor` back as `cursor` for the
/// next page; `None` means this was the last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportFilter {
    pub source: Option<String>,
    pub status: Option<ImportStatus>,
    /// Default [`DEFAULT_PAGE`], at most [`MAX_PAGE`].
    pub limit: Option<u32>,
    /// Only ids below this (from [`Page::next_cursor`]).
    pub cursor: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransactionFilter {
    pub source: Option<String>,
    pub import_id: Option<i64>,
    pub limit: Option<u32>,
    pub cursor: Option<i64>,
}

const IMPORT_COLUMNS: &str = "id, source, channel, original_name, size_bytes, sha256, received_at, \
     status, error, duplicate_of, plugin_name, plugin_version, plugin_sha256, accepted, \
     duplicates, rejected, parsed_at, disposed_to, disposed_at";

pub(super) const TRANSACTION_COLUMNS: &str = "id, import_id, source, source_row, created_at, external_id, \
     side, kind, amount_minor, currency, occurred_at, utc_offset_seconds, time_known, provider, \
     card_first_six, card_last_four, card_token, auth_code, approval_code, settlement_key, \
     account_id, reference_id, payer_account, beneficiary_account, merchant_ids, extras";

pub(super) fn page_limit(limit: Option<u32>) -> i64 {
    i64::from(limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE))
}

/// A column value the schema's CHECKs should have made impossible.
pub(super) fn corrupt(column: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: e.to_string().into(),
    })
}

fn parse_col<T: std::str::FromStr<Err = String>>(row: &PgRow, column: &str) -> Result<T> {
    let s: String = row.try_get(column)?;
    s.parse().map_err(|e| corrupt(column, e))
}

/// The plugin build recorded in a row's nullable `plugin_name`,
/// `plugin_version` and `plugin_sha256` columns (imports, matches).
pub(super) fn plugin_identity(row: &PgRow) -> Result<Option<PluginIdentity>> {
    Ok(match row.try_get::<Option<String>, _>("plugin_name")? {
        Some(name) => Some(PluginIdentity {
            name,
            version: row
                .try_get::<Option<String>, _>("plugin_version")?
                .unwrap_or_default(),
            sha256: row
                .try_get::<Option<String>, _>("plugin_sha256")?
                .unwrap_or_default(),
        }),
        None => None,
    })
}

fn import_row(row: &PgRow) -> Result<ImportRow> {
    let plugin = plugin_identity(row)?;
    let counts = match (
        row.try_get::<Option<i64>, _>("accepted")?,
        row.try_get::<Option<i64>, _>("duplicates")?,
        row.try_get::<Option<i64>, _>("rejected")?,
    ) {
        (Some(a), Some(d), Some(r)) => Some(ParseCounts {
            accepted: a.max(0) as u64,
            duplicates: d.max(0) as u64,
            rejected: r.max(0) as u64,
        }),
        _ => None,
    };
    Ok(ImportRow {
        id: row.try_get("id")?,
        source: row.try_get("source")?,
        channel: parse_col(row, "channel")?,
        original_name: row.try_get("original_name")?,
        size_bytes: row.try_get("size_bytes")?,
        sha256: row.try_get("sha256")?,
        received_at: row.try_get("received_at")?,
        status: parse_col(row, "status")?,
        error: row.try_get("error")?,
        duplicate_of: row.try_get("duplicate_of")?,
        plugin,
        counts,
        parsed_at: row.try_get("parsed_at")?,
        disposed_to: row.try_get("disposed_to")?,
        disposed_at: row.try_get("disposed_at")?,
    })
}

/// The names of [`TRANSACTION_COLUMNS`], in order: [`stored_transaction`]
/// reads the columns by position.
#[cfg(test)]
const TRANSACTION_COLUMN_NAMES: [&str; 26] = [
    "id",
    "import_id",
    "source",
    "source_row",
    "created_at",
    "external_id",
    "side",
    "kind",
    "amount_minor",
    "currency",
    "occurred_at",
    "utc_offset_seconds",
    "time_known",
    "provider",
    "card_first_six",
    "card_last_four",
    "card_token",
    "auth_code",
    "approval_code",
    "settlement_key",
    "account_id",
    "reference_id",
    "payer_account",
    "beneficiary_account",
    "merchant_ids",
    "extras",
];

/// A row that starts with [`TRANSACTION_COLUMNS`], read by position: by
/// name, each column cost a SipHash lookup, 8 % of the machine's CPU while
/// `bench match`'s staging read its two million rows (perf).
pub(super) fn stored_transaction(row: &PgRow) -> Result<StoredTransaction> {
    let text = |i: usize, column: &str| -> Result<String> {
        row.try_get::<String, _>(i).map_err(|e| corrupt(column, e))
    };
    let offset_seconds: i32 = row.try_get(11)?;
    let offset = FixedOffset::east_opt(offset_seconds)
        .ok_or_else(|| corrupt("utc_offset_seconds", offset_seconds))?;
    let occurred_at: DateTime<Utc> = row.try_get(10)?;
    let Json(merchant_ids): Json<Vec<MerchantIdentifier>> = row.try_get(24)?;
    let Json(extras): Json<Vec<(String, String)>> = row.try_get(25)?;
    Ok(StoredTransaction {
        id: row.try_get(0)?,
        import_id: row.try_get(1)?,
        source: row.try_get(2)?,
        source_row: row.try_get(3)?,
        created_at: row.try_get(4)?,
        transaction: Transaction {
            external_id: row.try_get(5)?,
            side: text(6, "side")?.parse().map_err(|e| corrupt("side", e))?,
            kind: text(7, "kind")?.parse().map_err(|e| corrupt("kind", e))?,
            amount: Money {
                minor_units: row.try_get(8)?,
                currency: row.try_get(9)?,
            },
            occurred_at: occurred_at.with_timezone(&offset),
            time_known: row.try_get(12)?,
            provider: row.try_get(13)?,
            merchant_ids,
            card_first_six: row.try_get(14)?,
            card_last_four: row.try_get(15)?,
            card_token: row.try_get(16)?,
            auth_code: row.try_get(17)?,
            approval_code: row.try_get(18)?,
            settlement_key: row.try_get(19)?,
            account_id: row.try_get(20)?,
            reference_id: row.try_get(21)?,
            payer_account: row.try_get(22)?,
            beneficiary_account: row.try_get(23)?,
            extras,
        },
    })
}

pub(super) fn to_page<T>(mut items: Vec<T>, limit: i64, id: impl Fn(&T) -> i64) -> Page<T> {
    // One extra row was fetched to learn whether another page exists.
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more { items.last().map(id) } else { None };
    Page { items, next_cursor }
}

impl Store {
    pub async fn get_import(&self, id: i64) -> Result<Option<ImportRow>> {
        let row = sqlx::query(&format!(
            "SELECT {IMPORT_COLUMNS} FROM imports WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(import_row).transpose()
    }

    /// Imports received but neither parsed nor failed, oldest first: after a
    /// crash these are re-parsed from their retained chunks.
    pub async fn pending_imports(&self) -> Result<Vec<ImportRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {IMPORT_COLUMNS} FROM imports WHERE status = 'received' ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(import_row).collect()
    }

    /// The import that holds these bytes for this source: the live one
    /// (received or parsed) if any, else the latest failed one.
    pub async fn find_import_by_sha(
        &self,
        source: &str,
        sha256: &str,
    ) -> Result<Option<ImportRow>> {
        let row = sqlx::query(&format!(
            "SELECT {IMPORT_COLUMNS} FROM imports \
             WHERE source = $1 AND sha256 = $2 AND status <> 'duplicate' \
             ORDER BY (status IN ('received', 'parsed')) DESC, id DESC LIMIT 1"
        ))
        .bind(source)
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(import_row).transpose()
    }

    pub async fn list_imports(&self, filter: &ImportFilter) -> Result<Page<ImportRow>> {
        let limit = page_limit(filter.limit);
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {IMPORT_COLUMNS} FROM imports WHERE true"
        ));
        if let Some(source) = &filter.source {
            q.push(" AND source = ").push_bind(source);
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(cursor) = filter.cursor {
            q.push(" AND id < ").push_bind(cursor);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(limit + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
        let items = rows.iter().map(import_row).collect::<Result<Vec<_>>>()?;
        Ok(to_page(items, limit, |i| i.id))
    }

    pub async fn list_transactions(
        &self,
        filter: &TransactionFilter,
    ) -> Result<Page<StoredTransaction>> {
        let limit = page_limit(filter.limit);
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE true"
        ));
        if let Some(source) = &filter.source {
            q.push(" AND source = ").push_bind(source);
        }
        if let Some(import_id) = filter.import_id {
            q.push(" AND import_id = ").push_bind(import_id);
        }
        if let Some(cursor) = filter.cursor {
            q.push(" AND id < ").push_bind(cursor);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(limit + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(stored_transaction)
            .collect::<Result<Vec<_>>>()?;
        Ok(to_page(items, limit, |t| t.id))
    }

    /// An import's rejected rows in input order, at most `limit`
    /// (clamped to [`MAX_PAGE`]).
    pub async fn rejects_for_import(
        &self,
        import_id: i64,
        limit: u32,
    ) -> Result<Vec<StoredReject>> {
        let rows = sqlx::query(
            "SELECT id, import_id, source_row, byte_offset, field, reason, raw FROM rejects \
             WHERE import_id = $1 ORDER BY id LIMIT $2",
        )
        .bind(import_id)
        .bind(i64::from(limit.min(MAX_PAGE)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredReject {
                    id: row.try_get("id")?,
                    import_id: row.try_get("import_id")?,
                    reject: Reject {
                        row: row
                            .try_get::<Option<i64>, _>("source_row")?
                            .map(|v| v.max(0) as u64),
                        byte_offset: row
                            .try_get::<Option<i64>, _>("byte_offset")?
                            .map(|v| v.max(0) as u64),
                        field: row.try_get("field")?,
                        reason: row.try_get("reason")?,
                        raw: row.try_get("raw")?,
                    },
                })
            })
            .collect()
    }

    /// The event log of one import, oldest first.
    pub async fn events_for_import(&self, import_id: i64) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT id, at, entity, entity_id, stage, actor, detail FROM events \
             WHERE entity = 'import' AND entity_id = $1 ORDER BY id",
        )
        .bind(import_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(EventRow {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    entity: row.try_get("entity")?,
                    entity_id: row.try_get("entity_id")?,
                    stage: row.try_get("stage")?,
                    actor: row.try_get("actor")?,
                    detail: row.try_get::<Json<serde_json::Value>, _>("detail")?.0,
                })
            })
            .collect()
    }

    /// One retained chunk (`seq` from 0), or `None` past the end.
    pub async fn read_chunk(&self, import_id: i64, seq: i32) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT bytes FROM import_chunks WHERE import_id = $1 AND seq = $2")
                .bind(import_id)
                .bind(seq)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The retained bytes of an import, chunk by chunk (each at most
    /// [`super::CHUNK_SIZE`]), one query per chunk so memory stays bounded
    /// and no connection is held between chunks. Empty for a duplicate
    /// (its bytes live under `duplicate_of`) and for an empty file.
    pub fn import_chunks(
        &self,
        import_id: i64,
    ) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        let store = self.clone();
        futures::stream::try_unfold(0i32, move |seq| {
            let store = store.clone();
            async move {
                Ok(store
                    .read_chunk(import_id, seq)
                    .await?
                    .map(|bytes| (Bytes::from(bytes), seq + 1)))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    /// `stored_transaction` reads by position; the names it assumes are
    /// the columns selected, in order.
    #[test]
    fn transaction_columns_are_read_in_the_order_selected() {
        let selected: Vec<&str> = super::TRANSACTION_COLUMNS.split(", ").collect();
        assert_eq!(selected, super::TRANSACTION_COLUMN_NAMES);
    }
}
