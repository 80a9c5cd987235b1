//! The six Harmonia merchant (loyalty-scheme) feeds in one parser
//! (merchant-feeds.md): Iceland, Wasabi, Itsu and TGI Fridays CSV files,
//! Stonegate and Costa JSON messages. The source's `merchant` config picks
//! the feed.
//!
//! CSV files stream through [`csv::CsvStream`]; columns are found by header
//! name once per file, and a header missing a column the feed reads fails
//! the input. JSON input is NDJSON or one array. Each row becomes a merchant
//! side sale, is **skipped** silently by the feed's skip rules (counted, and
//! logged at `finish`), or becomes a [`Reject`] naming the column or key at
//! fault; the rest of the input goes on (Harmonia instead refuses the whole
//! file).
//!
//! The parser does not deduplicate (the host does, on the external id) and
//! does not resolve store ids: Itsu and Stonegate rows carry their location
//! id as a `store` identifier, which the host expands to the MIDs registered
//! at that location.

mod cards;
mod csv_feeds;
mod json_feeds;
mod python;

use std::collections::BTreeMap;

use accord_plugin_sdk::csv::CsvStream;
use accord_plugin_sdk::json::JsonMessages;
use accord_plugin_sdk::prelude::*;
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use cards::resolve as resolve_card_type;
pub use python::float_repr as python_float_repr;

/// The feed, by the merchant slug Harmonia uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Merchant {
    IcelandBonusCard,
    WasabiClub,
    Itsu,
    TgiFridays,
    Stonegate,
    Costa,
}

impl Merchant {
    pub fn slug(self) -> &'static str {
        match self {
            Merchant::IcelandBonusCard => "iceland-bonus-card",
            Merchant::WasabiClub => "wasabi-club",
            Merchant::Itsu => "itsu",
            Merchant::TgiFridays => "tgi-fridays",
            Merchant::Stonegate => "stonegate",
            Merchant::Costa => "costa",
        }
    }

    fn is_csv(self) -> bool {
        !matches!(self, Merchant::Stonegate | Merchant::Costa)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub merchant: Merchant,
    /// Largest JSON-array document buffered before giving up (JSON feeds).
    #[serde(default = "accord_plugin_sdk::json::default_max_bytes")]
    pub max_bytes: u64,
}

/// What the feed's rules make of one row.
// Moved straight into the batch; boxing would add an allocation per row.
#[allow(clippy::large_enum_variant)]
enum Row {
    Keep(Transaction),
    /// Dropped by a skip rule of the reference; the reason is a log key.
    Skip(&'static str),
}

/// The stateless part: which feed, and its zones.
struct Rules {
    merchant: Merchant,
    london: time::Zone,
    utc: time::Zone,
}

/// What the input produced, for the summary log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub kept: u64,
    pub rejected: u64,
    /// Skip reason → rows.
    pub skipped: BTreeMap<&'static str, u64>,
}

impl Counts {
    fn add(
        &mut self,
        row: u64,
        result: Result<Row, FieldError>,
        reject: impl FnOnce(FieldError) -> Reject,
        out: &mut Batch,
    ) {
        match result {
            Ok(Row::Keep(tx)) => {
                self.kept += 1;
                out.accept(row, tx);
            }
            Ok(Row::Skip(reason)) => *self.skipped.entry(reason).or_default() += 1,
            Err(e) => {
                self.rejected += 1;
                out.reject(reject(e));
            }
        }
    }
}

// One per import.
#[allow(clippy::large_enum_variant)]
enum Input {
    Csv {
        stream: CsvStream,
        columns: Option<csv_feeds::Columns>,
        fatal: Option<PluginError>,
    },
    Json(JsonMessages),
}

pub struct MerchantFeedParser {
    rules: Rules,
    input: Input,
    counts: Counts,
}

impl MerchantFeedParser {
    /// Rows kept, rejected and skipped (by reason) so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    fn log_summary(&self) {
        let c = &self.counts;
        let skipped: u64 = c.skipped.values().sum();
        let (kept, rejected, skipped) = (
            c.kept.to_string(),
            c.rejected.to_string(),
            skipped.to_string(),
        );
        let by_reason: Vec<(String, String)> = c
            .skipped
            .iter()
            .map(|(r, n)| (format!("skipped.{r}"), n.to_string()))
            .collect();
        let mut fields: Vec<(&str, &str)> = vec![
            ("merchant", self.rules.merchant.slug()),
            ("kept", &kept),
            ("rejected", &rejected),
            ("skipped", &skipped),
        ];
        fields.extend(by_reason.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        log::info("merchant feed parsed", &fields);
    }
}

impl Parser for MerchantFeedParser {
    type Config = Config;

    fn open(config: Config) -> Result<Self, PluginError> {
        let rules = Rules {
            merchant: config.merchant,
            london: time::zone("Europe/London").map_err(PluginError::internal)?,
            utc: time::zone("UTC").map_err(PluginError::internal)?,
        };
        let input = if config.merchant.is_csv() {
            Input::Csv {
                stream: CsvStream::default(),
                columns: None,
                fatal: None,
            }
        } else {
            Input::Json(JsonMessages::new(config.max_bytes))
        };
        Ok(MerchantFeedParser {
            rules,
            input,
            counts: Counts::default(),
        })
    }

    fn push(&mut self, chunk: &[u8], out: &mut Batch) -> Result<(), PluginError> {
        let MerchantFeedParser {
            rules,
            input,
            counts,
        } = self;
        match input {
            Input::Csv {
                stream,
                columns,
                fatal,
            } => {
                if let Some(e) = fatal {
                    return Err(e.clone());
                }
                stream.push(chunk, |rec| {
                    csv_feeds::record(rules, columns, fatal, counts, rec, out)
                });
                fatal.clone().map_or(Ok(()), Err)
            }
            Input::Json(messages) => {
                messages.push(chunk, |m| json_feeds::message(rules, counts, m, out))
            }
        }
    }

    fn finish(&mut self, out: &mut Batch) -> Result<(), PluginError> {
        let MerchantFeedParser {
            rules,
            input,
            counts,
        } = self;
        match input {
            Input::Csv {
                stream,
                columns,
                fatal,
            } => {
                if fatal.is_none() {
                    stream.finish(|rec| csv_feeds::record(rules, columns, fatal, counts, rec, out));
                }
                if let Some(e) = fatal {
                    return Err(e.clone());
                }
                if columns.is_none() {
                    return Err(PluginError::malformed("no header row: the input is empty"));
                }
            }
            Input::Json(messages) => {
                messages.finish(|m| json_feeds::message(rules, counts, m, out))?
            }
        }
        self.log_summary();
        Ok(())
    }
}

/// `amount` (major units) in `currency`, truncated toward zero as Harmonia's
/// `to_minor` does; a bad code is blamed on the currency field.
fn amount(
    text: &str,
    amount_field: &str,
    currency: &str,
    currency_field: &str,
) -> Result<Money, FieldError> {
    let currency = currency.trim();
    money::exponent(currency).map_err(|e| e.on(currency_field))?;
    money::parse_major_truncating(text, currency).map_err(|e| e.on(amount_field))
}

/// Harmonia's ids are `hex(sha256(".".join(parts)))`.
fn sha256_joined(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b".");
        }
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// An id column or key: empty would collide on dedupe, so it is a reject.
fn id<'a>(value: &'a str, field: &str) -> Result<&'a str, FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "empty transaction id"));
    }
    Ok(value)
}

/// A merchant-side sale with the provider set.
fn sale(
    external_id: impl Into<String>,
    provider: &str,
    amount: Money,
    at: Timestamp,
) -> Transaction {
    let mut tx = Transaction::new(external_id, Side::Merchant, Kind::Sale, amount, at);
    tx.provider = Some(provider.to_string());
    tx
}

accord_plugin_sdk::export_parser!(MerchantFeedParser);

#[cfg(test)]
mod tests;
