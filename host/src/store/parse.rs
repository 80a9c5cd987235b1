//! Phase B: committing what a parser made of an import, atomically, over
//! COPY; and the import's other terminal transitions (failed, disposed).

use std::io::Write as _;

use chrono::Utc;
use serde::Serialize;

use super::{ImportStatus, Result, Store, StoreError, Tx, plugin_actor, record_event};
use crate::domain::{ParsedBatch, PluginIdentity, Reject, Transaction};

/// Flush the COPY buffer at about this size: large enough to amortise the
/// write calls, small enough that staging never holds a batch twice over.
const COPY_FLUSH_BYTES: usize = 1024 * 1024;

/// Outcome of [`Parsing::commit`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ParseCounts {
    /// Transactions inserted.
    pub accepted: u64,
    /// Transactions whose (source, external id) was already stored, by an
    /// earlier import or earlier in this one; counted, not inserted.
    pub duplicates: u64,
    /// Rows the parser (or the store, see [`Parsing::stage`]) rejected.
    pub rejected: u64,
}

/// An import being parsed: one open database transaction holding the
/// import's row lock and a staging table. Dropping it without
/// [`Parsing::commit`] rolls everything back; the import stays `received`.
pub struct Parsing {
    tx: Tx,
    import_id: i64,
    source: String,
    plugin: PluginIdentity,
    staged: u64,
    rejected: u64,
    /// The sides of the rows staged so far (`imports.sides`).
    sides: std::collections::BTreeSet<&'static str>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Parsing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsing")
            .field("import_id", &self.import_id)
            .field("source", &self.source)
            .field("staged", &self.staged)
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}

const STAGING_COLUMNS: &str = "seq, source_row, external_id, side, kind, amount_minor, currency, \
     occurred_at, utc_offset_seconds, time_known, provider, card_first_six, card_last_four, \
     card_token, auth_code, approval_code, settlement_key, account_id, reference_id, \
     payer_account, beneficiary_account, merchant_ids, extras";

impl Store {
    /// Start committing the parse of a `received` import. Takes the import's
    /// row lock, so a second parser of the same import (crash recovery racing
    /// a live one) waits, then gets [`StoreError::Conflict`].
    pub async fn begin_parse(&self, import_id: i64, plugin: &PluginIdentity) -> Result<Parsing> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT source, status FROM imports WHERE id = $1 FOR UPDATE")
                .bind(import_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((source, status)) = row else {
            return Err(StoreError::NotFound(format!("import {import_id}")));
        };
        if status != ImportStatus::Received.as_str() {
            return Err(StoreError::Conflict(format!(
                "import {import_id} is {status}, not received"
            )));
        }
        // The merge sorts the staged rows; keep that sort in memory for
        // files of a few hundred thousand rows.
        sqlx::query("SET LOCAL work_mem = '64MB'")
            .execute(&mut *tx)
            .await?;
        // Temporary: no WAL, invisible to others, gone at commit or rollback.
        sqlx::query(
            "CREATE TEMP TABLE accord_staging (
                seq bigint NOT NULL,
                source_row bigint,
                external_id text NOT NULL,
                side text NOT NULL,
                kind text NOT NULL,
                amount_minor bigint NOT NULL,
                currency text NOT NULL,
                occurred_at timestamptz NOT NULL,
                utc_offset_seconds integer NOT NULL,
                time_known boolean NOT NULL,
                provider text,
                card_first_six text,
                card_last_four text,
                card_token text,
                auth_code text,
                approval_code text,
                settlement_key text,
                account_id text,
                reference_id text,
                payer_account text,
                beneficiary_account text,
                merchant_ids jsonb NOT NULL,
                extras jsonb NOT NULL
            ) ON COMMIT DROP",
        )
        .execute(&mut *tx)
        .await?;
        Ok(Parsing {
            tx,
            import_id,
            source,
            plugin: plugin.clone(),
            staged: 0,
            rejected: 0,
            sides: Default::default(),
            buf: Vec::with_capacity(COPY_FLUSH_BYTES + 64 * 1024),
        })
    }

    /// Record that an import could not be parsed (own transaction). Only a
    /// `received` import can fail; anything else is [`StoreError::Conflict`].
    pub async fn fail_import(
        &self,
        import_id: i64,
        reason: &str,
        plugin: Option<&PluginIdentity>,
    ) -> Result<()> {
        let reason = strip_nul(reason);
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE imports SET status = 'failed', error = $2, parsed_at = now(), \
             plugin_name = $3, plugin_version = $4, plugin_sha256 = $5 \
             WHERE id = $1 AND status = 'received'",
        )
        .bind(import_id)
        .bind(reason.as_ref())
        .bind(plugin.map(|p| &p.name))
        .bind(plugin.map(|p| &p.version))
        .bind(plugin.map(|p| &p.sha256))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_in_state(&mut tx, import_id, "received").await);
        }
        let actor = plugin.map_or_else(|| "accord".to_owned(), plugin_actor);
        record_event(
            &mut tx,
            "import",
            import_id,
            ImportStatus::Failed.as_str(),
            &actor,
            serde_json::json!({ "error": reason, "plugin": plugin }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record where the directory channel moved an import's file (archive or
    /// failed), after the move. Idempotent for the same destination, so
    /// recovery may repeat it.
    pub async fn mark_disposed(&self, import_id: i64, disposed_to: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE imports SET disposed_to = $2, disposed_at = now() \
             WHERE id = $1 AND (disposed_to IS NULL OR disposed_to = $2)",
        )
        .bind(import_id)
        .bind(disposed_to)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM imports WHERE id = $1")
                .bind(import_id)
                .fetch_optional(&mut *tx)
                .await?;
            return Err(match exists {
                None => StoreError::NotFound(format!("import {import_id}")),
                Some(_) => StoreError::Conflict(format!(
                    "import {import_id} was already disposed elsewhere"
                )),
            });
        }
        record_event(
            &mut tx,
            "import",
            import_id,
            "disposed",
            "directory",
            serde_json::json!({ "disposed_to": disposed_to }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn not_in_state(tx: &mut Tx, import_id: i64, wanted: &str) -> StoreError {
    let status: std::result::Result<Option<String>, sqlx::Error> =
        sqlx::query_scalar("SELECT status FROM imports WHERE id = $1")
            .bind(import_id)
            .fetch_optional(&mut **tx)
            .await;
    match status {
        Ok(None) => StoreError::NotFound(format!("import {import_id}")),
        Ok(Some(s)) => StoreError::Conflict(format!("import {import_id} is {s}, not {wanted}")),
        Err(e) => e.into(),
    }
}

impl Parsing {
    pub fn import_id(&self) -> i64 {
        self.import_id
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Stream one batch in: transactions into staging, rejects into
    /// `rejects`, each with one COPY. Call as often as the parser yields.
    ///
    /// A transaction the database could not store as given (a NUL character
    /// anywhere, a currency that is not three capital letters, a year outside
    /// 1..=9999, an empty external id) becomes a reject with that reason
    /// instead of failing the whole import.
    pub async fn stage(&mut self, batch: &ParsedBatch) -> Result<()> {
        let mut store_rejects = Vec::new();
        if !batch.transactions.is_empty() {
            let mut copy = self
                .tx
                .copy_in_raw(&format!(
                    "COPY accord_staging ({STAGING_COLUMNS}) FROM STDIN (FORMAT text)"
                ))
                .await?;
            let mut staged = 0u64;
            for parsed in &batch.transactions {
                if let Err((field, reason)) = storable(&parsed.transaction) {
                    store_rejects.push(Reject {
                        row: parsed.row,
                        byte_offset: None,
                        field: Some(field.to_owned()),
                        reason,
                        // serde_json escapes NUL and control characters, so
                        // this is always storable text.
                        raw: serde_json::to_string(&parsed.transaction).unwrap_or_default(),
                    });
                    continue;
                }
                self.staged += 1;
                staged += 1;
                self.sides.insert(parsed.transaction.side.as_str());
                encode_transaction(
                    &mut self.buf,
                    self.staged as i64,
                    parsed.row,
                    &parsed.transaction,
                );
                if self.buf.len() >= COPY_FLUSH_BYTES {
                    copy.send(self.buf.as_slice()).await?;
                    self.buf.clear();
                }
            }
            if !self.buf.is_empty() {
                copy.send(self.buf.as_slice()).await?;
                self.buf.clear();
            }
            let copied = copy.finish().await?;
            debug_assert_eq!(copied, staged);
        }
        for rejects in [&batch.rejects, &store_rejects] {
            if rejects.is_empty() {
                continue;
            }
            let mut copy = self
                .tx
                .copy_in_raw(
                    "COPY rejects (import_id, source_row, byte_offset, field, reason, raw) \
                     FROM STDIN (FORMAT text)",
                )
                .await?;
            for reject in rejects {
                encode_reject(&mut self.buf, self.import_id, reject);
                if self.buf.len() >= COPY_FLUSH_BYTES {
                    copy.send(self.buf.as_slice()).await?;
                    self.buf.clear();
                }
            }
            if !self.buf.is_empty() {
                copy.send(self.buf.as_slice()).await?;
                self.buf.clear();
            }
            self.rejected += copy.finish().await?;
        }
        Ok(())
    }

    /// Merge staging into `transactions` (first staged wins among equal
    /// external ids), mark the import `parsed` with its counts and plugin,
    /// log the event, and commit.
    pub async fn commit(mut self) -> Result<ParseCounts> {
        let columns = "INSERT INTO transactions (source, import_id, source_row, external_id, \
                side, kind, amount_minor, currency, occurred_at, utc_offset_seconds, time_known, \
                provider, card_first_six, card_last_four, card_token, auth_code, approval_code, \
                settlement_key, account_id, reference_id, payer_account, beneficiary_account, \
                merchant_ids, extras)";
        let staged = STAGING_COLUMNS.trim_start_matches("seq, ");
        // Fast path: a plain insert of the rows whose id is new. Speculative
        // insertion (ON CONFLICT) costs about a third more per row, so it is
        // kept for when it is needed: ids repeated within this import, or a
        // concurrent import of the same source committing the same id first.
        // Either shows up as a unique violation, which rolls back to the
        // savepoint and takes the exact path.
        sqlx::query("SAVEPOINT accord_merge")
            .execute(&mut *self.tx)
            .await?;
        let fast = sqlx::query(&format!(
            "{columns} SELECT $1, $2, {staged} FROM accord_staging s \
             WHERE NOT EXISTS (SELECT 1 FROM transactions t \
                               WHERE t.source = $1 AND t.external_id = s.external_id)"
        ))
        .bind(&self.source)
        .bind(self.import_id)
        .execute(&mut *self.tx)
        .await;
        let inserted = match fast {
            Ok(done) => {
                sqlx::query("RELEASE SAVEPOINT accord_merge")
                    .execute(&mut *self.tx)
                    .await?;
                done.rows_affected()
            }
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                sqlx::query("ROLLBACK TO SAVEPOINT accord_merge")
                    .execute(&mut *self.tx)
                    .await?;
                // First staged wins among equal ids: sort by seq, in memory
                // rather than spilling a large import to disk.
                sqlx::query("SET LOCAL work_mem = '256MB'")
                    .execute(&mut *self.tx)
                    .await?;
                sqlx::query(&format!(
                    "{columns} SELECT $1, $2, {staged} FROM accord_staging ORDER BY seq \
                     ON CONFLICT (source, external_id) DO NOTHING"
                ))
                .bind(&self.source)
                .bind(self.import_id)
                .execute(&mut *self.tx)
                .await?
                .rows_affected()
            }
            Err(e) => return Err(e.into()),
        };

        let counts = ParseCounts {
            accepted: inserted,
            duplicates: self.staged - inserted,
            rejected: self.rejected,
        };
        sqlx::query(
            "UPDATE imports SET status = 'parsed', error = NULL, parsed_at = now(), \
             plugin_name = $2, plugin_version = $3, plugin_sha256 = $4, \
             accepted = $5, duplicates = $6, rejected = $7, sides = $8 \
             WHERE id = $1",
        )
        .bind(self.import_id)
        .bind(&self.plugin.name)
        .bind(&self.plugin.version)
        .bind(&self.plugin.sha256)
        .bind(counts.accepted as i64)
        .bind(counts.duplicates as i64)
        .bind(counts.rejected as i64)
        .bind(self.sides.iter().copied().collect::<Vec<_>>())
        .execute(&mut *self.tx)
        .await?;
        record_event(
            &mut self.tx,
            "import",
            self.import_id,
            ImportStatus::Parsed.as_str(),
            &plugin_actor(&self.plugin),
            serde_json::json!({ "counts": counts, "plugin": self.plugin }),
        )
        .await?;
        self.tx.commit().await?;
        Ok(counts)
    }
}

/// Whether PostgreSQL can hold `t` as given; `Err((field, reason))` if not.
fn storable(t: &Transaction) -> std::result::Result<(), (&'static str, String)> {
    const NUL: &str = "contains a NUL character, which PostgreSQL text cannot hold";
    let strings: [(&'static str, Option<&str>); 13] = [
        ("external_id", Some(&t.external_id)),
        ("currency", Some(&t.amount.currency)),
        ("provider", t.provider.as_deref()),
        ("card_first_six", t.card_first_six.as_deref()),
        ("card_last_four", t.card_last_four.as_deref()),
        ("card_token", t.card_token.as_deref()),
        ("auth_code", t.auth_code.as_deref()),
        ("approval_code", t.approval_code.as_deref()),
        ("settlement_key", t.settlement_key.as_deref()),
        ("account_id", t.account_id.as_deref()),
        ("reference_id", t.reference_id.as_deref()),
        ("payer_account", t.payer_account.as_deref()),
        ("beneficiary_account", t.beneficiary_account.as_deref()),
    ];
    for (field, value) in strings {
        if value.is_some_and(|s| s.contains('\0')) {
            return Err((field, NUL.to_owned()));
        }
    }
    if t.merchant_ids.iter().any(|m| m.value.contains('\0')) {
        return Err(("merchant_ids", NUL.to_owned()));
    }
    if t.extras
        .iter()
        .any(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err(("extras", NUL.to_owned()));
    }
    if t.external_id.is_empty() {
        return Err(("external_id", "is empty".to_owned()));
    }
    let c = t.amount.currency.as_bytes();
    if c.len() != 3 || !c.iter().all(u8::is_ascii_uppercase) {
        return Err((
            "currency",
            format!(
                "`{}` is not an ISO 4217 code (three capital letters)",
                t.amount.currency
            ),
        ));
    }
    use chrono::Datelike as _;
    let year = t.occurred_at.with_timezone(&Utc).year();
    if !(1..=9999).contains(&year) {
        return Err((
            "occurred_at",
            format!("year {year} is out of range 1..=9999"),
        ));
    }
    Ok(())
}

fn strip_nul(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}

/// One row of COPY text format: tab-separated, `\N` for NULL, newline-ended.
fn encode_transaction(buf: &mut Vec<u8>, seq: i64, row: Option<u64>, t: &Transaction) {
    let _ = write!(buf, "{seq}\t");
    put_opt_int(buf, row);
    put_text(buf, &t.external_id);
    put_text(buf, t.side.as_str());
    put_text(buf, t.kind.as_str());
    let _ = write!(buf, "{}\t", t.amount.minor_units);
    put_text(buf, &t.amount.currency);
    // The instant in UTC (exact, whatever the offset's seconds); the offset
    // goes in its own column.
    let _ = write!(
        buf,
        "{}\t{}\t{}\t",
        t.occurred_at
            .with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M:%S%.f+00"),
        t.occurred_at.offset().local_minus_utc(),
        if t.time_known { "t" } else { "f" },
    );
    for field in t.optional_texts() {
        put_opt_text(buf, field.as_deref());
    }
    let merchant_ids = serde_json::to_string(&t.merchant_ids).unwrap_or_else(|_| "[]".into());
    put_text(buf, &merchant_ids);
    let extras = serde_json::to_string(&t.extras).unwrap_or_else(|_| "[]".into());
    put_escaped(buf, &extras);
    buf.push(b'\n');
}

fn encode_reject(buf: &mut Vec<u8>, import_id: i64, r: &Reject) {
    let _ = write!(buf, "{import_id}\t");
    put_opt_int(buf, r.row);
    put_opt_int(buf, r.byte_offset);
    put_opt_text(buf, r.field.as_deref().map(strip_nul).as_deref());
    put_text(buf, &strip_nul(&r.reason));
    put_escaped(buf, &strip_nul(&r.raw));
    buf.push(b'\n');
}

fn put_opt_int(buf: &mut Vec<u8>, v: Option<u64>) {
    // A row number beyond i64 is meaningless; NULL rather than fail the file.
    match v.and_then(|v| i64::try_from(v).ok()) {
        Some(v) => {
            let _ = write!(buf, "{v}\t");
        }
        None => buf.extend_from_slice(b"\\N\t"),
    }
}

fn put_text(buf: &mut Vec<u8>, s: &str) {
    put_escaped(buf, s);
    buf.push(b'\t');
}

fn put_opt_text(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_text(buf, s),
        None => buf.extend_from_slice(b"\\N\t"),
    }
}

/// COPY text-format escaping: backslash, and the three characters that
/// would otherwise end a field or a row. Everything else (including other
/// control characters and any UTF-8) is taken literally by the server.
pub(super) fn put_escaped(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(esc);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod unit {
    use super::put_escaped;

    #[test]
    fn escapes_only_what_copy_text_interprets() {
        let mut buf = Vec::new();
        put_escaped(&mut buf, "a\tb\nc\rd\\e\"f'g,h\\N é");
        assert_eq!(buf, b"a\\tb\\nc\\rd\\\\e\"f'g,h\\\\N \xc3\xa9");
    }
}
