//! Reference data for matching: merchants, payment providers, merchant
//! identifiers (MIDs) and the card registry.
//!
//! MIDs are unique per (identifier, type, provider). An import of MID rows
//! runs in one database transaction: rows naming an unknown provider or
//! merchant are rejected by line (merchants are never created implicitly),
//! the rest go in with bulk `UNNEST` inserts and `ON CONFLICT DO NOTHING`, so
//! a row already registered (or repeated in the same file) is counted as a
//! duplicate and left as it was.
//!
//! [`Store::resolve_mids`] is identification's lookup (payment-feeds.md
//! §0.1): of the identifiers a payment carries, only hits of the best type
//! present count (primary < secondary < psimi), and `""` / `"0"` are no
//! identifier at all.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use super::read::{DEFAULT_PAGE, MAX_PAGE};
use super::{Page, Result, Store, StoreError};
use crate::domain::IdentifierKind;

/// Rows per bulk `INSERT ... SELECT FROM UNNEST`: big enough that a file of
/// a million MIDs is a hundred statements, small enough that one statement's
/// arrays stay a few MiB.
const BULK_ROWS: usize = 10_000;

/// What a merchant's identified payments go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MerchantMode {
    /// Paired with merchant-side records (the default).
    #[default]
    Match,
    /// Every identified payment is a SPOTTED match; no merchant feed.
    Spot,
    /// Straight on to routing, never matched.
    Stream,
}

/// Kind of a registered merchant identifier, best first (the derived order
/// is identification's preference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierType {
    Primary,
    Secondary,
    Psimi,
}

macro_rules! text_enum {
    ($t:ident { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            /// Case-insensitive, surrounding blanks ignored.
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                let t = s.trim();
                $(if t.eq_ignore_ascii_case($s) { return Ok(Self::$v); })*
                Err(format!(
                    "unknown {} `{s}` (expected one of: {})",
                    stringify!($t),
                    [$($s),*].join(", ")
                ))
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(MerchantMode { Match => "match", Spot => "spot", Stream => "stream" });
text_enum!(IdentifierType { Primary => "primary", Secondary => "secondary", Psimi => "psimi" });

impl IdentifierType {
    /// The registry type of a parsed transaction's identifier; store ids are
    /// matched through locations, not this table.
    pub fn from_kind(kind: IdentifierKind) -> Option<IdentifierType> {
        match kind {
            IdentifierKind::Primary => Some(Self::Primary),
            IdentifierKind::Secondary => Some(Self::Secondary),
            IdentifierKind::Psimi => Some(Self::Psimi),
            IdentifierKind::Store => None,
        }
    }
}

/// Whether `slug` may name a merchant or provider: lower-case ASCII letters,
/// digits, `-` and `_`, starting with a letter or digit (the schema's CHECK).
pub fn valid_slug(slug: &str) -> bool {
    let mut chars = slug.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A merchant to create or update.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewMerchant {
    pub slug: String,
    pub name: String,
    /// Mode, card policy and matching settings to set; absent ones keep
    /// their current value (or the default, for a new merchant).
    #[serde(flatten, default)]
    pub settings: SettingsPatch,
}

/// How a merchant is matched (see migrations/0003_matching.sql).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchSettings {
    pub lookback_days: i32,
    pub unmatched_after_days: Option<i32>,
    pub tolerance_minor: i64,
    /// Percent tolerance in basis points of the payment amount (100 = 1 %).
    pub tolerance_bp: i32,
    pub auto_confirm_confidence: i16,
    pub matcher: String,
    pub matcher_config: serde_json::Value,
}

/// Changes to a merchant's settings: every field optional. For
/// `unmatched_after_days`, `Some(None)` (JSON `null`) switches the sweep off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SettingsPatch {
    #[serde(default)]
    pub mode: Option<MerchantMode>,
    #[serde(default)]
    pub match_unregistered_cards: Option<bool>,
    #[serde(default)]
    pub lookback_days: Option<i32>,
    #[serde(default, deserialize_with = "some_or_null")]
    pub unmatched_after_days: Option<Option<i32>>,
    #[serde(default)]
    pub tolerance_minor: Option<i64>,
    #[serde(default)]
    pub tolerance_bp: Option<i32>,
    #[serde(default)]
    pub auto_confirm_confidence: Option<i16>,
    #[serde(default)]
    pub matcher: Option<String>,
    #[serde(default)]
    pub matcher_config: Option<serde_json::Value>,
}

fn some_or_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<i32>>, D::Error> {
    Ok(Some(Option::<i32>::deserialize(d)?))
}

impl SettingsPatch {
    /// The first out-of-range field, as (field, reason).
    pub fn invalid(&self) -> Option<(&'static str, String)> {
        if let Some(d) = self.lookback_days
            && !(1..=3650).contains(&d)
        {
            return Some(("lookback_days", "must be 1 to 3650 days".into()));
        }
        if let Some(Some(d)) = self.unmatched_after_days
            && !(0..=3650).contains(&d)
        {
            return Some((
                "unmatched_after_days",
                "must be 0 to 3650 days, or null".into(),
            ));
        }
        if let Some(t) = self.tolerance_minor
            && t < 0
        {
            return Some(("tolerance_minor", "must not be negative".into()));
        }
        if let Some(t) = self.tolerance_bp
            && !(0..=1000).contains(&t)
        {
            return Some((
                "tolerance_bp",
                "must be 0 to 1000 basis points (10 %)".into(),
            ));
        }
        if let Some(c) = self.auto_confirm_confidence
            && !(0..=100).contains(&c)
        {
            return Some(("auto_confirm_confidence", "must be 0 to 100".into()));
        }
        if let Some(m) = &self.matcher
            && m.trim().is_empty()
        {
            return Some(("matcher", "must name a matcher plugin".into()));
        }
        if let Some(c) = &self.matcher_config
            && !c.is_object()
        {
            return Some(("matcher_config", "must be a JSON object".into()));
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Merchant {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub mode: MerchantMode,
    pub match_unregistered_cards: bool,
    #[serde(flatten)]
    pub settings: MatchSettings,
    pub created_at: DateTime<Utc>,
}

/// One MID row to onboard, with the line it came from (for rejects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMid {
    pub line: u64,
    pub identifier: String,
    pub identifier_type: IdentifierType,
    /// Provider slug (`visa`, `amex`, `mastercard`).
    pub provider: String,
    /// Merchant slug; the merchant must exist.
    pub merchant: String,
    pub location_id: Option<String>,
    pub merchant_internal_id: Option<String>,
    pub location_name: Option<String>,
    pub postcode: Option<String>,
}

/// A registered MID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mid {
    pub id: i64,
    pub identifier: String,
    pub identifier_type: IdentifierType,
    pub provider: String,
    pub merchant: String,
    pub location_id: Option<String>,
    pub merchant_internal_id: Option<String>,
    pub location_name: Option<String>,
    pub postcode: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A row that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    pub line: u64,
    pub reason: String,
}

/// What an import of MID rows did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MidImport {
    pub inserted: u64,
    /// Rows already registered, or repeated earlier in the same input.
    pub duplicates: u64,
    /// Rows naming an unknown provider or merchant, in input order.
    pub rejected: Vec<RowError>,
}

/// Changes to one MID; `None` leaves a field as it is, `Some("")` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct MidUpdate {
    pub location_id: Option<String>,
    pub merchant_internal_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MidFilter {
    /// Merchant slug.
    pub merchant: Option<String>,
    /// Provider slug.
    pub provider: Option<String>,
    /// Identifiers starting with this.
    pub identifier_prefix: Option<String>,
    pub location_id: Option<String>,
    /// Default 100, at most 1000.
    pub limit: Option<u32>,
    /// Only ids below this (from [`Page::next_cursor`]).
    pub cursor: Option<i64>,
}

/// Identification's answer: the merchant owning the best-type hits, and
/// those registered identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    pub merchant: String,
    pub identifier_type: IdentifierType,
    pub mids: Vec<Mid>,
}

/// One card-registry entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    pub card_token: String,
    pub first_six: Option<String>,
    pub last_four: Option<String>,
    pub loyalty_id: Option<String>,
    #[serde(default, skip_deserializing)]
    pub updated_at: Option<DateTime<Utc>>,
}

const MERCHANT_COLUMNS: &str = "id, slug, name, mode, match_unregistered_cards, lookback_days, \
     unmatched_after_days, tolerance_minor, tolerance_bp, auto_confirm_confidence, matcher, \
     matcher_config, created_at";

/// Apply `patch` to merchant `slug` inside `tx`; the merchant as it is then.
async fn update_settings(
    tx: &mut sqlx::PgConnection,
    slug: &str,
    patch: &SettingsPatch,
) -> Result<Option<Merchant>> {
    let row = sqlx::query(&format!(
        "UPDATE merchants SET \
         mode = COALESCE($2, mode), \
         match_unregistered_cards = COALESCE($3, match_unregistered_cards), \
         lookback_days = COALESCE($4, lookback_days), \
         unmatched_after_days = CASE WHEN $5 THEN $6 ELSE unmatched_after_days END, \
         tolerance_minor = COALESCE($7, tolerance_minor), \
         tolerance_bp = COALESCE($8, tolerance_bp), \
         auto_confirm_confidence = COALESCE($9, auto_confirm_confidence), \
         matcher = COALESCE($10, matcher), \
         matcher_config = COALESCE($11, matcher_config) \
         WHERE slug = $1 RETURNING {MERCHANT_COLUMNS}"
    ))
    .bind(slug)
    .bind(patch.mode.map(|m| m.as_str()))
    .bind(patch.match_unregistered_cards)
    .bind(patch.lookback_days)
    .bind(patch.unmatched_after_days.is_some())
    .bind(patch.unmatched_after_days.flatten())
    .bind(patch.tolerance_minor)
    .bind(patch.tolerance_bp)
    .bind(patch.auto_confirm_confidence)
    .bind(patch.matcher.as_deref())
    .bind(patch.matcher_config.as_ref().map(sqlx::types::Json))
    .fetch_optional(&mut *tx)
    .await?;
    row.as_ref().map(merchant_row).transpose()
}

const MID_SELECT: &str = "SELECT m.id, m.identifier, m.identifier_type, p.slug AS provider, \
     s.slug AS merchant, m.location_id, m.merchant_internal_id, m.location_name, m.postcode, \
     m.created_at, m.updated_at \
     FROM merchant_identifiers m \
     JOIN payment_providers p ON p.id = m.provider \
     JOIN merchants s ON s.id = m.merchant";

fn corrupt(column: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: e.to_string().into(),
    })
}

fn mid_row(row: &PgRow) -> Result<Mid> {
    let t: String = row.try_get("identifier_type")?;
    Ok(Mid {
        id: row.try_get("id")?,
        identifier: row.try_get("identifier")?,
        identifier_type: t.parse().map_err(|e| corrupt("identifier_type", e))?,
        provider: row.try_get("provider")?,
        merchant: row.try_get("merchant")?,
        location_id: row.try_get("location_id")?,
        merchant_internal_id: row.try_get("merchant_internal_id")?,
        location_name: row.try_get("location_name")?,
        postcode: row.try_get("postcode")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn merchant_row(row: &PgRow) -> Result<Merchant> {
    let mode: String = row.try_get("mode")?;
    Ok(Merchant {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        mode: mode.parse().map_err(|e| corrupt("mode", e))?,
        match_unregistered_cards: row.try_get("match_unregistered_cards")?,
        settings: MatchSettings {
            lookback_days: row.try_get("lookback_days")?,
            unmatched_after_days: row.try_get("unmatched_after_days")?,
            tolerance_minor: row.try_get("tolerance_minor")?,
            tolerance_bp: row.try_get("tolerance_bp")?,
            auto_confirm_confidence: row.try_get("auto_confirm_confidence")?,
            matcher: row.try_get("matcher")?,
            matcher_config: row
                .try_get::<sqlx::types::Json<serde_json::Value>, _>("matcher_config")?
                .0,
        },
        created_at: row.try_get("created_at")?,
    })
}

fn card_row(row: &PgRow) -> Result<Card> {
    Ok(Card {
        card_token: row.try_get("card_token")?,
        first_six: row.try_get("first_six")?,
        last_four: row.try_get("last_four")?,
        loyalty_id: row.try_get("loyalty_id")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// `""` and `"0"` are no identifier (payment-feeds.md §0.1, recommendation).
fn is_empty_identifier(value: &str) -> bool {
    let v = value.trim();
    v.is_empty() || v == "0"
}

impl Store {
    /// Create a merchant, or rename an existing slug; the settings given in
    /// `merchant.settings` are applied too (absent ones are left alone).
    pub async fn upsert_merchant(&self, merchant: &NewMerchant) -> Result<Merchant> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO merchants (slug, name) VALUES ($1, $2) \
             ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name",
        )
        .bind(&merchant.slug)
        .bind(&merchant.name)
        .execute(&mut *tx)
        .await?;
        let updated = update_settings(&mut tx, &merchant.slug, &merchant.settings).await?;
        tx.commit().await?;
        updated.ok_or_else(|| StoreError::NotFound(format!("merchant `{}`", merchant.slug)))
    }

    /// Change some of a merchant's settings; `None` if there is no such merchant.
    pub async fn update_merchant(
        &self,
        slug: &str,
        patch: &SettingsPatch,
    ) -> Result<Option<Merchant>> {
        let mut tx = self.pool.begin().await?;
        let updated = update_settings(&mut tx, slug, patch).await?;
        tx.commit().await?;
        Ok(updated)
    }

    pub async fn get_merchant(&self, slug: &str) -> Result<Option<Merchant>> {
        let row = sqlx::query(&format!(
            "SELECT {MERCHANT_COLUMNS} FROM merchants WHERE slug = $1"
        ))
        .bind(slug)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(merchant_row).transpose()
    }

    pub async fn get_merchant_by_id(&self, id: i64) -> Result<Option<Merchant>> {
        let row = sqlx::query(&format!(
            "SELECT {MERCHANT_COLUMNS} FROM merchants WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(merchant_row).transpose()
    }

    /// Every merchant, by slug (there are tens to thousands, not millions).
    pub async fn list_merchants(&self) -> Result<Vec<Merchant>> {
        let rows = sqlx::query(&format!(
            "SELECT {MERCHANT_COLUMNS} FROM merchants ORDER BY slug"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(merchant_row).collect()
    }

    /// Provider slugs, alphabetically.
    pub async fn list_providers(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT slug FROM payment_providers ORDER BY slug")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Onboard MID rows in one transaction (see the module docs): rows with
    /// an unknown provider or merchant are rejected by line, the others are
    /// inserted unless already registered.
    pub async fn import_mids(&self, rows: &[NewMid]) -> Result<MidImport> {
        let mut tx = self.pool.begin().await?;
        let providers: HashMap<String, i64> =
            sqlx::query_as::<_, (String, i64)>("SELECT slug, id FROM payment_providers")
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let wanted: Vec<&str> = rows
            .iter()
            .map(|r| r.merchant.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let merchants: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
            "SELECT slug, id FROM merchants WHERE slug = ANY($1)",
        )
        .bind(&wanted)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();

        let mut outcome = MidImport::default();
        let mut good = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(&provider) = providers.get(&row.provider) else {
                outcome.rejected.push(RowError {
                    line: row.line,
                    reason: format!("unknown provider `{}`", row.provider),
                });
                continue;
            };
            let Some(&merchant) = merchants.get(&row.merchant) else {
                outcome.rejected.push(RowError {
                    line: row.line,
                    reason: format!(
                        "unknown merchant `{}` (create it first: POST /v1/merchants or `accord merchants add`)",
                        row.merchant
                    ),
                });
                continue;
            };
            good.push((row, provider, merchant));
        }

        for batch in good.chunks(BULK_ROWS) {
            let mut identifier = Vec::with_capacity(batch.len());
            let mut kind = Vec::with_capacity(batch.len());
            let mut provider = Vec::with_capacity(batch.len());
            let mut merchant = Vec::with_capacity(batch.len());
            let mut location_id = Vec::with_capacity(batch.len());
            let mut internal_id = Vec::with_capacity(batch.len());
            let mut location_name = Vec::with_capacity(batch.len());
            let mut postcode = Vec::with_capacity(batch.len());
            for (row, p, m) in batch {
                identifier.push(row.identifier.as_str());
                kind.push(row.identifier_type.as_str());
                provider.push(*p);
                merchant.push(*m);
                location_id.push(row.location_id.as_deref());
                internal_id.push(row.merchant_internal_id.as_deref());
                location_name.push(row.location_name.as_deref());
                postcode.push(row.postcode.as_deref());
            }
            let done = sqlx::query(
                "INSERT INTO merchant_identifiers (identifier, identifier_type, provider, merchant, \
                 location_id, merchant_internal_id, location_name, postcode) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], \
                 $5::text[], $6::text[], $7::text[], $8::text[]) \
                 ON CONFLICT (identifier, identifier_type, provider) DO NOTHING",
            )
            .bind(&identifier)
            .bind(&kind)
            .bind(&provider)
            .bind(&merchant)
            .bind(&location_id)
            .bind(&internal_id)
            .bind(&location_name)
            .bind(&postcode)
            .execute(&mut *tx)
            .await?;
            outcome.inserted += done.rows_affected();
        }
        tx.commit().await?;
        outcome.duplicates = good.len() as u64 - outcome.inserted;
        outcome.rejected.sort_by_key(|r| r.line);
        Ok(outcome)
    }

    /// Offboard one MID; how many were removed (0 or 1).
    pub async fn offboard_mid(
        &self,
        identifier: &str,
        identifier_type: IdentifierType,
        provider: &str,
    ) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM merchant_identifiers m USING payment_providers p \
             WHERE p.id = m.provider AND p.slug = $3 \
             AND m.identifier = $1 AND m.identifier_type = $2",
        )
        .bind(identifier)
        .bind(identifier_type.as_str())
        .bind(provider)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Offboard every MID of a merchant's location; how many were removed.
    pub async fn offboard_location(&self, merchant: &str, location_id: &str) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM merchant_identifiers m USING merchants s \
             WHERE s.id = m.merchant AND s.slug = $1 AND m.location_id = $2",
        )
        .bind(merchant)
        .bind(location_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn get_mid(&self, id: i64) -> Result<Option<Mid>> {
        let row = sqlx::query(&format!("{MID_SELECT} WHERE m.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(mid_row).transpose()
    }

    /// Change a MID's location id and/or merchant internal id.
    /// [`StoreError::NotFound`] when there is no MID `id`.
    pub async fn update_mid(&self, id: i64, update: &MidUpdate) -> Result<Mid> {
        // NULLIF: an empty string clears the field; COALESCE keeps it when absent.
        let done = sqlx::query(
            "UPDATE merchant_identifiers SET \
             location_id = CASE WHEN $2::text IS NULL THEN location_id ELSE NULLIF($2, '') END, \
             merchant_internal_id = CASE WHEN $3::text IS NULL THEN merchant_internal_id \
                                    ELSE NULLIF($3, '') END, \
             updated_at = now() \
             WHERE id = $1",
        )
        .bind(id)
        .bind(update.location_id.as_deref())
        .bind(update.merchant_internal_id.as_deref())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no MID {id}")));
        }
        self.get_mid(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no MID {id}")))
    }

    /// MIDs matching the filter, newest first, keyset-paged.
    pub async fn list_mids(&self, filter: &MidFilter) -> Result<Page<Mid>> {
        let limit = i64::from(filter.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE));
        let mut q = QueryBuilder::<Postgres>::new(format!("{MID_SELECT} WHERE true"));
        if let Some(merchant) = &filter.merchant {
            q.push(" AND s.slug = ").push_bind(merchant);
        }
        if let Some(provider) = &filter.provider {
            q.push(" AND p.slug = ").push_bind(provider);
        }
        if let Some(prefix) = &filter.identifier_prefix {
            q.push(" AND starts_with(m.identifier, ")
                .push_bind(prefix)
                .push(")");
        }
        if let Some(location) = &filter.location_id {
            q.push(" AND m.location_id = ").push_bind(location);
        }
        if let Some(cursor) = filter.cursor {
            q.push(" AND m.id < ").push_bind(cursor);
        }
        q.push(" ORDER BY m.id DESC LIMIT ").push_bind(limit + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
        let mut items = rows.iter().map(mid_row).collect::<Result<Vec<_>>>()?;
        let more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        let next_cursor = if more {
            items.last().map(|m| m.id)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Identify a payment by its identifiers (payment-feeds.md §0.1): look
    /// every non-empty `(type, value)` up among `provider`'s MIDs and keep the
    /// hits of the best type present. `None` when nothing is registered.
    /// [`StoreError::Conflict`] when the best hits belong to more than one
    /// merchant (a registry error to fix, not a guess to make).
    pub async fn resolve_mids(
        &self,
        provider: &str,
        identifiers: &[(IdentifierType, &str)],
    ) -> Result<Option<Resolution>> {
        let (kinds, values): (Vec<&str>, Vec<&str>) = identifiers
            .iter()
            .filter(|(_, v)| !is_empty_identifier(v))
            .map(|(t, v)| (t.as_str(), *v))
            .unzip();
        if values.is_empty() {
            return Ok(None);
        }
        let rows = sqlx::query(&format!(
            "{MID_SELECT} WHERE p.slug = $1 AND (m.identifier_type, m.identifier) IN \
             (SELECT * FROM UNNEST($2::text[], $3::text[])) ORDER BY m.id"
        ))
        .bind(provider)
        .bind(&kinds)
        .bind(&values)
        .fetch_all(&self.pool)
        .await?;
        let hits = rows.iter().map(mid_row).collect::<Result<Vec<_>>>()?;
        let Some(best) = hits.iter().map(|m| m.identifier_type).min() else {
            return Ok(None);
        };
        let mids: Vec<Mid> = hits
            .into_iter()
            .filter(|m| m.identifier_type == best)
            .collect();
        let mut merchants: Vec<&str> = mids.iter().map(|m| m.merchant.as_str()).collect();
        merchants.sort_unstable();
        merchants.dedup();
        if merchants.len() > 1 {
            return Err(StoreError::Conflict(format!(
                "{provider} {best} identifiers belong to several merchants: {}",
                merchants.join(", ")
            )));
        }
        Ok(Some(Resolution {
            merchant: merchants[0].to_owned(),
            identifier_type: best,
            mids,
        }))
    }

    /// The MIDs of one merchant location (merchant feeds that carry only a
    /// location id).
    pub async fn mids_at_location(&self, merchant: &str, location_id: &str) -> Result<Vec<Mid>> {
        let rows = sqlx::query(&format!(
            "{MID_SELECT} WHERE s.slug = $1 AND m.location_id = $2 ORDER BY m.id"
        ))
        .bind(merchant)
        .bind(location_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(mid_row).collect()
    }

    /// Insert or replace card-registry entries (a token given twice: the
    /// last one wins); how many entries were written.
    pub async fn upsert_cards(&self, cards: &[Card]) -> Result<u64> {
        let mut latest: HashMap<&str, &Card> = HashMap::with_capacity(cards.len());
        for card in cards {
            latest.insert(card.card_token.as_str(), card);
        }
        let unique: Vec<&Card> = latest.into_values().collect();
        let mut tx = self.pool.begin().await?;
        let mut written = 0;
        for batch in unique.chunks(BULK_ROWS) {
            let token: Vec<&str> = batch.iter().map(|c| c.card_token.as_str()).collect();
            let six: Vec<Option<&str>> = batch.iter().map(|c| c.first_six.as_deref()).collect();
            let four: Vec<Option<&str>> = batch.iter().map(|c| c.last_four.as_deref()).collect();
            let loyalty: Vec<Option<&str>> =
                batch.iter().map(|c| c.loyalty_id.as_deref()).collect();
            let done = sqlx::query(
                "INSERT INTO card_registry (card_token, first_six, last_four, loyalty_id) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) \
                 ON CONFLICT (card_token) DO UPDATE SET first_six = EXCLUDED.first_six, \
                 last_four = EXCLUDED.last_four, loyalty_id = EXCLUDED.loyalty_id, \
                 updated_at = now()",
            )
            .bind(&token)
            .bind(&six)
            .bind(&four)
            .bind(&loyalty)
            .execute(&mut *tx)
            .await?;
            written += done.rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    pub async fn get_card(&self, token: &str) -> Result<Option<Card>> {
        let row = sqlx::query(
            "SELECT card_token, first_six, last_four, loyalty_id, updated_at \
             FROM card_registry WHERE card_token = $1",
        )
        .bind(token)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(card_row).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_types_order_best_first() {
        assert!(IdentifierType::Primary < IdentifierType::Secondary);
        assert!(IdentifierType::Secondary < IdentifierType::Psimi);
        assert_eq!(" PSIMI ".parse(), Ok(IdentifierType::Psimi));
        assert!("store".parse::<IdentifierType>().is_err());
    }

    #[test]
    fn zero_and_blank_are_no_identifier() {
        assert!(is_empty_identifier(""));
        assert!(is_empty_identifier(" 0 "));
        assert!(!is_empty_identifier("00"));
        assert!(valid_slug("iceland-bonus-card"));
        assert!(!valid_slug("Iceland"));
        assert!(!valid_slug("-x"));
    }
}
