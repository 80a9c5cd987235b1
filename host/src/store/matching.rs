//! Matching's persistence (matching-rules.md §1–§5, §8–§10): staging of
//! parsed imports into payments and scheme records, the matching engine's
//! batches, the unmatched sweep, force match and the review queue.
//!
//! Set-based SQL throughout: an import of a million payment rows is read
//! once, identified in the host ([`super::identify`]) and written back in
//! arrays of [`STAGE_CHUNK`] rows, then collapsed with a handful of
//! statements: never a round trip per row.
//!
//! Guarantees, all enforced by the database rather than by this code:
//! - one payment per purchase: `payment_keys (provider, settlement_key)` is
//!   unique, and a payment with a key is created only with its key row;
//! - no transaction in two matches: `matches.payment_id` and
//!   `matches.scheme_id` are unique, and every write of a decision inserts
//!   there first (`ON CONFLICT DO NOTHING`) and changes statuses only for the
//!   rows it actually inserted — so two workers, or two daemons, deciding
//!   on the same candidate at once end with one match and one retry;
//! - staging an import is one transaction with `imports.staged_at`: a crash
//!   half-way leaves nothing staged, and it is redone.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{FromRow as _, PgConnection, Row};

use std::sync::Arc;

use super::cache::TransactionCache;
use super::identify::{Identified, MerchantSettings, Registry, payment_status, record_status};
use super::read::{TRANSACTION_COLUMNS, plugin_identity, stored_transaction};
use super::{Result, Store, StoreError, Tx, record_event};
use crate::domain::{Cardholder, IdentifierKind, MatchGroup, PluginIdentity, Transaction};

/// The payment statuses in which a settlement may still update it
/// (matching-rules.md §3, "row in PENDING").
const UNDECIDED: &str = "('unidentified', 'unregistered', 'pending')";

/// The widest amount difference a merchant's tolerance can allow around a
/// scheme amount `s.amount_minor` (tolerance_bp ≤ 1000, so
/// |p − s| ≤ |p|·bp/10000 implies |p − s| ≤ |s|·bp/9000): used to find the
/// payments a new scheme record may concern; the exact test is
/// [`ALLOWANCE`] at candidate selection.
const WIDEST: &str = "greatest(m.tolerance_minor, CASE WHEN m.tolerance_bp > 0 \
     THEN abs(s.amount_minor) * m.tolerance_bp / 9000 + 1 ELSE 0 END)";

/// The allowed amount difference for payment `p` of merchant `m`.
const ALLOWANCE: &str = "greatest(m.tolerance_minor, abs(p.amount_minor) * m.tolerance_bp / 10000)";

/// A merchant-side record `s` is still a candidate: staged as pending and
/// named by no match (migration 0008: the match row is the truth).
pub const SCHEME_OPEN: &str =
    "s.status = 'pending' AND NOT EXISTS (SELECT 1 FROM matches x WHERE x.scheme_id = s.id)";

/// The status of merchant-side record `s` as accord shows it: as staged,
/// or `matched` when a match names it.
const SCHEME_STATUS: &str = "CASE WHEN s.status = 'pending' \
     AND EXISTS (SELECT 1 FROM matches x WHERE x.scheme_id = s.id) THEN 'matched' ELSE s.status END";

/// The advisory lock that serialises merchant-side staging and
/// re-identification; matcher claims take it shared (any constant unique
/// to it; `pg_locks` shows its low 32 bits as `objid`).
pub const SCHEME_STAGING_LOCK: i64 = 0x6163_636f_7264_0001;

/// The advisory lock that serialises payment-side staging: in import order,
/// so an auth is staged before its settlement. Not taken by claims.
pub const PAYMENT_STAGING_LOCK: i64 = 0x6163_636f_7264_0002;

/// An import whose rows are all merchant-side (and standalone), by
/// `imports.sides`; NULL (parsed before migration 0005) is not.
const MERCHANT_ONLY: &str =
    "(sides IS NOT NULL AND NOT 'payment' = ANY (sides) AND 'merchant' = ANY (sides))";

/// Which imports a stager takes (see [`Store::stage_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stager {
    /// Every import with payment-side rows (and those of unknown sides).
    Payment,
    /// Imports of merchant-side rows only.
    Merchant,
}

/// At most this many candidates go to a matcher for one payment; more than
/// that is a data problem (a MID shared by a whole chain, a constant
/// amount), answered "too many candidates" instead of a coin toss.
pub const MAX_CANDIDATES: usize = 200;

/// Staging an import that created or flagged at least this many rows
/// refreshes the planner's statistics of the tables it changed.
const ANALYZE_AFTER: u64 = 10_000;

/// What staging one import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StageCounts {
    pub payments_created: u64,
    pub payments_settled: u64,
    pub legs_ignored: u64,
    pub unidentified: u64,
    pub scheme_pending: u64,
    pub scheme_unassigned: u64,
    pub scheme_refunds: u64,
    /// Pending payments this import's merchant-side records may concern.
    pub payments_flagged: u64,
}

impl std::ops::AddAssign for StageCounts {
    fn add_assign(&mut self, o: Self) {
        self.payments_created += o.payments_created;
        self.payments_settled += o.payments_settled;
        self.legs_ignored += o.legs_ignored;
        self.unidentified += o.unidentified;
        self.scheme_pending += o.scheme_pending;
        self.scheme_unassigned += o.scheme_unassigned;
        self.scheme_refunds += o.scheme_refunds;
        self.payments_flagged += o.payments_flagged;
    }
}

/// Which flagged payments a claim takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimScope {
    /// Every one.
    All,
    /// Only those no payment-side row still to be staged can change: a
    /// payment created by a settlement, or one without a settlement key.
    /// While payment-side imports wait to be staged, an authorisation's
    /// settlement (amount, auth code) may be among them, and the payment
    /// waits for it. (A second settlement of a purchase already settled and
    /// matched is recorded as ignored, as when it comes later.)
    Settled,
}

impl ClaimScope {
    /// SQL on `p` (payments), after the claim's other conditions.
    fn condition(self) -> &'static str {
        match self {
            Self::All => "",
            Self::Settled => "AND (p.kind = 'settlement' OR p.settlement_key IS NULL)",
        }
    }
}

/// What a re-identification pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reidentified {
    pub payments_identified: u64,
    pub cards_registered: u64,
    pub scheme_assigned: u64,
    pub retried: u64,
}

/// A merchant's matcher and thresholds, as a batch needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantMatching {
    pub id: i64,
    pub slug: String,
    pub matcher: String,
    pub matcher_config: serde_json::Value,
    pub auto_confirm_confidence: u8,
}

/// One claimed payment with its candidates.
#[derive(Debug, Clone)]
pub struct PaymentWork {
    pub payment_id: i64,
    pub group: MatchGroup,
    /// `scheme_transactions.id` of each candidate, in the group's order.
    pub candidate_ids: Vec<i64>,
    /// More candidates than [`MAX_CANDIDATES`] were found (the group holds none).
    pub too_many: Option<usize>,
}

/// The claimed payments of one merchant.
#[derive(Debug, Clone)]
pub struct MerchantWork {
    pub merchant: MerchantMatching,
    pub payments: Vec<PaymentWork>,
}

/// A matcher's answer for one payment, as the engine settled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Becomes a match.
    Match {
        scheme_id: i64,
        reason: String,
        confidence: u8,
        candidates: usize,
        plugin: PluginIdentity,
    },
    /// Below the merchant's auto-confirm threshold: to the review queue.
    Review {
        scheme_id: i64,
        reason: String,
        confidence: u8,
        candidates: usize,
        plugin: PluginIdentity,
    },
    /// Nothing chosen; the payment stays pending until new data arrives.
    NoMatch {
        reason: String,
        candidates: usize,
        plugin: Option<PluginIdentity>,
    },
    /// The matcher could not run; tried again after a pause.
    Error { reason: String },
}

/// What committing a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BatchCounts {
    pub matched: u64,
    pub reviews: u64,
    pub unmatched: u64,
    pub errors: u64,
    /// Chosen candidates taken by another payment first; retried.
    pub lost: u64,
    /// Ambiguous pending payments (here or earlier) that had a record this
    /// batch matched among their candidates; flagged to try again.
    pub reflagged: u64,
}

impl std::ops::AddAssign for BatchCounts {
    fn add_assign(&mut self, o: Self) {
        self.matched += o.matched;
        self.reviews += o.reviews;
        self.unmatched += o.unmatched;
        self.errors += o.errors;
        self.lost += o.lost;
        self.reflagged += o.reflagged;
    }
}

/// Claimed payments (row-locked until [`MatchBatch::commit`] or drop).
pub struct MatchBatch {
    tx: Tx,
    pub work: Vec<MerchantWork>,
    cursor: Option<ClaimCursor>,
    /// Each claimed payment's merchant and stored transaction.
    payments: std::collections::HashMap<i64, ClaimedPayment>,
    /// The stored transaction of each candidate record (by record id).
    /// With the payments' ones: what a decision drops from the cache.
    record_transactions: std::collections::HashMap<i64, i64>,
    cache: Arc<TransactionCache>,
}

/// Where a claim ended, in the claims' order: the last claimed payment and
/// its merchant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimCursor {
    merchant: i64,
    payment: i64,
}

struct ClaimedPayment {
    merchant: i64,
    transaction: i64,
}

/// A match as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchRow {
    pub id: i64,
    pub kind: String,
    pub merchant: String,
    pub payment_id: i64,
    /// The payment's current transaction.
    pub payment_transaction_id: i64,
    pub scheme_id: Option<i64>,
    pub merchant_transaction_id: Option<i64>,
    pub plugin: Option<PluginIdentity>,
    pub reason: String,
    pub confidence: Option<i16>,
    pub candidates: Option<i32>,
    pub actor: String,
    pub created_at: DateTime<Utc>,
}

/// A payment as stored (its effective fields after the collapse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PaymentRow {
    pub id: i64,
    pub status: String,
    pub merchant: Option<String>,
    pub provider: String,
    pub mid: String,
    pub settlement_key: Option<String>,
    pub transaction_id: i64,
    pub kind: String,
    pub amount_minor: i64,
    pub currency: String,
    pub occurred_at: DateTime<Utc>,
    pub card_token: Option<String>,
    pub first_six: Option<String>,
    pub last_four: Option<String>,
    pub auth_code: Option<String>,
    pub attempts: i32,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_candidates: Option<i32>,
    pub last_reason: Option<String>,
    pub last_plugin: Option<String>,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A merchant-side record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SchemeRow {
    pub id: i64,
    pub transaction_id: i64,
    pub status: String,
    pub merchant: Option<String>,
    pub provider: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub mids: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// What happened to one payment-side transaction at staging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LegRow {
    pub transaction_id: i64,
    pub payment_id: Option<i64>,
    pub action: String,
    pub note: Option<String>,
    pub at: DateTime<Utc>,
}

/// An entry of the review queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReviewRow {
    pub id: i64,
    pub status: String,
    pub merchant: String,
    pub payment_id: i64,
    pub payment_transaction_id: i64,
    pub scheme_id: i64,
    pub merchant_transaction_id: i64,
    pub confidence: i16,
    pub reason: String,
    pub candidates: i32,
    pub plugin: PluginIdentity,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Everything matching knows about one transaction (`GET /v1/transactions/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub transaction: super::StoredTransaction,
    /// `unstaged`, `ignored`, a payment status, or a scheme status.
    pub stage: String,
    pub leg: Option<LegRow>,
    pub payment: Option<PaymentRow>,
    /// Every transaction that is a leg of this payment.
    pub legs: Vec<LegRow>,
    pub scheme: Option<SchemeRow>,
    #[serde(rename = "match")]
    pub matched: Option<MatchRow>,
    pub reviews: Vec<ReviewRow>,
    /// What happened, oldest first.
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub stage: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchFilter {
    pub merchant: Option<String>,
    pub kind: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentFilter {
    pub merchant: Option<String>,
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<i64>,
}

/// Why a force match or a review decision was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedressError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

impl Store {
    /// The oldest parsed import not yet staged of `stager`'s kind, staged:
    /// payments identified and collapsed, scheme records created, pending
    /// payments flagged. `merchant_of` names the merchant of a
    /// merchant-side source (config), if any. `None` when no such import
    /// is waiting.
    ///
    /// Locks: payment-side imports are staged one at a time across every
    /// worker and daemon, in import order (the collapse needs an auth
    /// before its settlement); merchant-side ones likewise, and exclusive of
    /// matcher claims (they take that lock shared): a merchant-side import
    /// flags the payments committed before it, so it must not run beside a
    /// claim that decides with a snapshot missing its records. The two
    /// kinds run side by side: a new payment is flagged when it is created,
    /// so a merchant-side import needs no payment import to be committed
    /// first. An import with both sides takes both locks (payment first).
    /// A payment-side import does run beside claims: a settlement waits for
    /// a claimed payment's decision and then finds it decided or pending.
    ///
    /// The two kinds can deadlock on a payment both update (a settlement
    /// and a flag); PostgreSQL then rolls one back whole
    /// ([`StoreError::is_concurrency_abort`]) and the caller stages it again.
    pub async fn stage_next(
        &self,
        stager: Stager,
        merchant_of: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<(i64, StageCounts)>> {
        let mut tx = self.pool.begin().await?;
        let (lock, which) = match stager {
            Stager::Payment => (PAYMENT_STAGING_LOCK, format!("NOT {MERCHANT_ONLY}")),
            Stager::Merchant => (SCHEME_STAGING_LOCK, MERCHANT_ONLY.to_owned()),
        };
        xact_lock(&mut tx, lock).await?;
        // Staging sorts and hashes whole imports (waves, merchant order):
        // at the server's default 4 MB they spill to disk.
        sqlx::query("SET LOCAL work_mem = '128MB'")
            .execute(&mut *tx)
            .await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT id, source, (sides IS NULL OR 'payment' = ANY (sides)) AS has_payment_side, \
               (sides IS NULL OR 'merchant' = ANY (sides)) AS has_merchant_side \
             FROM imports WHERE status = 'parsed' AND staged_at IS NULL AND {which} \
             ORDER BY id LIMIT 1 FOR UPDATE"
        ))
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let sides = Sides {
            payment: row.try_get("has_payment_side")?,
            merchant: row.try_get("has_merchant_side")?,
        };
        if stager == Stager::Payment && sides.merchant {
            xact_lock(&mut tx, SCHEME_STAGING_LOCK).await?;
        }
        let import_id: i64 = row.try_get("id")?;
        let source: String = row.try_get("source")?;
        let merchant = merchant_of(&source);
        let counts = stage_import(
            &mut tx,
            import_id,
            sides,
            merchant.as_deref(),
            &self.transactions,
        )
        .await?;
        sqlx::query("UPDATE imports SET staged_at = now() WHERE id = $1")
            .bind(import_id)
            .execute(&mut *tx)
            .await?;
        record_event(
            &mut tx,
            "import",
            import_id,
            "staged",
            "accord",
            serde_json::to_value(&counts).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        // A large import changes what the tables look like (rows, flagged
        // share) faster than autovacuum notices; with stale statistics the
        // claim and candidate queries read every flagged payment and every
        // pending record per batch instead of an index range.
        if counts.payments_created + counts.payments_settled + counts.payments_flagged
            >= ANALYZE_AFTER
        {
            sqlx::query("ANALYZE payments").execute(&self.pool).await?;
        }
        if counts.scheme_pending + counts.scheme_unassigned >= ANALYZE_AFTER {
            sqlx::query("ANALYZE scheme_transactions")
                .execute(&self.pool)
                .await?;
        }
        Ok(Some((import_id, counts)))
    }

    /// Bring back what new reference data makes workable: unidentified
    /// payments whose MIDs are now registered, unregistered cards now in the
    /// registry, unassigned scheme records whose MIDs now name a merchant,
    /// and payments whose matcher failed, once their pause is over.
    pub async fn reidentify(&self) -> Result<Reidentified> {
        let mut tx = self.pool.begin().await?;
        // It creates candidates and flags payments, as staging of both
        // sides does (locks in staging's order: payment side first).
        for lock in [PAYMENT_STAGING_LOCK, SCHEME_STAGING_LOCK] {
            xact_lock(&mut tx, lock).await?;
        }
        let mut out = Reidentified::default();
        // Unidentified payments and unassigned merchant-side records: the
        // MIDs are read only when there are some.
        let waiting: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
            "SELECT id, transaction_id, card_token FROM payments WHERE status = 'unidentified' \
             FOR UPDATE SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await?;
        let unassigned: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, transaction_id FROM scheme_transactions WHERE status = 'unassigned' \
             FOR UPDATE SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await?;
        let registry = if waiting.is_empty() && unassigned.is_empty() {
            Registry::default()
        } else {
            Registry::load(&mut tx).await?
        };
        // Unidentified → identified: same rules as staging.
        let read =
            transactions_by_id(&mut tx, &waiting.iter().map(|w| w.1).collect::<Vec<_>>()).await?;
        let mut found = Vec::new();
        for (payment_id, transaction_id, card_token) in &waiting {
            let t = read.get(transaction_id).ok_or_else(|| {
                StoreError::NotFound(format!(
                    "transaction {transaction_id} of payment {payment_id}"
                ))
            })?;
            if let Identified::Merchant {
                merchant,
                identifier,
            } = registry.identify(t)
            {
                found.push((*payment_id, t, card_token, merchant, identifier));
            }
        }
        let tokens: Vec<&str> = found.iter().filter_map(|f| f.2.as_deref()).collect();
        let registered: std::collections::HashSet<String> =
            sqlx::query_scalar("SELECT card_token FROM card_registry WHERE card_token = ANY ($1)")
                .bind(&tokens)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let (mut id, mut merchant, mut identifier, mut status) = (vec![], vec![], vec![], vec![]);
        for (payment_id, t, card_token, m, i) in found {
            id.push(payment_id);
            merchant.push(m);
            identifier.push(i);
            status.push(payment_status(
                t,
                registry.merchant(m),
                card_token.as_ref().is_some_and(|k| registered.contains(k)),
            ));
        }
        // A dropped Amex auth gives its key up (below).
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE payments p SET merchant = d.merchant, identifier = d.identifier, status = d.status, \
               settlement_key = CASE WHEN d.status = 'dropped' THEN NULL ELSE p.settlement_key END, \
               note = NULL, updated_at = now() \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[]) \
                  AS d(id, merchant, identifier, status) \
             WHERE p.id = d.id RETURNING p.id",
        )
        .bind(&id)
        .bind(&merchant)
        .bind(&identifier)
        .bind(&status)
        .fetch_all(&mut *tx)
        .await?;
        out.payments_identified = ids.len() as u64;
        // A dropped Amex auth gave up its key: the settlement stands for
        // the purchase and creates the payment.
        if !ids.is_empty() {
            sqlx::query(
                "DELETE FROM payment_keys k USING payments p \
                 WHERE p.id = ANY ($1) AND p.status = 'dropped' AND k.payment_id = p.id",
            )
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
        decided_without_partner(&mut tx, &ids).await?;
        sqlx::query(
            "UPDATE payments SET needs_match = true WHERE id = ANY($1) AND status = 'pending'",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        out.cards_registered = sqlx::query(
            "UPDATE payments p SET status = 'pending', needs_match = true, updated_at = now() \
             WHERE p.status = 'unregistered' \
               AND EXISTS (SELECT 1 FROM card_registry c WHERE c.card_token = p.card_token)",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Unassigned merchant-side records whose MIDs now name a merchant.
        let read = transactions_by_id(&mut tx, &unassigned.iter().map(|w| w.1).collect::<Vec<_>>())
            .await?;
        let (mut id, mut merchant, mut status, mut at, mut mid) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (scheme_id, transaction_id) in &unassigned {
            let Some(t) = read.get(transaction_id) else {
                continue;
            };
            let Some(m) = registry.assign(t, None) else {
                continue;
            };
            id.push(*scheme_id);
            merchant.push(m);
            status.push(record_status(t, Some(m)));
            for v in registry.record_mids(t, Some(m)) {
                at.push(id.len() as i64);
                mid.push(v);
            }
        }
        let updated: Vec<Option<i64>> = sqlx::query_scalar(
            "UPDATE scheme_transactions s SET merchant = d.merchant, status = d.status, \
               mids = COALESCE(m.mids, '{}') \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::text[]) WITH ORDINALITY AS d(id, merchant, status, n) \
             LEFT JOIN (SELECT u.n, array_agg(u.mid ORDER BY u.mid) AS mids \
                        FROM UNNEST($4::bigint[], $5::text[]) AS u(n, mid) GROUP BY u.n) m ON m.n = d.n \
             WHERE s.id = d.id RETURNING CASE WHEN d.status = 'pending' THEN s.id END",
        )
        .bind(&id)
        .bind(&merchant)
        .bind(&status)
        .bind(&at)
        .bind(&mid)
        .fetch_all(&mut *tx)
        .await?;
        out.scheme_assigned = updated.len() as u64;
        // The pending ones are new candidates (refunds never are).
        let assigned: Vec<i64> = updated.into_iter().flatten().collect();
        flag_for_scheme(&mut tx, &assigned).await?;
        tx.commit().await?;
        out.retried = self.retry_due().await?;
        Ok(out)
    }

    /// Flag again the payments whose matcher failed, once their pause is over.
    pub async fn retry_due(&self) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE payments SET needs_match = true, retry_after = NULL \
             WHERE retry_after IS NOT NULL AND retry_after <= now() AND status = 'pending'",
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// When MIDs or cards last changed (for re-identification), if ever.
    pub async fn reference_changed_at(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar(
            "SELECT greatest((SELECT max(greatest(created_at, updated_at)) FROM merchant_identifiers), \
                             (SELECT max(updated_at) FROM card_registry), \
                             (SELECT max(created_at) FROM merchants))",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Whether a parsed import waits to be staged.
    pub async fn has_unstaged_imports(&self) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM imports WHERE status = 'parsed' AND staged_at IS NULL)",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Whether any payment waits for a matching attempt.
    pub async fn has_match_work(&self) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM payments WHERE needs_match AND status = 'pending')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Claim up to `limit` payments flagged for matching (merchant by
    /// merchant, so a batch opens few matcher sessions), locking them
    /// against other workers, with their candidates (C1–C5 plus the
    /// merchant's tolerance; records a match names and pairs a reviewer
    /// rejected are left out).
    pub async fn claim_match_batch(&self, limit: i64) -> Result<Option<MatchBatch>> {
        self.claim_match_batch_in(limit, ClaimScope::All, None)
            .await
    }

    /// [`claim_match_batch`](Self::claim_match_batch) of the flagged
    /// payments in `scope`, and with `after` (a batch's
    /// [`cursor`](MatchBatch::cursor)) only those after it in the claims'
    /// (merchant, payment) order.
    ///
    /// Workers that pass on the cursor of the last claim neither walk past
    /// each other's locked payments nor past the index entries of the
    /// payments matched before (dead until vacuumed): from the start, each
    /// claim scanned twice the rows it took (`bench match`, EXPLAIN).
    pub async fn claim_match_batch_in(
        &self,
        limit: i64,
        scope: ClaimScope,
        after: Option<ClaimCursor>,
    ) -> Result<Option<MatchBatch>> {
        let mut tx = self.pool.begin().await?;
        // Shared with other matchers, exclusive of merchant-side staging:
        // its triggers then never race a claim whose snapshot misses new
        // records.
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(SCHEME_STAGING_LOCK)
            .execute(&mut *tx)
            .await?;
        // One statement: the claim (locks only: the merchant, the card and
        // the candidates are read for the claimed rows, not for the locked
        // ones skipped), then per payment its candidates' ids and
        // transactions. The transactions themselves come from the cache or
        // from one lookup by sorted id below: joined in, each payment and
        // candidate cost a random read of `transactions` (file order, not
        // merchant order; `bench match`). The candidate lookup is a lateral
        // subquery so that merchant, provider and the amount range are all
        // conditions of the `scheme_candidates` index.
        let rows = sqlx::query(&format!(
            "WITH c AS MATERIALIZED ( \
               SELECT p.id, p.merchant, p.provider, p.mid, p.transaction_id, p.amount_minor, \
                 p.currency, p.occurred_at, p.first_six, p.last_four, p.auth_code, p.card_token \
               FROM payments p \
               WHERE p.needs_match AND p.status = 'pending' {} \
                 AND (p.merchant, p.id) > ($2, $3) \
               ORDER BY p.merchant, p.id LIMIT $1 \
               FOR UPDATE OF p SKIP LOCKED) \
             SELECT p.id AS payment_id, p.merchant AS merchant_id, p.transaction_id, \
               p.amount_minor AS p_amount, p.currency AS p_currency, p.occurred_at AS p_occurred_at, \
               p.first_six AS p_first_six, p.last_four AS p_last_four, p.auth_code AS p_auth_code, \
               m.slug AS merchant_slug, m.matcher, m.matcher_config, m.auto_confirm_confidence, \
               cr.card_token AS c_token, cr.first_six AS c_first_six, cr.last_four AS c_last_four, \
               cr.loyalty_id AS c_loyalty_id, k.ids AS candidate_ids, k.tids AS candidate_transactions \
             FROM c p \
             JOIN merchants m ON m.id = p.merchant \
             LEFT JOIN LATERAL (SELECT cr.* FROM card_registry cr \
                                WHERE cr.card_token = p.card_token OFFSET 0) cr ON true \
             CROSS JOIN LATERAL ( \
               SELECT array_agg(s.id ORDER BY s.id) AS ids, \
                      array_agg(s.transaction_id ORDER BY s.id) AS tids \
               FROM scheme_transactions s \
               WHERE s.merchant = p.merchant AND s.provider = p.provider \
                 AND s.status = 'pending' AND s.currency = p.currency \
                 AND s.amount_minor BETWEEN p.amount_minor - {ALLOWANCE} AND p.amount_minor + {ALLOWANCE} \
                 AND p.mid = ANY (s.mids) \
                 AND s.created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
                                     - make_interval(days => m.lookback_days)) k \
             ORDER BY p.merchant, p.id",
            scope.condition()
        ))
        .bind(limit)
        .bind(after.map_or(i64::MIN, |c| c.merchant))
        .bind(after.map_or(i64::MIN, |c| c.payment))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        // Per row: the payment, and its candidates (records, and their
        // transactions) in record id order.
        let mut ids = Vec::with_capacity(rows.len());
        let mut offers: Vec<(Vec<i64>, Vec<i64>)> = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(row.try_get::<i64, _>("payment_id")?);
            offers.push((
                row.try_get::<Option<Vec<i64>>, _>("candidate_ids")?
                    .unwrap_or_default(),
                row.try_get::<Option<Vec<i64>>, _>("candidate_transactions")?
                    .unwrap_or_default(),
            ));
        }
        // Pairs a reviewer rejected are no candidates. Read apart: probed
        // per candidate in the claim they cost a fifth of its buffer reads,
        // for an index that is almost always empty.
        let rejected: std::collections::HashSet<(i64, i64)> = sqlx::query_as(
            "SELECT payment_id, scheme_id FROM reviews \
             WHERE status = 'rejected' AND payment_id = ANY ($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        // Nor are records a match names (migration 0008): looked up once
        // for the batch's candidates, in id order. As an anti-join per
        // candidate in the claim, the test cost 2.2–3.0 s per 1M payments
        // on a copy of `bench match`'s database (half the records matched),
        // as this lookup about 1 s. Its snapshot is newer than the claim's:
        // it can only find more of them taken.
        let mut offered: Vec<i64> = offers
            .iter()
            .flat_map(|(records, _)| records.iter().copied())
            .collect();
        offered.sort_unstable();
        offered.dedup();
        let taken: std::collections::HashSet<i64> = if offered.is_empty() {
            Default::default()
        } else {
            sqlx::query_scalar("SELECT scheme_id FROM matches WHERE scheme_id = ANY ($1)")
                .bind(&offered)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect()
        };
        // Per row: its candidates (record, its transaction), in id order.
        let mut found: Vec<Vec<(i64, i64)>> = Vec::with_capacity(rows.len());
        let mut wanted: Vec<i64> = Vec::with_capacity(rows.len() * 4);
        for ((row, &payment_id), (records, tids)) in rows.iter().zip(&ids).zip(offers) {
            wanted.push(row.try_get("transaction_id")?);
            let open: Vec<(i64, i64)> = records
                .into_iter()
                .zip(tids)
                .filter(|&(record, _)| {
                    !taken.contains(&record) && !rejected.contains(&(payment_id, record))
                })
                .collect();
            if open.len() <= MAX_CANDIDATES {
                wanted.extend(open.iter().map(|c| c.1));
            }
            found.push(open);
        }
        wanted.sort_unstable();
        wanted.dedup();
        // From the cache what staging left there; the rest in one read.
        let mut transactions: std::collections::HashMap<i64, Arc<Transaction>> =
            std::collections::HashMap::with_capacity(wanted.len());
        let mut missing = Vec::new();
        for id in wanted {
            match self.transactions.get(id) {
                Some(t) => {
                    transactions.insert(id, t);
                }
                None => missing.push(id),
            }
        }
        transactions.extend(transactions_by_id(&mut tx, &missing).await?);
        let transaction = |id: i64| {
            transactions.get(&id).map(Arc::clone).ok_or_else(|| {
                StoreError::NotFound(format!(
                    "transaction {id} of a claimed payment or candidate"
                ))
            })
        };
        let mut payments = std::collections::HashMap::with_capacity(rows.len());
        let mut record_transactions = std::collections::HashMap::new();
        let mut work: Vec<MerchantWork> = Vec::new();
        for ((row, &payment_id), open) in rows.iter().zip(&ids).zip(found) {
            let merchant_id: i64 = row.try_get("merchant_id")?;
            if work.last().is_none_or(|w| w.merchant.id != merchant_id) {
                let confidence: i16 = row.try_get("auto_confirm_confidence")?;
                work.push(MerchantWork {
                    merchant: MerchantMatching {
                        id: merchant_id,
                        slug: row.try_get("merchant_slug")?,
                        matcher: row.try_get("matcher")?,
                        matcher_config: row
                            .try_get::<sqlx::types::Json<serde_json::Value>, _>("matcher_config")?
                            .0,
                        auto_confirm_confidence: confidence.clamp(0, 100) as u8,
                    },
                    payments: Vec::new(),
                });
            }
            let transaction_id: i64 = row.try_get("transaction_id")?;
            payments.insert(
                payment_id,
                ClaimedPayment {
                    merchant: merchant_id,
                    transaction: transaction_id,
                },
            );
            let mut payment = Transaction::clone(&*transaction(transaction_id)?);
            // The payment's effective fields (after the collapse).
            payment.amount.minor_units = row.try_get("p_amount")?;
            payment.amount.currency = row.try_get::<String, _>("p_currency")?.trim().to_owned();
            let at: DateTime<Utc> = row.try_get("p_occurred_at")?;
            payment.occurred_at = at.with_timezone(payment.occurred_at.offset());
            payment.card_first_six = row.try_get("p_first_six")?;
            payment.card_last_four = row.try_get("p_last_four")?;
            payment.auth_code = row.try_get("p_auth_code")?;
            let cardholder = match row.try_get::<Option<String>, _>("c_token")? {
                Some(card_token) => Some(Cardholder {
                    card_token,
                    first_six: row.try_get("c_first_six")?,
                    last_four: row.try_get("c_last_four")?,
                    loyalty_id: row.try_get("c_loyalty_id")?,
                }),
                None => None,
            };
            // More than MAX_CANDIDATES: the group holds none.
            let too_many = (open.len() > MAX_CANDIDATES).then_some(open.len());
            let (mut candidate_ids, mut candidates) = (Vec::new(), Vec::new());
            if too_many.is_none() {
                for (record, tid) in open {
                    candidate_ids.push(record);
                    candidates.push(transaction(tid)?);
                    record_transactions.insert(record, tid);
                }
            }
            work.last_mut()
                .expect("pushed above")
                .payments
                .push(PaymentWork {
                    payment_id,
                    group: MatchGroup {
                        payment,
                        cardholder,
                        candidates,
                    },
                    candidate_ids,
                    too_many,
                });
        }
        let cursor = work.last().and_then(|w| {
            w.payments.last().map(|p| ClaimCursor {
                merchant: w.merchant.id,
                payment: p.payment_id,
            })
        });
        Ok(Some(MatchBatch {
            tx,
            work,
            cursor,
            payments,
            record_transactions,
            cache: Arc::clone(&self.transactions),
        }))
    }

    /// Pending payments of merchants with an `unmatched_after_days`, dated
    /// before the start of (`today` − that many days), become UNMATCHED
    /// (at most `limit` per call; matching-rules.md §9, selected by payment
    /// row as the reference recommends). As in Harmonia, a Mastercard or
    /// Amex payment is swept only once settled: its settlement is still to
    /// come and would find the payment decided. Returns how many.
    pub async fn sweep_unmatched(&self, now: DateTime<Utc>, limit: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT p.id FROM payments p JOIN merchants m ON m.id = p.merchant \
             WHERE p.status = 'pending' AND m.unmatched_after_days IS NOT NULL \
               AND (p.provider = 'visa' OR p.kind <> 'authorisation') \
               AND p.occurred_at < date_trunc('day', $1 AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
                                   - make_interval(days => m.unmatched_after_days) \
             ORDER BY p.id LIMIT $2 FOR UPDATE OF p SKIP LOCKED",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let inserted: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO matches (kind, merchant, payment_id, reason, actor) \
             SELECT 'unmatched', p.merchant, p.id, \
                    format('no partner within %s days of the transaction date', m.unmatched_after_days), \
                    'accord' \
             FROM payments p JOIN merchants m ON m.id = p.merchant WHERE p.id = ANY ($1) \
             ON CONFLICT DO NOTHING RETURNING payment_id",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE payments SET status = 'unmatched', needs_match = false, updated_at = now() \
             WHERE id = ANY ($1)",
        )
        .bind(&inserted)
        .execute(&mut *tx)
        .await?;
        supersede_reviews(&mut tx, &inserted).await?;
        tx.commit().await?;
        Ok(inserted.len() as u64)
    }

    /// Force match (matching-rules.md §10): pair a payment-side transaction
    /// with a merchant-side one, whatever amounts, MIDs and times say. Both
    /// must be undecided and belong to the same merchant.
    pub async fn force_match(
        &self,
        payment_transaction_id: i64,
        merchant_transaction_id: i64,
        reason: &str,
        actor: &str,
    ) -> Result<std::result::Result<MatchRow, RedressError>> {
        let mut tx = self.pool.begin().await?;
        let payment = sqlx::query(
            "SELECT p.id, p.status, p.merchant FROM payment_legs l JOIN payments p ON p.id = l.payment_id \
             WHERE l.transaction_id = $1 FOR UPDATE OF p",
        )
        .bind(payment_transaction_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(payment) = payment else {
            return Ok(Err(RedressError::NotFound(format!(
                "transaction {payment_transaction_id} is not a staged payment-side transaction"
            ))));
        };
        let scheme = sqlx::query(&format!(
            "SELECT s.id, {SCHEME_STATUS} AS status, s.merchant FROM scheme_transactions s \
             WHERE s.transaction_id = $1 FOR UPDATE"
        ))
        .bind(merchant_transaction_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(scheme) = scheme else {
            return Ok(Err(RedressError::NotFound(format!(
                "transaction {merchant_transaction_id} is not a staged merchant-side transaction"
            ))));
        };
        let payment_id: i64 = payment.try_get("id")?;
        let p_status: String = payment.try_get("status")?;
        let p_merchant: Option<i64> = payment.try_get("merchant")?;
        let scheme_id: i64 = scheme.try_get("id")?;
        let s_status: String = scheme.try_get("status")?;
        let s_merchant: Option<i64> = scheme.try_get("merchant")?;
        if !matches!(p_status.as_str(), "pending" | "unregistered" | "review") {
            return Ok(Err(RedressError::Conflict(format!(
                "payment {payment_id} is {p_status}, not pending"
            ))));
        }
        if s_status != "pending" {
            return Ok(Err(RedressError::Conflict(format!(
                "merchant-side record {scheme_id} is {s_status}, not pending"
            ))));
        }
        if p_merchant != s_merchant {
            return Ok(Err(RedressError::Conflict(
                "the two transactions belong to different merchants".into(),
            )));
        }
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO matches (kind, merchant, payment_id, scheme_id, reason, actor) \
             VALUES ('forced', $1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(p_merchant)
        .bind(payment_id)
        .bind(scheme_id)
        .bind(reason)
        .bind(actor)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(Err(RedressError::Conflict(
                "one of the transactions was matched meanwhile".into(),
            )));
        };
        set_matched(&mut tx, &[payment_id], &[scheme_id], "forced").await?;
        supersede_reviews(&mut tx, &[payment_id]).await?;
        record_event(
            &mut tx,
            "match",
            id,
            "forced",
            actor,
            serde_json::json!({"payment_id": payment_id, "scheme_id": scheme_id, "reason": reason}),
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(self.get_match(id).await?.ok_or_else(|| {
            StoreError::NotFound(format!("match {id}"))
        })?))
    }

    /// Confirm (`true`: becomes a match, actor recorded) or reject (`false`:
    /// the payment goes back to pending and never sees that candidate
    /// again) an open review.
    pub async fn decide_review(
        &self,
        review_id: i64,
        confirm: bool,
        actor: &str,
        note: Option<&str>,
    ) -> Result<std::result::Result<ReviewRow, RedressError>> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(
            "SELECT r.status, r.payment_id, r.scheme_id, r.merchant, r.reason, r.confidence, r.candidates, \
                    r.plugin_name, r.plugin_version, r.plugin_sha256 \
             FROM reviews r WHERE r.id = $1 FOR UPDATE",
        )
        .bind(review_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Err(RedressError::NotFound(format!("review {review_id}"))));
        };
        let status: String = row.try_get("status")?;
        if status != "open" {
            return Ok(Err(RedressError::Conflict(format!(
                "review {review_id} is {status}"
            ))));
        }
        let payment_id: i64 = row.try_get("payment_id")?;
        let scheme_id: i64 = row.try_get("scheme_id")?;
        // Lock the payment before changing it.
        sqlx::query("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE")
            .bind(payment_id)
            .execute(&mut *tx)
            .await?;
        let new_status = if confirm {
            let inserted: Option<i64> = sqlx::query_scalar(
                "INSERT INTO matches (kind, merchant, payment_id, scheme_id, plugin_name, plugin_version, \
                   plugin_sha256, reason, confidence, candidates, actor) \
                 SELECT 'matched', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
                 WHERE EXISTS (SELECT 1 FROM scheme_transactions WHERE id = $3 AND status = 'pending') \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(row.try_get::<i64, _>("merchant")?)
            .bind(payment_id)
            .bind(scheme_id)
            .bind(row.try_get::<String, _>("plugin_name")?)
            .bind(row.try_get::<String, _>("plugin_version")?)
            .bind(row.try_get::<String, _>("plugin_sha256")?)
            .bind(format!("{} (confirmed by {actor})", row.try_get::<String, _>("reason")?))
            .bind(row.try_get::<i16, _>("confidence")?)
            .bind(row.try_get::<i32, _>("candidates")?)
            .bind(actor)
            .fetch_optional(&mut *tx)
            .await?;
            if inserted.is_some() {
                set_matched(&mut tx, &[payment_id], &[scheme_id], "matched").await?;
                "confirmed"
            } else {
                // The candidate went to another payment meanwhile.
                sqlx::query(
                    "UPDATE payments SET status = 'pending', needs_match = true, updated_at = now() \
                     WHERE id = $1 AND status = 'review'",
                )
                .bind(payment_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE reviews SET status = 'superseded', decided_at = now() WHERE id = $1",
                )
                .bind(review_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(Err(RedressError::Conflict(format!(
                    "the candidate of review {review_id} was matched to another payment; \
                     the payment is pending again"
                ))));
            }
        } else {
            sqlx::query(
                "UPDATE payments SET status = 'pending', needs_match = true, updated_at = now() \
                 WHERE id = $1 AND status = 'review'",
            )
            .bind(payment_id)
            .execute(&mut *tx)
            .await?;
            "rejected"
        };
        sqlx::query(
            "UPDATE reviews SET status = $2, decided_by = $3, decided_at = now(), note = $4 WHERE id = $1",
        )
        .bind(review_id)
        .bind(new_status)
        .bind(actor)
        .bind(note)
        .execute(&mut *tx)
        .await?;
        record_event(
            &mut tx,
            "review",
            review_id,
            new_status,
            actor,
            serde_json::json!({"note": note}),
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(self.get_review(review_id).await?.ok_or_else(|| {
            StoreError::NotFound(format!("review {review_id}"))
        })?))
    }

    pub async fn get_match(&self, id: i64) -> Result<Option<MatchRow>> {
        let row = sqlx::query(&format!("{MATCH_SELECT} WHERE x.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(match_row).transpose()
    }

    pub async fn list_matches(&self, filter: &MatchFilter) -> Result<super::Page<MatchRow>> {
        let limit = super::read::page_limit(filter.limit);
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!("{MATCH_SELECT} WHERE true"));
        if let Some(m) = &filter.merchant {
            q.push(" AND mm.slug = ").push_bind(m);
        }
        if let Some(k) = &filter.kind {
            q.push(" AND x.kind = ").push_bind(k);
        }
        if let Some(c) = filter.cursor {
            q.push(" AND x.id < ").push_bind(c);
        }
        q.push(" ORDER BY x.id DESC LIMIT ").push_bind(limit + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
        let items = rows.iter().map(match_row).collect::<Result<Vec<_>>>()?;
        Ok(super::read::to_page(items, limit, |m| m.id))
    }

    pub async fn list_payments(&self, filter: &PaymentFilter) -> Result<super::Page<PaymentRow>> {
        let limit = super::read::page_limit(filter.limit);
        let mut q =
            sqlx::QueryBuilder::<sqlx::Postgres>::new(format!("{PAYMENT_SELECT} WHERE true"));
        if let Some(m) = &filter.merchant {
            q.push(" AND mm.slug = ").push_bind(m);
        }
        if let Some(s) = &filter.status {
            q.push(" AND p.status = ").push_bind(s);
            // Spelled out so that a generic plan can use `payments_status`,
            // which leaves matched payments out (migration 0010).
            if s != "matched" {
                q.push(" AND p.status <> 'matched'");
            }
        }
        if let Some(c) = filter.cursor {
            q.push(" AND p.id < ").push_bind(c);
        }
        q.push(" ORDER BY p.id DESC LIMIT ").push_bind(limit + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
        let items = rows.iter().map(payment_row).collect::<Result<Vec<_>>>()?;
        Ok(super::read::to_page(items, limit, |p| p.id))
    }

    pub async fn get_review(&self, id: i64) -> Result<Option<ReviewRow>> {
        let row = sqlx::query(&format!("{REVIEW_SELECT} WHERE r.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(review_row).transpose()
    }

    pub async fn list_reviews(
        &self,
        status: Option<&str>,
        limit: Option<u32>,
        cursor: Option<i64>,
    ) -> Result<super::Page<ReviewRow>> {
        let limit = super::read::page_limit(limit);
        let mut q =
            sqlx::QueryBuilder::<sqlx::Postgres>::new(format!("{REVIEW_SELECT} WHERE true"));
        if let Some(s) = status {
            q.push(" AND r.status = ").push_bind(s);
        }
        if let Some(c) = cursor {
            q.push(" AND r.id < ").push_bind(c);
        }
        q.push(" ORDER BY r.id DESC LIMIT ").push_bind(limit + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
        let items = rows.iter().map(review_row).collect::<Result<Vec<_>>>()?;
        Ok(super::read::to_page(items, limit, |r| r.id))
    }

    /// Everything matching knows about transaction `id`; `None` if there is
    /// no such transaction.
    pub async fn explain_transaction(&self, id: i64) -> Result<Option<Explanation>> {
        let Some(row) = sqlx::query(&format!(
            "SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let transaction = stored_transaction(&row)?;
        let mut history = Vec::new();
        for e in self.events_for_import(transaction.import_id).await? {
            history.push(HistoryEntry {
                at: e.at,
                stage: format!("import {}", e.stage),
                detail: format!("import {} ({})", transaction.import_id, e.actor),
            });
        }
        let leg = sqlx::query(&format!("{LEG_SELECT} WHERE transaction_id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(leg_row)
            .transpose()?;
        let payment_id = leg.as_ref().and_then(|l| l.payment_id);
        let payment = match payment_id {
            Some(pid) => sqlx::query(&format!("{PAYMENT_SELECT} WHERE p.id = $1"))
                .bind(pid)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(payment_row)
                .transpose()?,
            None => None,
        };
        let legs = match payment_id {
            Some(pid) => sqlx::query(&format!(
                "{LEG_SELECT} WHERE payment_id = $1 ORDER BY at, transaction_id"
            ))
            .bind(pid)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(leg_row)
            .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        for l in &legs {
            history.push(HistoryEntry {
                at: l.at,
                stage: format!("payment {}", l.action),
                detail: format!(
                    "transaction {}{}",
                    l.transaction_id,
                    l.note
                        .as_deref()
                        .map(|n| format!(": {n}"))
                        .unwrap_or_default()
                ),
            });
        }
        if let (Some(l), None) = (&leg, payment_id) {
            history.push(HistoryEntry {
                at: l.at,
                stage: format!("payment {}", l.action),
                detail: l.note.clone().unwrap_or_default(),
            });
        }
        let scheme = sqlx::query(&format!("{} WHERE s.transaction_id = $1", scheme_select()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(scheme_row)
            .transpose()?;
        if let Some(s) = &scheme {
            history.push(HistoryEntry {
                at: s.created_at,
                stage: "merchant record".into(),
                detail: format!(
                    "merchant {}, MIDs [{}]",
                    s.merchant.as_deref().unwrap_or("(unassigned)"),
                    s.mids.join(", ")
                ),
            });
        }
        if let Some(p) = &payment
            && let Some(at) = p.last_attempt_at
        {
            history.push(HistoryEntry {
                at,
                stage: "matching attempt".into(),
                detail: format!(
                    "attempt {}: {} candidate(s); {}",
                    p.attempts,
                    p.last_candidates.unwrap_or(0),
                    p.last_reason.as_deref().unwrap_or("")
                ),
            });
        }
        let matched = match (payment_id, scheme.as_ref().map(|s| s.id)) {
            (Some(pid), _) => {
                sqlx::query(&format!("{MATCH_SELECT} WHERE x.payment_id = $1"))
                    .bind(pid)
                    .fetch_optional(&self.pool)
                    .await?
            }
            (None, Some(sid)) => {
                sqlx::query(&format!("{MATCH_SELECT} WHERE x.scheme_id = $1"))
                    .bind(sid)
                    .fetch_optional(&self.pool)
                    .await?
            }
            _ => None,
        }
        .as_ref()
        .map(match_row)
        .transpose()?;
        let reviews = match (payment_id, scheme.as_ref().map(|s| s.id)) {
            (Some(pid), _) => {
                sqlx::query(&format!(
                    "{REVIEW_SELECT} WHERE r.payment_id = $1 ORDER BY r.id"
                ))
                .bind(pid)
                .fetch_all(&self.pool)
                .await?
            }
            (None, Some(sid)) => {
                sqlx::query(&format!(
                    "{REVIEW_SELECT} WHERE r.scheme_id = $1 ORDER BY r.id"
                ))
                .bind(sid)
                .fetch_all(&self.pool)
                .await?
            }
            _ => Vec::new(),
        }
        .iter()
        .map(review_row)
        .collect::<Result<Vec<_>>>()?;
        for r in &reviews {
            history.push(HistoryEntry {
                at: r.created_at,
                stage: "review opened".into(),
                detail: format!("review {}: confidence {}; {}", r.id, r.confidence, r.reason),
            });
            if let (Some(at), Some(by)) = (r.decided_at, &r.decided_by) {
                history.push(HistoryEntry {
                    at,
                    stage: format!("review {}", r.status),
                    detail: format!("review {} by {by}", r.id),
                });
            }
        }
        if let Some(m) = &matched {
            history.push(HistoryEntry {
                at: m.created_at,
                stage: m.kind.clone(),
                detail: format!(
                    "by {}{}: {}",
                    m.actor,
                    m.plugin
                        .as_ref()
                        .map(|p| format!(" (sha256 {})", &p.sha256[..p.sha256.len().min(12)]))
                        .unwrap_or_default(),
                    m.reason
                ),
            });
        }
        history.sort_by_key(|h| h.at);
        let stage = match (&payment, &scheme, &leg) {
            (Some(p), _, _) => p.status.clone(),
            (None, Some(s), _) => s.status.clone(),
            (None, None, Some(l)) => l.action.clone(),
            (None, None, None) => "unstaged".into(),
        };
        Ok(Some(Explanation {
            transaction,
            stage,
            leg,
            payment,
            legs,
            scheme,
            matched,
            reviews,
            history,
        }))
    }
}

impl MatchBatch {
    /// Where this claim ended: the next claim may start after it.
    pub fn cursor(&self) -> Option<ClaimCursor> {
        self.cursor
    }

    /// How many payments were claimed.
    pub fn len(&self) -> usize {
        self.work.iter().map(|w| w.payments.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write every verdict (`(payment_id, verdict)`) and release the claim.
    /// A chosen candidate another payment got first is not an error: that
    /// payment stays flagged and is tried again with what is left.
    pub async fn commit(mut self, verdicts: Vec<(i64, Verdict)>) -> Result<BatchCounts> {
        let mut counts = BatchCounts::default();
        let tx = &mut self.tx;
        // Matches first: the unique constraints decide who gets a candidate.
        let mut m = MatchColumns::default();
        // The merchant of each match, from the claim (`None`, a payment
        // this batch did not claim, fails the insert on NOT NULL).
        let mut m_merchant: Vec<Option<i64>> = Vec::new();
        let mut r = MatchColumns::default();
        for (payment_id, v) in &verdicts {
            match v {
                Verdict::Match {
                    scheme_id,
                    reason,
                    confidence,
                    candidates,
                    plugin,
                } => {
                    m_merchant.push(self.payments.get(payment_id).map(|p| p.merchant));
                    m.push(
                        *payment_id,
                        *scheme_id,
                        reason,
                        *confidence,
                        *candidates,
                        plugin,
                    )
                }
                Verdict::Review {
                    scheme_id,
                    reason,
                    confidence,
                    candidates,
                    plugin,
                } => r.push(
                    *payment_id,
                    *scheme_id,
                    reason,
                    *confidence,
                    *candidates,
                    plugin,
                ),
                _ => {}
            }
        }
        let won: Vec<(i64, i64)> = if m.payment.is_empty() {
            Vec::new()
        } else {
            insert_matches(tx, &m, &m_merchant).await?
        };
        counts.matched = won.len() as u64;
        counts.lost = (m.payment.len() - won.len()) as u64;
        let (won_p, won_s): (Vec<i64>, Vec<i64>) = won.iter().copied().unzip();
        // The payments' new status is written with the attempt below: one
        // update per payment instead of two.
        set_schemes_matched(tx, &won_p, &won_s).await?;
        let mut opened: Vec<i64> = Vec::new();
        if !r.payment.is_empty() {
            // Only on a record still pending: one just matched (above, or by
            // another worker) is no candidate any more.
            opened = sqlx::query_scalar(&format!(
                "INSERT INTO reviews (merchant, payment_id, scheme_id, confidence, reason, candidates, \
                   plugin_name, plugin_version, plugin_sha256) \
                 SELECT p.merchant, d.payment_id, d.scheme_id, d.confidence, d.reason, d.candidates, \
                   d.plugin_name, d.plugin_version, d.plugin_sha256 \
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
                             $7::smallint[], $8::int[]) \
                      AS d(payment_id, scheme_id, plugin_name, plugin_version, plugin_sha256, reason, confidence, candidates) \
                 JOIN payments p ON p.id = d.payment_id \
                 JOIN scheme_transactions s ON s.id = d.scheme_id AND {SCHEME_OPEN} \
                 ON CONFLICT DO NOTHING RETURNING payment_id"
            ))
            .bind(&r.payment)
            .bind(&r.scheme)
            .bind(&r.plugin_name)
            .bind(&r.plugin_version)
            .bind(&r.plugin_sha256)
            .bind(&r.reason)
            .bind(&r.confidence)
            .bind(&r.candidates)
            .fetch_all(&mut **tx)
            .await?;
            counts.reviews = opened.len() as u64;
        }
        // The attempt, on every claimed payment.
        let won_set: std::collections::HashSet<i64> = won_p.iter().copied().collect();
        let opened_set: std::collections::HashSet<i64> = opened.iter().copied().collect();
        let mut a = AttemptColumns::default();
        for (payment_id, v) in &verdicts {
            let (candidates, reason, plugin, keep_flag, retry) = match v {
                Verdict::Match {
                    reason,
                    candidates,
                    plugin,
                    ..
                } => {
                    let lost = !won_set.contains(payment_id);
                    let reason = if lost {
                        format!(
                            "{reason}; the chosen candidate was matched to another payment first, trying again"
                        )
                    } else {
                        reason.clone()
                    };
                    (Some(*candidates), reason, Some(plugin), lost, false)
                }
                Verdict::Review {
                    reason,
                    candidates,
                    plugin,
                    confidence,
                    ..
                } if opened_set.contains(payment_id) => (
                    Some(*candidates),
                    format!(
                        "{reason}; confidence {confidence} is below the auto-confirm threshold: sent to review"
                    ),
                    Some(plugin),
                    false,
                    false,
                ),
                Verdict::Review {
                    reason,
                    candidates,
                    plugin,
                    ..
                } => {
                    counts.lost += 1;
                    (
                        Some(*candidates),
                        format!(
                            "{reason}; the chosen candidate was matched to another payment first, trying again"
                        ),
                        Some(plugin),
                        true,
                        false,
                    )
                }
                Verdict::NoMatch {
                    reason,
                    candidates,
                    plugin,
                } => {
                    counts.unmatched += 1;
                    (
                        Some(*candidates),
                        reason.clone(),
                        plugin.as_ref(),
                        false,
                        false,
                    )
                }
                Verdict::Error { reason } => {
                    counts.errors += 1;
                    (None, reason.clone(), None, false, true)
                }
            };
            a.payment.push(*payment_id);
            a.candidates.push(candidates.map(|c| c as i32));
            a.reason.push(reason);
            a.plugin
                .push(plugin.map(|p| format!("{}@{}", p.name, p.version)));
            a.keep_flag.push(keep_flag);
            a.retry.push(retry);
            a.status.push(if won_set.contains(payment_id) {
                Some("matched")
            } else if opened_set.contains(payment_id) {
                Some("review")
            } else {
                None
            });
        }
        sqlx::query(
            "UPDATE payments p SET status = COALESCE(d.status, p.status), \
               attempts = p.attempts + 1, last_attempt_at = now(), \
               last_candidates = d.candidates, last_reason = d.reason, last_plugin = d.plugin, \
               needs_match = d.keep_flag AND COALESCE(d.status, p.status) = 'pending', \
               retry_after = CASE WHEN d.retry THEN now() + interval '1 minute' END, \
               updated_at = now() \
             FROM UNNEST($1::bigint[], $2::int[], $3::text[], $4::text[], $5::bool[], $6::bool[], $7::text[]) \
                  AS d(payment_id, candidates, reason, plugin, keep_flag, retry, status) \
             WHERE p.id = d.payment_id",
        )
        .bind(&a.payment)
        .bind(&a.candidates)
        .bind(&a.reason)
        .bind(&a.plugin)
        .bind(&a.keep_flag)
        .bind(&a.retry)
        .bind(&a.status)
        .execute(&mut **tx)
        .await?;
        // Most batches leave no payment of their merchants ambiguous: then
        // there is nothing to flag again, and the 2,000 records need not be
        // read to find that out (3.6 s summed over `bench match`).
        let mut merchants: Vec<i64> = won_p
            .iter()
            .filter_map(|p| self.payments.get(p).map(|c| c.merchant))
            .collect();
        merchants.sort_unstable();
        merchants.dedup();
        let ambiguous: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM payments WHERE merchant = ANY ($1) \
               AND status = 'pending' AND NOT needs_match AND last_candidates > 1)",
        )
        .bind(&merchants)
        .fetch_one(&mut **tx)
        .await?;
        if ambiguous {
            counts.reflagged = flag_ambiguous(tx, &won_s).await?;
        }
        self.tx.commit().await?;
        // Matched on both sides: no claim reads these again.
        let gone = won.iter().flat_map(|(p, s)| {
            [
                self.payments.get(p).map(|c| c.transaction),
                self.record_transactions.get(s).copied(),
            ]
        });
        self.cache.remove(gone.flatten());
        Ok(counts)
    }
}

/// Insert the batch's matches; returns the (payment, record) pairs that
/// were inserted. A record another batch matched first (committed, or
/// committing meanwhile) is left out: that payment lost the race.
///
/// First a plain insert: `ON CONFLICT DO NOTHING` inserts speculatively
/// (each row's unique keys probed, then inserted, then confirmed), and
/// costs half as much again as a plain insert (1M matches in 2,000-row batches on
/// a copy of `bench match`'s database: 10.7 s against 7.2 s). Races are
/// rare (workers claim different payments; only a record wanted by
/// payments of two batches is contested): when the plain insert meets a
/// taken record, it fails with a unique violation, the savepoint undoes
/// it, and the insert runs again with `ON CONFLICT DO NOTHING`.
async fn insert_matches(
    tx: &mut PgConnection,
    m: &MatchColumns,
    merchant: &[Option<i64>],
) -> Result<Vec<(i64, i64)>> {
    let sql = |on_conflict: &str| {
        format!(
            "INSERT INTO matches (kind, merchant, payment_id, scheme_id, plugin_name, plugin_version, \
               plugin_sha256, reason, confidence, candidates, actor) \
             SELECT 'matched', d.merchant, d.payment_id, d.scheme_id, d.plugin_name, d.plugin_version, \
               d.plugin_sha256, d.reason, d.confidence, d.candidates, 'plugin:' || d.plugin_name || '@' || d.plugin_version \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
                         $7::smallint[], $8::int[], $9::bigint[]) \
                  AS d(payment_id, scheme_id, plugin_name, plugin_version, plugin_sha256, reason, confidence, \
                       candidates, merchant) \
             ORDER BY d.scheme_id {on_conflict} RETURNING payment_id, scheme_id"
        )
    };
    sqlx::query("SAVEPOINT insert_matches")
        .execute(&mut *tx)
        .await?;
    let plain = sql("");
    match bind_matches(&plain, m, merchant).fetch_all(&mut *tx).await {
        Ok(won) => {
            sqlx::query("RELEASE SAVEPOINT insert_matches")
                .execute(&mut *tx)
                .await?;
            Ok(won)
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            sqlx::query("ROLLBACK TO SAVEPOINT insert_matches")
                .execute(&mut *tx)
                .await?;
            let skip = sql("ON CONFLICT DO NOTHING");
            Ok(bind_matches(&skip, m, merchant).fetch_all(&mut *tx).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The batch's match columns bound to [`insert_matches`]'s statement.
fn bind_matches<'q>(
    sql: &'q str,
    m: &'q MatchColumns,
    merchant: &'q [Option<i64>],
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, (i64, i64), sqlx::postgres::PgArguments> {
    sqlx::query_as(sql)
        .bind(&m.payment)
        .bind(&m.scheme)
        .bind(&m.plugin_name)
        .bind(&m.plugin_version)
        .bind(&m.plugin_sha256)
        .bind(&m.reason)
        .bind(&m.confidence)
        .bind(&m.candidates)
        .bind(merchant)
}

#[derive(Default)]
struct MatchColumns {
    payment: Vec<i64>,
    scheme: Vec<i64>,
    plugin_name: Vec<String>,
    plugin_version: Vec<String>,
    plugin_sha256: Vec<String>,
    reason: Vec<String>,
    confidence: Vec<i16>,
    candidates: Vec<i32>,
}

impl MatchColumns {
    fn push(
        &mut self,
        payment: i64,
        scheme: i64,
        reason: &str,
        confidence: u8,
        candidates: usize,
        plugin: &PluginIdentity,
    ) {
        self.payment.push(payment);
        self.scheme.push(scheme);
        self.plugin_name.push(plugin.name.clone());
        self.plugin_version.push(plugin.version.clone());
        self.plugin_sha256.push(plugin.sha256.clone());
        self.reason.push(reason.to_owned());
        self.confidence.push(i16::from(confidence));
        self.candidates.push(candidates as i32);
    }
}

#[derive(Default)]
struct AttemptColumns {
    payment: Vec<i64>,
    candidates: Vec<Option<i32>>,
    reason: Vec<String>,
    plugin: Vec<Option<String>>,
    keep_flag: Vec<bool>,
    retry: Vec<bool>,
    /// The payment's new status (matched, review), if it changes.
    status: Vec<Option<&'static str>>,
}

/// Stored transactions by id (those that exist).
async fn transactions_by_id(
    conn: &mut PgConnection,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, Arc<Transaction>>> {
    let mut out = std::collections::HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(out);
    }
    for row in sqlx::query(&format!(
        "SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE id = ANY ($1)"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?
    {
        let t = stored_transaction(&row)?;
        out.insert(t.id, Arc::new(t.transaction));
    }
    Ok(out)
}

/// Take the exclusive advisory lock `key` until `tx` ends.
async fn xact_lock(tx: &mut PgConnection, key: i64) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(tx)
        .await?;
    Ok(())
}

/// The columns of the payment-side staging rows (`stage_p`).
const STAGE_TYPES: &str = "transaction_id bigint, kind text, provider text, settlement_key text, \
     amount_minor bigint, currency text, occurred_at timestamptz, utc_offset_seconds integer, \
     time_known boolean, card_token text, first_six text, last_four text, auth_code text, mid text, \
     merchant bigint, identifier bigint, note text, mode text, status text, wave bigint";

/// [`StageColumns`] as rows, in [`STAGE_TYPES`]' order.
const STAGE_UNNEST: &str = "UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
     $6::text[], $7::timestamptz[], $8::int[], $9::bool[], $10::text[], $11::text[], $12::text[], \
     $13::text[], $14::text[], $15::bigint[], $16::bigint[], $17::text[], $18::text[], $19::text[], \
     $20::bigint[]) AS s(transaction_id, kind, provider, settlement_key, amount_minor, currency, \
     occurred_at, utc_offset_seconds, time_known, card_token, first_six, last_four, auth_code, mid, \
     merchant, identifier, note, mode, status, wave)";

/// After `WITH s AS (staging rows)`: the payments of the rows of `s` whose
/// key no payment has yet (dropped rows aside), stored merchant by
/// merchant, each with its `created` leg; the statement goes on with the
/// legs' `RETURNING`. With `store_keys`, the new payments' keys are stored
/// in the same statement (the waves: few rows); without, the caller stores
/// them with [`store_keys`] once the whole import's payments are created.
fn create_payments(store_keys: bool) -> String {
    let (returning, store) = if store_keys {
        (
            ", provider, settlement_key",
            ", keys AS ( \
               INSERT INTO payment_keys (provider, settlement_key, payment_id) \
               SELECT provider, settlement_key, id FROM ins WHERE settlement_key IS NOT NULL \
               ORDER BY provider, settlement_key)",
        )
    } else {
        ("", "")
    };
    format!(
        ", ins AS ( \
           INSERT INTO payments (provider, settlement_key, transaction_id, kind, merchant, identifier, \
             mid, amount_minor, currency, occurred_at, utc_offset_seconds, time_known, card_token, \
             first_six, last_four, auth_code, status, needs_match, note) \
           SELECT provider, settlement_key, transaction_id, kind, merchant, identifier, mid, \
             amount_minor, currency, occurred_at, utc_offset_seconds, time_known, card_token, \
             first_six, last_four, auth_code, status, status = 'pending', note \
           FROM s WHERE status <> 'dropped' \
             AND NOT EXISTS (SELECT 1 FROM payment_keys k \
                             WHERE k.provider = s.provider AND k.settlement_key = s.settlement_key) \
           ORDER BY merchant NULLS LAST, transaction_id \
           RETURNING id, transaction_id{returning}){store} \
         INSERT INTO payment_legs (transaction_id, payment_id, action) \
         SELECT transaction_id, id, 'created' FROM ins ORDER BY transaction_id"
    )
}

/// Store the settlement keys of payments just created, `(provider, key,
/// payment)`, in one statement for a whole import, in key order: they go
/// into the key index in one pass over its pages. Settlement keys are
/// hashes, so the keys of a chunk of 20,000 rows spread over every page of
/// the index, and each chunk read and wrote them all again: 1M payments
/// took 18.5 s with their keys stored by chunk, 12.4 s with one sorted
/// insert (1.12 → 0.99 GB of write-ahead log; the payments of `bench
/// match` inserted again into empty tables on a copy of its database). Sorted here by bytes,
/// which is the index's order under the C and C.UTF-8 collations and, for
/// hex keys and lower-case providers, under the usual others; a database
/// whose order differs gets the same keys, in less of a pass. A key taken
/// already fails the insert: the caller looked for it first.
async fn store_keys(tx: &mut PgConnection, keys: &[(&str, &str, i64)]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<&(&str, &str, i64)> = keys.iter().collect();
    sorted.sort_unstable();
    let provider: Vec<&str> = sorted.iter().map(|k| k.0).collect();
    let key: Vec<&str> = sorted.iter().map(|k| k.1).collect();
    let payment: Vec<i64> = sorted.iter().map(|k| k.2).collect();
    sqlx::query(
        "INSERT INTO payment_keys (provider, settlement_key, payment_id) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])",
    )
    .bind(&provider)
    .bind(&key)
    .bind(&payment)
    .execute(tx)
    .await?;
    Ok(())
}

/// A merchant-side row on its way into `scheme_transactions`.
struct SchemeStaged {
    id: i64,
    merchant: Option<i64>,
    mids: Vec<String>,
    status: &'static str,
    t: Arc<Transaction>,
}

/// The columns of `stage_p`, one array each.
#[derive(Default)]
struct StageColumns {
    transaction_id: Vec<i64>,
    kind: Vec<&'static str>,
    provider: Vec<String>,
    settlement_key: Vec<Option<String>>,
    amount_minor: Vec<i64>,
    currency: Vec<String>,
    occurred_at: Vec<DateTime<Utc>>,
    utc_offset_seconds: Vec<i32>,
    time_known: Vec<bool>,
    card_token: Vec<Option<String>>,
    first_six: Vec<Option<String>>,
    last_four: Vec<Option<String>>,
    auth_code: Vec<Option<String>>,
    mid: Vec<String>,
    merchant: Vec<Option<i64>>,
    identifier: Vec<Option<i64>>,
    note: Vec<Option<&'static str>>,
    mode: Vec<Option<String>>,
    status: Vec<&'static str>,
    wave: Vec<i64>,
}

impl StageColumns {
    fn push(
        &mut self,
        id: i64,
        t: &Transaction,
        who: Identified,
        merchant: Option<&MerchantSettings>,
        status: &'static str,
        wave: i64,
    ) {
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        self.transaction_id.push(id);
        self.kind.push(t.kind.as_str());
        self.provider.push(t.provider.clone().unwrap_or_default());
        self.settlement_key.push(nonempty(&t.settlement_key));
        self.amount_minor.push(t.amount.minor_units);
        self.currency.push(t.amount.currency.clone());
        self.occurred_at.push(t.occurred_at.with_timezone(&Utc));
        self.utc_offset_seconds
            .push(t.occurred_at.offset().local_minus_utc());
        self.time_known.push(t.time_known);
        self.card_token.push(t.card_token.clone());
        self.first_six.push(nonempty(&t.card_first_six));
        self.last_four.push(nonempty(&t.card_last_four));
        self.auth_code.push(nonempty(&t.auth_code));
        self.mid.push(
            t.merchant_ids
                .iter()
                .find(|x| x.kind == IdentifierKind::Primary)
                .map(|x| x.value.clone())
                .unwrap_or_default(),
        );
        self.merchant.push(who.merchant());
        self.identifier.push(who.identifier());
        self.note.push(who.note());
        self.mode.push(merchant.map(|m| m.mode.clone()));
        self.status.push(status);
        self.wave.push(wave);
    }

    /// Bind the arrays as `$1`–`$20` of [`STAGE_UNNEST`].
    fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(&self.transaction_id)
            .bind(&self.kind)
            .bind(&self.provider)
            .bind(&self.settlement_key)
            .bind(&self.amount_minor)
            .bind(&self.currency)
            .bind(&self.occurred_at)
            .bind(&self.utc_offset_seconds)
            .bind(&self.time_known)
            .bind(&self.card_token)
            .bind(&self.first_six)
            .bind(&self.last_four)
            .bind(&self.auth_code)
            .bind(&self.mid)
            .bind(&self.merchant)
            .bind(&self.identifier)
            .bind(&self.note)
            .bind(&self.mode)
            .bind(&self.status)
            .bind(&self.wave)
    }
}

/// Stage one import inside `tx` (see [`Store::stage_next`]).
/// Which sides an import has rows on (`imports.sides`; both when unknown).
#[derive(Debug, Clone, Copy)]
struct Sides {
    payment: bool,
    merchant: bool,
}

/// Stage the import's rows of each side it has. A side it has no rows on
/// is not read: the read walks the whole import (its `import_id` index and
/// every row), which for the 1.1M-row merchant feed of `bench match` took
/// 2.3 s, before its records could be staged, to find no payment-side row.
async fn stage_import(
    tx: &mut Tx,
    import_id: i64,
    sides: Sides,
    merchant: Option<&str>,
    cache: &TransactionCache,
) -> Result<StageCounts> {
    let mut counts = StageCounts::default();
    let registry = Registry::load(tx).await?;
    if sides.payment {
        stage_payments(tx, import_id, &registry, cache, &mut counts).await?;
    }
    if sides.merchant {
        stage_scheme(tx, import_id, merchant, &registry, cache, &mut counts).await?;
    }
    Ok(counts)
}

/// An import's rows of one side, in id order, each read once.
async fn import_rows(
    tx: &mut Tx,
    import_id: i64,
    side: &str,
) -> Result<Vec<(i64, Arc<Transaction>)>> {
    use futures::TryStreamExt as _;
    let mut rows = Vec::new();
    let sql = format!(
        "SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE import_id = $1 AND side = $2"
    );
    let mut stream = sqlx::query(&sql)
        .bind(import_id)
        .bind(side)
        .fetch(&mut **tx);
    while let Some(row) = stream.try_next().await? {
        let t = stored_transaction(&row)?;
        rows.push((t.id, Arc::new(t.transaction)));
    }
    rows.sort_unstable_by_key(|r| r.0);
    Ok(rows)
}

/// Rows per statement when staged rows are sent as arrays.
const STAGE_CHUNK: usize = 20_000;

async fn stage_payments(
    tx: &mut Tx,
    import_id: i64,
    registry: &Registry,
    cache: &TransactionCache,
    counts: &mut StageCounts,
) -> Result<()> {
    let rows = import_rows(tx, import_id, "payment").await?;
    if rows.is_empty() {
        return Ok(());
    }
    // Identify every payment-side row of the import once and give it its
    // status. `wave` orders rows sharing a settlement key inside the file
    // (first wins, the next ones collapse onto it), so one statement per
    // wave handles them all.
    let identified: Vec<Identified> = rows.iter().map(|(_, t)| registry.identify(t)).collect();
    let settings = |i: usize| identified[i].merchant().and_then(|m| registry.merchant(m));
    // Card registration matters only to merchants that match registered
    // cards only.
    let tokens: Vec<&str> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| settings(*i).is_some_and(|m| !m.match_unregistered_cards))
        .filter_map(|(_, (_, t))| t.card_token.as_deref())
        .collect();
    let registered: std::collections::HashSet<String> = if tokens.is_empty() {
        Default::default()
    } else {
        sqlx::query_scalar("SELECT card_token FROM card_registry WHERE card_token = ANY ($1)")
            .bind(&tokens)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect()
    };
    // Status and wave of every row.
    let mut seen: std::collections::HashMap<(Option<&str>, &str), i64> = Default::default();
    let mut staged: Vec<(&'static str, i64)> = Vec::with_capacity(rows.len());
    for (i, (id, t)) in rows.iter().enumerate() {
        let status = payment_status(
            t,
            settings(i),
            t.card_token
                .as_ref()
                .is_some_and(|k| registered.contains(k)),
        );
        if status == "pending" {
            // Kept for the claims that will read it.
            cache.insert(*id, Arc::clone(t));
        }
        let wave = match t.settlement_key.as_deref() {
            None | Some("") => 1,
            Some(key) => {
                let n = seen.entry((t.provider.as_deref(), key)).or_insert(0);
                *n += 1;
                *n
            }
        };
        staged.push((status, wave));
    }
    counts.unidentified = identified.iter().filter(|i| i.merchant().is_none()).count() as u64;
    let columns = |indices: &[usize]| {
        let mut cols = StageColumns::default();
        for &i in indices {
            let (id, t) = &rows[i];
            cols.push(*id, t, identified[i], settings(i), staged[i].0, staged[i].1);
        }
        cols
    };
    // The first row of each key (and every row without one) creates its
    // payment unless an earlier import's payment has the key: straight from
    // the rows, merchant by merchant. Payments are stored merchant by
    // merchant (and scheme records by merchant, provider, amount): claims go
    // merchant by merchant, so a batch's reads and status updates touch a
    // few neighbouring pages instead of one page per row — at a million rows
    // that was most of the write-ahead log (full-page images) and of the
    // time. Their keys are stored after the last chunk, in key order
    // ([`store_keys`]); the rows of `first` have distinct keys (the waves),
    // and payment-side staging is serial (its lock), so no other statement
    // inserts a key meanwhile: a duplicate key is an error, never a second
    // payment.
    let key_of = |i: usize| {
        let t = &rows[i].1;
        t.settlement_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .map(|k| (t.provider.as_deref().unwrap_or_default(), k))
    };
    let mut first: Vec<usize> = (0..rows.len())
        .filter(|&i| staged[i].1 == 1 && staged[i].0 != "dropped")
        .collect();
    first.sort_unstable_by_key(|&i| {
        let merchant = identified[i].merchant();
        (merchant.is_none(), merchant, rows[i].0)
    });
    let mut created = std::collections::HashSet::with_capacity(first.len());
    let mut keys: Vec<(&str, &str, i64)> = Vec::with_capacity(first.len());
    // Rows whose payment is decided without a partner (spotted, streamed):
    // only those get a match row now.
    let partnerless: std::collections::HashSet<i64> = first
        .iter()
        .filter(|&&i| matches!(staged[i].0, "spotted" | "streamed"))
        .map(|&i| rows[i].0)
        .collect();
    let sql = format!(
        "WITH s AS (SELECT * FROM {STAGE_UNNEST}) {} RETURNING payment_id, transaction_id",
        create_payments(false)
    );
    for chunk in first.chunks(STAGE_CHUNK) {
        let done = columns(chunk)
            .bind(sqlx::query(&sql))
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect::<Result<Vec<(i64, i64)>>>()?;
        let decided: Vec<i64> = done
            .iter()
            .filter(|d| partnerless.contains(&d.1))
            .map(|d| d.0)
            .collect();
        decided_without_partner(tx, &decided).await?;
        counts.payments_created += done.len() as u64;
        for &(payment, transaction) in &done {
            let i = rows
                .binary_search_by_key(&transaction, |r| r.0)
                .map_err(|_| {
                    StoreError::NotFound(format!(
                        "staged transaction {transaction} of payment {payment}"
                    ))
                })?;
            if let Some((provider, key)) = key_of(i) {
                keys.push((provider, key, payment));
            }
        }
        created.extend(done.into_iter().map(|d| d.1));
    }
    store_keys(tx, &keys).await?;
    // The rest (later rows of a key, keys of earlier imports, dropped
    // authorisations) wave by wave through a temporary table.
    let rest: Vec<usize> = (0..rows.len())
        .filter(|&i| !created.contains(&rows[i].0))
        .collect();
    if rest.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "CREATE TEMP TABLE stage_p ({STAGE_TYPES}) ON COMMIT DROP"
    ))
    .execute(&mut **tx)
    .await?;
    let sql = format!("INSERT INTO stage_p SELECT * FROM {STAGE_UNNEST}");
    for chunk in rest.chunks(STAGE_CHUNK) {
        columns(chunk)
            .bind(sqlx::query(&sql))
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("ANALYZE stage_p").execute(&mut **tx).await?;
    // Rows per wave (dropped ones aside): a wave whose rows all created a
    // payment has nothing left to settle or record.
    let wave_rows: std::collections::HashMap<i64, i64> = sqlx::query_as(
        "SELECT wave, count(*) FROM stage_p WHERE status <> 'dropped' GROUP BY wave",
    )
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    let waves = wave_rows.keys().max().copied();
    // Amex auths of spot/stream merchants never become payments
    // (payment-feeds.md §2.3): the settlement is what they export.
    counts.legs_ignored += sqlx::query(
        "INSERT INTO payment_legs (transaction_id, payment_id, action, note) \
         SELECT transaction_id, NULL, 'ignored', \
                'Amex authorisation of a ' || mode || ' merchant: the settlement stands for the purchase' \
         FROM stage_p WHERE status = 'dropped'",
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    for wave in 1..=waves.unwrap_or(0) {
        // A row whose key is taken (a payment of an earlier import or an
        // earlier wave) creates nothing here; the settle and ignore
        // statements below take it.
        let created: Vec<i64> = sqlx::query_scalar(&format!(
            "WITH s AS (SELECT * FROM stage_p WHERE wave = $1) {} RETURNING payment_id",
            create_payments(true)
        ))
        .bind(wave)
        .fetch_all(&mut **tx)
        .await?;
        counts.payments_created += created.len() as u64;
        decided_without_partner(tx, &created).await?;
        if created.len() as i64 >= wave_rows.get(&wave).copied().unwrap_or(0) {
            continue;
        }
        // Settlements (any non-auth, non-refund leg) onto an undecided
        // payment of the same key (matching-rules.md §3).
        let settled = sqlx::query(&format!(
            "WITH up AS ( \
               UPDATE payments p SET amount_minor = s.amount_minor, currency = s.currency, \
                 transaction_id = s.transaction_id, kind = s.kind, \
                 first_six = COALESCE(p.first_six, s.first_six), \
                 last_four = COALESCE(p.last_four, s.last_four), \
                 auth_code = COALESCE(p.auth_code, s.auth_code), \
                 needs_match = (p.status = 'pending'), updated_at = now() \
               FROM stage_p s \
               JOIN payment_keys k ON k.provider = s.provider AND k.settlement_key = s.settlement_key \
               WHERE s.wave = $1 AND s.status <> 'dropped' AND s.kind NOT IN ('authorisation', 'refund') \
                 AND p.id = k.payment_id \
                 AND p.status IN {UNDECIDED} \
                 AND NOT EXISTS (SELECT 1 FROM payment_legs l WHERE l.transaction_id = s.transaction_id) \
               RETURNING p.id, s.transaction_id) \
             INSERT INTO payment_legs (transaction_id, payment_id, action, note) \
             SELECT transaction_id, id, 'settled', 'settlement onto the pending payment' FROM up"
        ))
        .bind(wave)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        counts.payments_settled += settled;
        // The rest of the wave: recorded, nothing new.
        counts.legs_ignored += sqlx::query(
            "INSERT INTO payment_legs (transaction_id, payment_id, action, note) \
             SELECT s.transaction_id, p.id, 'ignored', \
               CASE WHEN s.kind = 'authorisation' THEN 'authorisation of a purchase already recorded' \
                    ELSE s.kind || ' for a payment already ' || COALESCE(p.status, 'recorded') END \
             FROM stage_p s \
             LEFT JOIN payment_keys k ON k.provider = s.provider AND k.settlement_key = s.settlement_key \
             LEFT JOIN payments p ON p.id = k.payment_id \
             WHERE s.wave = $1 AND s.status <> 'dropped' \
               AND NOT EXISTS (SELECT 1 FROM payment_legs l WHERE l.transaction_id = s.transaction_id)",
        )
        .bind(wave)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    Ok(())
}

async fn stage_scheme(
    tx: &mut Tx,
    import_id: i64,
    merchant: Option<&str>,
    registry: &Registry,
    cache: &TransactionCache,
    counts: &mut StageCounts,
) -> Result<()> {
    let mut records: Vec<SchemeStaged> = import_rows(tx, import_id, "merchant")
        .await?
        .into_iter()
        .map(|(id, t)| {
            let merchant = registry.assign(&t, merchant);
            SchemeStaged {
                id,
                merchant,
                mids: registry.record_mids(&t, merchant),
                status: record_status(&t, merchant),
                t,
            }
        })
        .collect();
    // Stored merchant by merchant (then provider, amount): a claim's
    // candidate reads touch neighbouring rows.
    records.sort_unstable_by(|a, b| {
        (
            a.merchant.is_none(),
            a.merchant,
            &a.t.provider,
            a.t.amount.minor_units,
            a.id,
        )
            .cmp(&(
                b.merchant.is_none(),
                b.merchant,
                &b.t.provider,
                b.t.amount.minor_units,
                b.id,
            ))
    });
    // A plain insert: an import is staged once (its `staged_at`, set in
    // this transaction, under the merchant-side lock), so a row that is
    // already a record means corrupt state and fails the staging loudly
    // (unique `transaction_id`) rather than being skipped. `ON CONFLICT DO
    // NOTHING` here cost a quarter of the insert (9.0 → 6.9 s for the 1.1M
    // records of `bench match`, measured on a copy of its database).
    let mut rows = Vec::with_capacity(records.len());
    for chunk in records.chunks(STAGE_CHUNK) {
        let (mut id, mut merchant, mut provider, mut amount, mut currency, mut status) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        // The MID lists, flattened: (position in the chunk, MID).
        let (mut at, mut mid) = (vec![], vec![]);
        for (n, r) in chunk.iter().enumerate() {
            if r.status == "pending" {
                // Kept for the claims that will read it.
                cache.insert(r.id, Arc::clone(&r.t));
            }
            id.push(r.id);
            merchant.push(r.merchant);
            provider.push(r.t.provider.clone());
            amount.push(r.t.amount.minor_units);
            currency.push(r.t.amount.currency.clone());
            status.push(r.status);
            for m in &r.mids {
                at.push(n as i64 + 1);
                mid.push(m.clone());
            }
        }
        rows.extend(
            sqlx::query(
                "INSERT INTO scheme_transactions (transaction_id, merchant, provider, amount_minor, currency, \
                   mids, status) \
                 SELECT d.transaction_id, d.merchant, d.provider, d.amount_minor, d.currency, \
                   COALESCE(m.mids, '{}'), d.status \
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[]) \
                      WITH ORDINALITY AS d(transaction_id, merchant, provider, amount_minor, currency, status, n) \
                 LEFT JOIN (SELECT u.n, array_agg(u.mid ORDER BY u.mid) AS mids \
                            FROM UNNEST($7::bigint[], $8::text[]) AS u(n, mid) GROUP BY u.n) m ON m.n = d.n \
                 ORDER BY d.n \
                 RETURNING id, status",
            )
            .bind(&id)
            .bind(&merchant)
            .bind(&provider)
            .bind(&amount)
            .bind(&currency)
            .bind(&status)
            .bind(&at)
            .bind(&mid)
            .fetch_all(&mut **tx)
            .await?,
        );
    }
    let mut pending = Vec::new();
    for row in &rows {
        let status: &str = row.try_get("status")?;
        match status {
            "pending" => {
                counts.scheme_pending += 1;
                pending.push(row.try_get::<i64, _>("id")?);
            }
            "unassigned" => counts.scheme_unassigned += 1,
            _ => counts.scheme_refunds += 1,
        }
    }
    counts.payments_flagged = flag_for_scheme(tx, &pending).await?;
    Ok(())
}

/// Flag the pending payments that new scheme records `scheme_ids` may be
/// candidates of (matching-rules.md §4, the merchant-side trigger).
///
/// Runs under the exclusive merchant-side staging lock, while no matcher
/// holds a claim (claims take it shared): a payment flagged already is not
/// claimed by anyone with a snapshot that misses these records, so it is
/// left alone.
async fn flag_for_scheme(tx: &mut PgConnection, scheme_ids: &[i64]) -> Result<u64> {
    flag_payments_near(tx, scheme_ids, "").await
}

/// Flag the ambiguous pending payments (last attempt: several candidates,
/// none chosen) that had one of the just-matched records `scheme_ids` among
/// their candidates: with it gone, the rest may decide them. Run after the
/// deciding batch's own attempts are written, so its payments count too.
async fn flag_ambiguous(tx: &mut PgConnection, scheme_ids: &[i64]) -> Result<u64> {
    flag_payments_near(tx, scheme_ids, "AND p2.last_candidates > 1").await
}

/// Flag the unflagged pending payments that scheme records `scheme_ids` are
/// (or were) candidates of, restricted by `and` (SQL on `p2`).
async fn flag_payments_near(tx: &mut PgConnection, scheme_ids: &[i64], and: &str) -> Result<u64> {
    if scheme_ids.is_empty() {
        return Ok(0);
    }
    Ok(sqlx::query(&format!(
        "UPDATE payments p SET needs_match = true \
         FROM (SELECT DISTINCT p2.id FROM scheme_transactions s \
               JOIN merchants m ON m.id = s.merchant \
               JOIN payments p2 ON p2.merchant = s.merchant AND p2.provider = s.provider \
                 AND p2.status = 'pending' AND NOT p2.needs_match {and} AND p2.currency = s.currency \
                 AND p2.amount_minor BETWEEN s.amount_minor - {WIDEST} AND s.amount_minor + {WIDEST} \
                 AND p2.mid = ANY (s.mids) \
               WHERE s.id IN (SELECT unnest($1::bigint[]))) f \
         WHERE p.id = f.id AND NOT p.needs_match"
    ))
    .bind(scheme_ids)
    .execute(tx)
    .await?
    .rows_affected())
}

/// Spotted and streamed payments among `payment_ids` get their match row
/// (no merchant-side partner).
async fn decided_without_partner(tx: &mut PgConnection, payment_ids: &[i64]) -> Result<()> {
    if payment_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO matches (kind, merchant, payment_id, reason, actor) \
         SELECT p.status, p.merchant, p.id, \
           CASE WHEN p.kind = 'refund' THEN 'refunds are streamed, never matched' \
                WHEN p.status = 'spotted' THEN 'spot merchant: every identified payment is a match' \
                ELSE 'stream merchant: straight on to routing' END, \
           'accord' \
         FROM payments p WHERE p.id = ANY ($1) AND p.status IN ('spotted', 'streamed') \
         ON CONFLICT DO NOTHING",
    )
    .bind(payment_ids)
    .execute(tx)
    .await?;
    Ok(())
}

async fn set_matched(
    tx: &mut PgConnection,
    payments: &[i64],
    schemes: &[i64],
    status: &str,
) -> Result<()> {
    if payments.is_empty() {
        return Ok(());
    }
    set_schemes_matched(tx, payments, schemes).await?;
    sqlx::query(
        "UPDATE payments SET status = $2, needs_match = false, retry_after = NULL, updated_at = now() \
         WHERE id = ANY ($1)",
    )
    .bind(payments)
    .bind(status)
    .execute(&mut *tx)
    .await?;
    flag_ambiguous(tx, schemes).await?;
    Ok(())
}

/// The scheme side of [`set_matched`], once the match rows of `schemes` (to
/// `payments`, pairwise) are written: open reviews of other payments on
/// those records are superseded. (The records themselves are not updated:
/// the match row makes them matched, migration 0008.)
async fn set_schemes_matched(
    tx: &mut PgConnection,
    payments: &[i64],
    schemes: &[i64],
) -> Result<()> {
    if payments.is_empty() {
        return Ok(());
    }
    // A scheme record that was some open review's candidate is gone.
    sqlx::query(
        "WITH r AS (UPDATE reviews SET status = 'superseded', decided_at = now() \
                    WHERE status = 'open' AND scheme_id = ANY ($1) AND NOT (payment_id = ANY ($2)) \
                    RETURNING payment_id) \
         UPDATE payments p SET status = 'pending', needs_match = true, updated_at = now() \
         FROM r WHERE p.id = r.payment_id AND p.status = 'review'",
    )
    .bind(schemes)
    .bind(payments)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn supersede_reviews(tx: &mut PgConnection, payments: &[i64]) -> Result<()> {
    if payments.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE reviews SET status = 'superseded', decided_at = now() \
         WHERE status = 'open' AND payment_id = ANY ($1)",
    )
    .bind(payments)
    .execute(tx)
    .await?;
    Ok(())
}

const MATCH_SELECT: &str = "SELECT x.id, x.kind, mm.slug AS merchant, x.payment_id, \
     p.transaction_id AS payment_transaction_id, x.scheme_id, s.transaction_id AS merchant_transaction_id, \
     x.plugin_name, x.plugin_version, x.plugin_sha256, x.reason, x.confidence, x.candidates, x.actor, x.created_at \
     FROM matches x JOIN merchants mm ON mm.id = x.merchant JOIN payments p ON p.id = x.payment_id \
     LEFT JOIN scheme_transactions s ON s.id = x.scheme_id";

const PAYMENT_SELECT: &str = "SELECT p.id, p.status, mm.slug AS merchant, p.provider, p.mid, p.settlement_key, \
     p.transaction_id, p.kind, p.amount_minor, p.currency, p.occurred_at, p.card_token, p.first_six, \
     p.last_four, p.auth_code, p.attempts, p.last_attempt_at, p.last_candidates, p.last_reason, \
     p.last_plugin, p.note, p.created_at, p.updated_at \
     FROM payments p LEFT JOIN merchants mm ON mm.id = p.merchant";

fn scheme_select() -> String {
    format!(
        "SELECT s.id, s.transaction_id, {SCHEME_STATUS} AS status, mm.slug AS merchant, s.provider, \
         s.amount_minor, s.currency, s.mids, s.created_at \
         FROM scheme_transactions s LEFT JOIN merchants mm ON mm.id = s.merchant"
    )
}

const LEG_SELECT: &str = "SELECT transaction_id, payment_id, action, note, at FROM payment_legs";

const REVIEW_SELECT: &str = "SELECT r.id, r.status, mm.slug AS merchant, r.payment_id, \
     p.transaction_id AS payment_transaction_id, r.scheme_id, s.transaction_id AS merchant_transaction_id, \
     r.confidence, r.reason, r.candidates, r.plugin_name, r.plugin_version, r.plugin_sha256, r.decided_by, \
     r.decided_at, r.note, r.created_at \
     FROM reviews r JOIN merchants mm ON mm.id = r.merchant JOIN payments p ON p.id = r.payment_id \
     JOIN scheme_transactions s ON s.id = r.scheme_id";

fn match_row(row: &PgRow) -> Result<MatchRow> {
    let plugin = plugin_identity(row)?;
    Ok(MatchRow {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        merchant: row.try_get("merchant")?,
        payment_id: row.try_get("payment_id")?,
        payment_transaction_id: row.try_get("payment_transaction_id")?,
        scheme_id: row.try_get("scheme_id")?,
        merchant_transaction_id: row.try_get("merchant_transaction_id")?,
        plugin,
        reason: row.try_get("reason")?,
        confidence: row.try_get("confidence")?,
        candidates: row.try_get("candidates")?,
        actor: row.try_get("actor")?,
        created_at: row.try_get("created_at")?,
    })
}

fn payment_row(row: &PgRow) -> Result<PaymentRow> {
    Ok(PaymentRow::from_row(row)?)
}

fn scheme_row(row: &PgRow) -> Result<SchemeRow> {
    Ok(SchemeRow::from_row(row)?)
}

fn leg_row(row: &PgRow) -> Result<LegRow> {
    Ok(LegRow::from_row(row)?)
}

fn review_row(row: &PgRow) -> Result<ReviewRow> {
    Ok(ReviewRow {
        id: row.try_get("id")?,
        status: row.try_get("status")?,
        merchant: row.try_get("merchant")?,
        payment_id: row.try_get("payment_id")?,
        payment_transaction_id: row.try_get("payment_transaction_id")?,
        scheme_id: row.try_get("scheme_id")?,
        merchant_transaction_id: row.try_get("merchant_transaction_id")?,
        confidence: row.try_get("confidence")?,
        reason: row.try_get("reason")?,
        candidates: row.try_get("candidates")?,
        plugin: PluginIdentity {
            name: row.try_get("plugin_name")?,
            version: row.try_get("plugin_version")?,
            sha256: row.try_get("plugin_sha256")?,
        },
        decided_by: row.try_get("decided_by")?,
        decided_at: row.try_get("decided_at")?,
        note: row.try_get("note")?,
        created_at: row.try_get("created_at")?,
    })
}
