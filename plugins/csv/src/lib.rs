//! A configurable CSV parser: one config maps any delimited file's columns
//! onto the canonical transaction, so a new merchant or payment CSV feed
//! needs a config, not a plugin.
//!
//! The file streams through [`csv::CsvStream`] (any chunk split works).
//! Column indexes are resolved once, at the header (or at open, for files
//! without one); per row the only allocations are the transaction's own
//! strings. A row that cannot be read is a [`Reject`] with its row, byte
//! offset, canonical field and reason, and the file goes on; only a bad
//! config or a header lacking a mapped column fails the whole input.
//!
//! `CsvParser` and `Config` are public because the host benchmarks this
//! crate natively against its wasm build.

use std::collections::BTreeMap;

use accord_plugin_sdk::csv::{CsvRecord, CsvStream, Header};
use accord_plugin_sdk::prelude::*;
use serde::Deserialize;

/// Parser config (JSON). See README.md for every key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "comma")]
    pub delimiter: String,
    #[serde(default = "yes")]
    pub has_header: bool,
    #[serde(default)]
    pub side: SideName,
    #[serde(default)]
    pub kind: KindName,
    /// Fixed provider for every row (e.g. `"visa"`), or map `columns.provider`.
    #[serde(default)]
    pub provider: Option<String>,
    /// Raw provider-column value -> provider. When set, a row whose value is
    /// not in the map is skipped, as Harmonia's merchant feeds do with card
    /// schemes they do not know.
    #[serde(default)]
    pub provider_map: Option<BTreeMap<String, String>>,
    /// Fixed ISO 4217 currency, or map `columns.currency`.
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub amount_unit: AmountUnit,
    #[serde(default)]
    pub amount_rounding: Rounding,
    /// chrono strftime format of `occurred_at`, or `"iso8601"`.
    #[serde(default = "iso8601")]
    pub date_format: String,
    /// IANA zone of times without an offset.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// Canonical field -> column (header name, or 0-based index).
    #[serde(default)]
    pub columns: BTreeMap<String, Column>,
    /// Columns copied verbatim into `extras`, keyed by the name given here.
    #[serde(default)]
    pub extras: Vec<Column>,
    /// Rows to drop silently (not transactions, not rejects).
    #[serde(default)]
    pub skip_if: Vec<SkipRule>,
    /// Check payer / beneficiary accounts as IBANs (and store them normalised).
    #[serde(default)]
    pub validate_iban: bool,
}

fn comma() -> String {
    ",".to_string()
}
fn yes() -> bool {
    true
}
fn iso8601() -> String {
    "iso8601".to_string()
}
fn utc() -> String {
    "UTC".to_string()
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SideName {
    Payment,
    #[default]
    Merchant,
    Standalone,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KindName {
    #[default]
    Sale,
    Refund,
    Authorisation,
    Settlement,
    Transfer,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmountUnit {
    #[default]
    Major,
    Minor,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    #[default]
    Exact,
    /// Drop decimals beyond the currency's exponent (Harmonia's rule).
    Truncate,
}

/// A column by header name, or by 0-based index (a number, or a numeric
/// string when the file has no header).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Column {
    Index(usize),
    Name(String),
}

impl std::fmt::Display for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Column::Index(i) => write!(f, "{i}"),
            Column::Name(n) => f.write_str(n),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipRule {
    pub column: Column,
    /// Compared case-insensitively (ASCII) with the trimmed cell.
    pub equals: String,
}

/// The canonical fields a column can feed, in `columns` key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ExternalId,
    Amount,
    Currency,
    OccurredAt,
    Provider,
    MerchantId,
    MerchantIdSecondary,
    MerchantIdPsimi,
    StoreId,
    CardFirstSix,
    CardLastFour,
    CardToken,
    AuthCode,
    ApprovalCode,
    SettlementKey,
    AccountId,
    ReferenceId,
    PayerAccount,
    BeneficiaryAccount,
}

const FIELDS: [(&str, Field); 19] = [
    ("external_id", Field::ExternalId),
    ("amount", Field::Amount),
    ("currency", Field::Currency),
    ("occurred_at", Field::OccurredAt),
    ("provider", Field::Provider),
    ("merchant_id", Field::MerchantId),
    ("merchant_id_secondary", Field::MerchantIdSecondary),
    ("merchant_id_psimi", Field::MerchantIdPsimi),
    ("store_id", Field::StoreId),
    ("card_first_six", Field::CardFirstSix),
    ("card_last_four", Field::CardLastFour),
    ("card_token", Field::CardToken),
    ("auth_code", Field::AuthCode),
    ("approval_code", Field::ApprovalCode),
    ("settlement_key", Field::SettlementKey),
    ("account_id", Field::AccountId),
    ("reference_id", Field::ReferenceId),
    ("payer_account", Field::PayerAccount),
    ("beneficiary_account", Field::BeneficiaryAccount),
];

impl Field {
    fn name(self) -> &'static str {
        FIELDS[self as usize].0
    }
}

/// Optional text fields copied as they are (trimmed, empty dropped).
const PLAIN: [Field; 8] = [
    Field::CardFirstSix,
    Field::CardLastFour,
    Field::CardToken,
    Field::AuthCode,
    Field::ApprovalCode,
    Field::SettlementKey,
    Field::AccountId,
    Field::ReferenceId,
];

const MERCHANT_IDS: [(Field, IdentifierKind); 4] = [
    (Field::MerchantId, IdentifierKind::Primary),
    (Field::MerchantIdSecondary, IdentifierKind::Secondary),
    (Field::MerchantIdPsimi, IdentifierKind::Psimi),
    (Field::StoreId, IdentifierKind::Store),
];

/// How `occurred_at` is written.
enum DateFormat {
    Iso8601,
    /// strftime; `time_known` false when the format has no time of day.
    Strftime {
        format: String,
        time_known: bool,
    },
}

/// Everything fixed by the config, checked at open.
struct Plan {
    side: Side,
    kind: Kind,
    provider: Option<String>,
    provider_map: Option<BTreeMap<String, String>>,
    currency: Option<String>,
    amount_unit: AmountUnit,
    rounding: Rounding,
    date: DateFormat,
    zone: time::Zone,
    validate_iban: bool,
    /// Column of each canonical field, indexed by `Field as usize`.
    columns: [Option<Column>; FIELDS.len()],
    extras: Vec<Column>,
    skip_if: Vec<SkipRule>,
}

/// Column indexes resolved against the header (or the config, headerless).
struct Resolved {
    cols: [Option<usize>; FIELDS.len()],
    /// (key, index) of each extra column.
    extras: Vec<(String, usize)>,
    /// (index, value) of each skip rule.
    skip_if: Vec<(usize, String)>,
}

pub struct CsvParser {
    stream: CsvStream,
    state: State,
}

struct State {
    plan: Plan,
    has_header: bool,
    /// None until the header has been read (files with a header).
    resolved: Option<Resolved>,
    /// Set when the input turned out unusable; later records are ignored.
    fatal: Option<PluginError>,
    /// Input bytes pushed so far, to size batches.
    bytes_seen: u64,
}

impl Config {
    fn plan(self) -> Result<(Plan, u8), PluginError> {
        let delimiter = match self.delimiter.as_bytes() {
            [b] if b.is_ascii() && *b != b'"' && *b != b'\n' && *b != b'\r' => *b,
            _ => {
                return Err(PluginError::invalid_config(format!(
                    "delimiter must be one ASCII character other than a quote or line break, got {:?}",
                    self.delimiter
                )));
            }
        };
        let zone = time::zone(&self.time_zone)
            .map_err(|e| PluginError::invalid_config(format!("time_zone: {e}")))?;

        let mut columns: [Option<Column>; FIELDS.len()] = Default::default();
        for (key, column) in self.columns {
            let Some((_, field)) = FIELDS.iter().find(|(name, _)| *name == key) else {
                let known: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
                return Err(PluginError::invalid_config(format!(
                    "columns: unknown canonical field {key:?} (expected one of: {})",
                    known.join(", ")
                )));
            };
            columns[*field as usize] = Some(column);
        }
        for required in [Field::ExternalId, Field::Amount, Field::OccurredAt] {
            if columns[required as usize].is_none() {
                return Err(PluginError::invalid_config(format!(
                    "columns.{} is required",
                    required.name()
                )));
            }
        }
        let currency_column = columns[Field::Currency as usize].is_some();
        match (&self.currency, currency_column) {
            (None, false) => {
                return Err(PluginError::invalid_config(
                    "set either `currency` or `columns.currency`",
                ));
            }
            (Some(_), true) => {
                return Err(PluginError::invalid_config(
                    "set `currency` or `columns.currency`, not both",
                ));
            }
            (Some(c), false) => {
                money::exponent(c)
                    .map_err(|e| PluginError::invalid_config(format!("currency: {e}")))?;
            }
            (None, true) => {}
        }
        let provider_column = columns[Field::Provider as usize].is_some();
        if self.provider.is_some() && provider_column {
            return Err(PluginError::invalid_config(
                "set `provider` or `columns.provider`, not both",
            ));
        }
        if self.provider_map.is_some() && !provider_column {
            return Err(PluginError::invalid_config(
                "`provider_map` needs `columns.provider`",
            ));
        }

        let date = if self.date_format.eq_ignore_ascii_case("iso8601") {
            DateFormat::Iso8601
        } else {
            let time_known = [
                "%H", "%I", "%k", "%l", "%M", "%S", "%T", "%R", "%X", "%c", "%s", "%+",
            ]
            .iter()
            .any(|spec| self.date_format.contains(spec));
            DateFormat::Strftime {
                format: self.date_format,
                time_known,
            }
        };

        if !self.has_header {
            let all = columns
                .iter()
                .flatten()
                .chain(&self.extras)
                .chain(self.skip_if.iter().map(|r| &r.column));
            for column in all {
                headerless_index(column)?;
            }
        }

        let plan = Plan {
            side: match self.side {
                SideName::Payment => Side::Payment,
                SideName::Merchant => Side::Merchant,
                SideName::Standalone => Side::Standalone,
            },
            kind: match self.kind {
                KindName::Sale => Kind::Sale,
                KindName::Refund => Kind::Refund,
                KindName::Authorisation => Kind::Authorisation,
                KindName::Settlement => Kind::Settlement,
                KindName::Transfer => Kind::Transfer,
            },
            provider: self.provider,
            provider_map: self.provider_map,
            currency: self.currency,
            amount_unit: self.amount_unit,
            rounding: self.amount_rounding,
            date,
            zone,
            validate_iban: self.validate_iban,
            columns,
            extras: self.extras,
            skip_if: self.skip_if,
        };
        Ok((plan, delimiter))
    }
}

fn headerless_index(column: &Column) -> Result<usize, PluginError> {
    match column {
        Column::Index(i) => Ok(*i),
        Column::Name(n) => n.trim().parse().map_err(|_| {
            PluginError::invalid_config(format!(
                "has_header is false, so columns are 0-based indexes; {n:?} is not one"
            ))
        }),
    }
}

impl Plan {
    /// Column indexes: by header name, or (headerless) by the configured index.
    fn resolve(&self, header: Option<&Header>) -> Result<Resolved, PluginError> {
        let index = |column: &Column| -> Result<usize, PluginError> {
            match (column, header) {
                (Column::Index(i), _) => Ok(*i),
                (Column::Name(name), Some(h)) => h
                    .require(name)
                    .map_err(|e| PluginError::malformed(format!("header: {e}"))),
                (Column::Name(_), None) => headerless_index(column),
            }
        };
        let mut cols = [None; FIELDS.len()];
        for (slot, column) in cols.iter_mut().zip(&self.columns) {
            if let Some(column) = column {
                *slot = Some(index(column)?);
            }
        }
        let extras = self
            .extras
            .iter()
            .map(|c| Ok((c.to_string(), index(c)?)))
            .collect::<Result<_, PluginError>>()?;
        let skip_if = self
            .skip_if
            .iter()
            .map(|r| Ok((index(&r.column)?, r.equals.trim().to_string())))
            .collect::<Result<_, PluginError>>()?;
        Ok(Resolved {
            cols,
            extras,
            skip_if,
        })
    }
}

impl State {
    fn record(&mut self, rec: &CsvRecord<'_>, out: &mut Batch) {
        if self.fatal.is_some() {
            return;
        }
        let Some(resolved) = &self.resolved else {
            // Only reached for the header record of a file with one.
            let result = Header::from_record(rec)
                .map_err(PluginError::malformed)
                .and_then(|h| self.plan.resolve(Some(&h)));
            match result {
                Ok(r) => self.resolved = Some(r),
                Err(e) => self.fatal = Some(e),
            }
            return;
        };
        match self.plan.transaction(resolved, rec) {
            Ok(Some(tx)) => out.accept(rec.row(), tx),
            Ok(None) => {}
            Err(e) => out.reject(rec.reject(&e)),
        }
    }
}

/// Field `field` of the row, trimmed, when the config maps it.
fn cell<'a>(
    resolved: &Resolved,
    rec: &CsvRecord<'a>,
    field: Field,
) -> Result<Option<&'a str>, FieldError> {
    match resolved.cols[field as usize] {
        None => Ok(None),
        Some(i) => rec
            .str(i)
            .map(|s| Some(s.trim()))
            .map_err(|e| e.on(field.name())),
    }
}

fn required<'a>(
    resolved: &Resolved,
    rec: &CsvRecord<'a>,
    field: Field,
) -> Result<&'a str, FieldError> {
    match cell(resolved, rec, field)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(FieldError::new(field.name(), "empty")),
    }
}

impl Plan {
    /// The row's transaction; `None` when a skip rule or the provider map
    /// drops it.
    fn transaction(
        &self,
        resolved: &Resolved,
        rec: &CsvRecord<'_>,
    ) -> Result<Option<Transaction>, FieldError> {
        for (i, equals) in &resolved.skip_if {
            let value = rec.get(*i).unwrap_or_default().trim_ascii();
            if value.eq_ignore_ascii_case(equals.as_bytes()) {
                return Ok(None);
            }
        }
        let provider = match (cell(resolved, rec, Field::Provider)?, &self.provider_map) {
            (Some(raw), Some(map)) => match map.get(raw) {
                Some(p) => Some(p.clone()),
                None => return Ok(None),
            },
            (Some(raw), None) => non_empty(raw),
            (None, _) => self.provider.clone(),
        };

        let external_id = required(resolved, rec, Field::ExternalId)?;
        let currency = match &self.currency {
            Some(c) => c.as_str(),
            None => required(resolved, rec, Field::Currency)?,
        };
        let amount_text = required(resolved, rec, Field::Amount)?;
        let mut amount = match (self.amount_unit, self.rounding) {
            (AmountUnit::Minor, _) => money::parse_minor(amount_text, currency),
            (AmountUnit::Major, Rounding::Exact) => money::parse_major(amount_text, currency),
            (AmountUnit::Major, Rounding::Truncate) => {
                money::parse_major_truncating(amount_text, currency)
            }
        }
        .map_err(|e| {
            // Only on the error path: was it the amount or the currency column?
            let bad_currency = self.currency.is_none() && money::exponent(currency).is_err();
            e.on(if bad_currency {
                Field::Currency.name()
            } else {
                Field::Amount.name()
            })
        })?;
        if self.kind == Kind::Refund {
            // The canonical record carries refunds as negative amounts.
            amount.minor_units = -amount.minor_units.saturating_abs();
        }
        let when = required(resolved, rec, Field::OccurredAt)?;
        let (occurred_at, time_known) = match &self.date {
            DateFormat::Iso8601 => (self.zone.parse_instant(when), true),
            DateFormat::Strftime { format, time_known } => {
                (self.zone.parse_local(when, format), *time_known)
            }
        };
        let occurred_at = occurred_at.map_err(|e| e.on(Field::OccurredAt.name()))?;

        let mut tx = Transaction::new(external_id, self.side, self.kind, amount, occurred_at);
        tx.time_known = time_known;
        tx.provider = provider;
        for (field, kind) in MERCHANT_IDS {
            if let Some(v) = cell(resolved, rec, field)? {
                tx = tx.with_merchant_id(v, kind);
            }
        }
        for field in PLAIN {
            let value = cell(resolved, rec, field)?.and_then(non_empty);
            let slot = match field {
                Field::CardFirstSix => &mut tx.card_first_six,
                Field::CardLastFour => &mut tx.card_last_four,
                Field::CardToken => &mut tx.card_token,
                Field::AuthCode => &mut tx.auth_code,
                Field::ApprovalCode => &mut tx.approval_code,
                Field::SettlementKey => &mut tx.settlement_key,
                Field::AccountId => &mut tx.account_id,
                _ => &mut tx.reference_id,
            };
            *slot = value;
        }
        tx.payer_account = self.account(resolved, rec, Field::PayerAccount)?;
        tx.beneficiary_account = self.account(resolved, rec, Field::BeneficiaryAccount)?;
        for (key, i) in &resolved.extras {
            let value = rec.str(*i).map_err(|e| e.on(key))?;
            tx.extras.push((key.clone(), value.to_string()));
        }
        Ok(Some(tx))
    }

    fn account(
        &self,
        resolved: &Resolved,
        rec: &CsvRecord<'_>,
        field: Field,
    ) -> Result<Option<String>, FieldError> {
        match cell(resolved, rec, field)?.filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(v) if self.validate_iban => {
                iban::validate(v).map(Some).map_err(|e| e.on(field.name()))
            }
            Some(v) => Ok(Some(v.to_string())),
        }
    }
}

impl Parser for CsvParser {
    type Config = Config;

    fn open(config: Config) -> Result<Self, PluginError> {
        let has_header = config.has_header;
        let (plan, delimiter) = config.plan()?;
        let resolved = if has_header {
            None
        } else {
            Some(plan.resolve(None)?)
        };
        Ok(CsvParser {
            stream: CsvStream::new(delimiter),
            state: State {
                plan,
                has_header,
                resolved,
                fatal: None,
                bytes_seen: 0,
            },
        })
    }

    fn push(&mut self, chunk: &[u8], out: &mut Batch) -> Result<(), PluginError> {
        let state = &mut self.state;
        // Growing the batch row by row copies every transaction several
        // times; size it from the rows-per-byte seen so far instead.
        let rows = self.stream.rows_seen();
        if rows > 0 && state.bytes_seen > 0 {
            let expected = (chunk.len() as u64).saturating_mul(rows) / state.bytes_seen;
            out.transactions.reserve(expected.min(1 << 20) as usize);
        }
        state.bytes_seen += chunk.len() as u64;
        self.stream.push(chunk, |rec| state.record(rec, out));
        state.fatal.clone().map_or(Ok(()), Err)
    }

    fn finish(&mut self, out: &mut Batch) -> Result<(), PluginError> {
        let state = &mut self.state;
        self.stream.finish(|rec| state.record(rec, out));
        if let Some(e) = state.fatal.clone() {
            return Err(e);
        }
        if state.has_header && state.resolved.is_none() {
            return Err(PluginError::malformed("no header row: the input is empty"));
        }
        Ok(())
    }
}

accord_plugin_sdk::export_parser!(CsvParser);

#[cfg(test)]
mod tests {
    use super::*;
    use accord_plugin_sdk::testing::run_parser;

    const ICELAND_CSV: &[u8] = include_bytes!("../fixtures/iceland.csv");
    const ICELAND_CONFIG: &str = include_str!("../fixtures/iceland.json");
    const PAYMENTS_CSV: &[u8] = include_bytes!("../fixtures/payments.csv");
    const PAYMENTS_CONFIG: &str = include_str!("../fixtures/payments.json");
    const CHUNKS: [usize; 4] = [1, 7, 100, 64 * 1024];

    fn ids(tx: &Transaction) -> Vec<(&str, IdentifierKind)> {
        tx.merchant_ids
            .iter()
            .map(|m| (m.value.as_str(), m.kind))
            .collect()
    }

    #[test]
    fn iceland_merchant_file() {
        for chunk in CHUNKS {
            let batch = run_parser::<CsvParser>(ICELAND_CONFIG, ICELAND_CSV, chunk).unwrap();
            let got: Vec<_> = batch
                .transactions
                .iter()
                .map(|p| (p.row, p.transaction.external_id.as_str()))
                .collect();
            assert_eq!(
                got,
                [
                    (Some(2), "7f1d2c3b-0a9e-4d6f-8b21-5c4e3a2f1b00"),
                    (Some(4), "7f1d2c3b-0a9e-4d6f-8b21-5c4e3a2f1b02"),
                    (Some(5), "7f1d2c3b-0a9e-4d6f-8b21-5c4e3a2f1b03"),
                    (Some(8), "7f1d2c3b-0a9e-4d6f-8b21-5c4e3a2f1b06"),
                ],
                "chunk {chunk}"
            );

            let tx = &batch.transactions[0].transaction;
            assert_eq!(tx.side, Side::Merchant);
            assert_eq!(tx.kind, Kind::Sale);
            assert_eq!(tx.provider.as_deref(), Some("visa"));
            assert_eq!(tx.amount, Money::new(2450, "GBP"));
            assert_eq!(tx.occurred_at, Timestamp::new(1_710_009_730, 0, 0));
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-03-09T18:42:10+00:00"
            );
            assert!(tx.time_known);
            assert_eq!(ids(tx), [("ICE-STORE-0457", IdentifierKind::Primary)]);
            assert_eq!(tx.card_first_six.as_deref(), Some("454321"));
            assert_eq!(tx.card_last_four.as_deref(), Some("4821"));
            assert_eq!(tx.auth_code.as_deref(), Some("731904"));
            assert_eq!(tx.extra("TransactionCardScheme"), Some("Visa Debit"));
            assert_eq!(tx.extra("TransactionCardSchemeId"), Some("2"));

            let tx = &batch.transactions[1].transaction;
            assert_eq!(tx.provider.as_deref(), Some("mastercard"));
            // Harmonia's truncation: 10.005 -> 1000 pennies.
            assert_eq!(tx.amount, Money::new(1000, "GBP"));
            // British summer time.
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-07-01T09:15:00+01:00"
            );

            let tx = &batch.transactions[2].transaction;
            assert_eq!(tx.provider.as_deref(), Some("amex"));
            // Quoted field with a comma inside, and an empty first six.
            assert_eq!(tx.card_first_six, None);
            assert_eq!(
                ids(tx),
                [("ICE-STORE-0001, KEFLAVIK", IdentifierKind::Primary)]
            );

            let rejects: Vec<_> = batch
                .rejects
                .iter()
                .map(|r| (r.row, r.field.as_deref(), r.byte_offset.is_some()))
                .collect();
            assert_eq!(
                rejects,
                [
                    (Some(6), Some("amount"), true),
                    (Some(9), Some("occurred_at"), true)
                ],
                "chunk {chunk}"
            );
            let bad_amount = &batch.rejects[0];
            assert!(bad_amount.raw.contains("twelve"), "{}", bad_amount.raw);
            let offset = bad_amount.byte_offset.unwrap() as usize;
            assert!(ICELAND_CSV[offset..].starts_with(b"454321,0002"));
        }
    }

    #[test]
    fn generic_payments_file() {
        for chunk in CHUNKS {
            let batch = run_parser::<CsvParser>(PAYMENTS_CONFIG, PAYMENTS_CSV, chunk).unwrap();
            assert_eq!(batch.transactions.len(), 2, "chunk {chunk}");
            let tx = &batch.transactions[0].transaction;
            assert_eq!(tx.external_id, "PAY-0001");
            assert_eq!(tx.side, Side::Payment);
            assert_eq!(tx.kind, Kind::Settlement);
            assert_eq!(tx.provider.as_deref(), Some("visa"));
            assert_eq!(tx.amount, Money::new(2450, "GBP"));
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-03-09T18:42:10+00:00"
            );
            assert_eq!(
                ids(tx),
                [
                    ("CAID77001234", IdentifierKind::Primary),
                    ("51234567", IdentifierKind::Secondary),
                    ("98765432", IdentifierKind::Psimi)
                ]
            );
            assert_eq!(tx.card_token.as_deref(), Some("tok-visa-5f3a91"));
            assert_eq!(tx.auth_code.as_deref(), Some("731904"));
            assert_eq!(
                tx.settlement_key.as_deref(),
                Some("0cf08ef0efca1a91c25c4516715b1d9a3e6e308c927a7c9a5c4f398cd717e7e7")
            );
            assert_eq!(tx.payer_account.as_deref(), Some("DE89370400440532013000"));
            assert_eq!(tx.beneficiary_account, None);
            assert_eq!(tx.extras, [("channel".to_string(), "ecom".to_string())]);

            let tx = &batch.transactions[1].transaction;
            assert_eq!(tx.external_id, "PAY-0002");
            assert_eq!(tx.provider.as_deref(), Some("mastercard"));
            // JPY has no minor unit: 1500 minor units are 1500 yen.
            assert_eq!(tx.amount, Money::new(1500, "JPY"));
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-03-10T09:00:00+09:00"
            );
            assert_eq!(ids(tx), [("MCMID0000012345", IdentifierKind::Primary)]);
            assert_eq!(
                tx.beneficiary_account.as_deref(),
                Some("GB82WEST12345698765432")
            );

            let rejects: Vec<_> = batch
                .rejects
                .iter()
                .map(|r| (r.row, r.field.as_deref()))
                .collect();
            assert_eq!(
                rejects,
                [
                    (Some(4), Some("payer_account")),
                    (Some(5), Some("currency")),
                    (Some(6), Some("external_id"))
                ]
            );
        }
    }

    #[test]
    fn headerless_file_by_index() {
        let config = r#"{
            "has_header": false, "delimiter": "|", "kind": "refund", "currency": "EUR",
            "amount_unit": "minor", "date_format": "%d/%m/%Y", "time_zone": "Europe/Paris",
            "columns": {"external_id": 0, "amount": "1", "occurred_at": 2},
            "extras": [3]
        }"#;
        let input = b"R1|1999|09/03/2024|x\nR2|-5|10/03/2024|y";
        for chunk in [1, 3, 64] {
            let batch = run_parser::<CsvParser>(config, input, chunk).unwrap();
            assert_eq!(batch.transactions.len(), 2);
            let tx = &batch.transactions[0].transaction;
            assert_eq!(batch.transactions[0].row, Some(1));
            assert_eq!(tx.kind, Kind::Refund);
            assert_eq!(tx.amount, Money::new(-1999, "EUR"));
            assert!(!tx.time_known, "date-only format");
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-03-09T00:00:00+01:00"
            );
            assert_eq!(tx.extra("3"), Some("x"));
            assert_eq!(batch.transactions[1].transaction.amount.minor_units, -5);
        }
    }

    #[test]
    fn short_row_is_a_reject_not_a_failure() {
        let config = r#"{"currency": "GBP", "columns": {"external_id": "id", "amount": "amt", "occurred_at": "at"}}"#;
        let input = b"id,amt,at\nA,1.00,2024-03-09T18:42:10Z\nB,2.00\n";
        let batch = run_parser::<CsvParser>(config, input, 4).unwrap();
        assert_eq!(batch.transactions.len(), 1);
        assert_eq!(batch.rejects[0].row, Some(3));
        assert_eq!(batch.rejects[0].byte_offset, Some(38));
        assert_eq!(batch.rejects[0].field.as_deref(), Some("occurred_at"));
    }

    #[test]
    fn header_without_a_mapped_column_fails_the_input() {
        let err = run_parser::<CsvParser>(ICELAND_CONFIG, b"TransactionId,Amount\nA,1\n", 5)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::MalformedInput);
        assert!(
            err.message.contains("TransactionAmountValue"),
            "{}",
            err.message
        );
    }

    /// Rough native rows/s on the generic payments layout:
    /// `cargo test --release -p accord-plugin-csv -- --ignored --nocapture`.

    #[test]
    fn bad_configs_are_invalid_config() {
        let cases = [
            (
                r#"{"currency": "GBP", "columns": {"external_id": "a", "amount": "b", "occurred_at": "c", "colour": "d"}}"#,
                "colour",
            ),
            (
                r#"{"currency": "GBP", "columns": {"external_id": "a", "amount": "b"}}"#,
                "columns.occurred_at",
            ),
            (
                r#"{"columns": {"external_id": "a", "amount": "b", "occurred_at": "c"}}"#,
                "currency",
            ),
            (
                r#"{"currency": "GBP", "time_zone": "Mars/Olympus", "columns": {"external_id": "a", "amount": "b", "occurred_at": "c"}}"#,
                "Mars/Olympus",
            ),
            (
                r#"{"currency": "GBP", "delimiter": ";;", "columns": {"external_id": "a", "amount": "b", "occurred_at": "c"}}"#,
                "delimiter",
            ),
            (
                r#"{"currency": "GBP", "has_header": false, "columns": {"external_id": "id", "amount": 1, "occurred_at": 2}}"#,
                "\"id\"",
            ),
            (r#"{"currency": "GBP", "side": "buyer"}"#, "buyer"),
        ];
        for (config, needle) in cases {
            let err = run_parser::<CsvParser>(config, b"", 1).err().unwrap();
            assert_eq!(err.code, ErrorCode::InvalidConfig, "{config}");
            assert!(err.message.contains(needle), "{config}: {}", err.message);
        }
    }
}
