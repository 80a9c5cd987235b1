//! The host's own types: what `pipeline`, `store` and `api` speak.
//!
//! These mirror the WIT records (`wit/v0.1.0`) but belong to the host: the
//! `plugins` module converts at its boundary, so no generated binding type
//! reaches the rest of the daemon. Money is integer minor units of an ISO 4217
//! currency; times are `DateTime<FixedOffset>` (an instant plus the offset it
//! was observed in).

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Payment,
    Merchant,
    Standalone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Sale,
    Refund,
    Authorisation,
    Settlement,
    Transfer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    Primary,
    Secondary,
    Psimi,
    Store,
}

macro_rules! str_enum {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok(Self::$v),)*
                    other => Err(format!("unknown {} `{other}`", stringify!($t).to_lowercase())),
                }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(Side { Payment => "payment", Merchant => "merchant", Standalone => "standalone" });
str_enum!(Kind {
    Sale => "sale",
    Refund => "refund",
    Authorisation => "authorisation",
    Settlement => "settlement",
    Transfer => "transfer",
});
str_enum!(IdentifierKind {
    Primary => "primary",
    Secondary => "secondary",
    Psimi => "psimi",
    Store => "store",
});

/// An exact amount: `minor_units` of `currency` (ISO 4217 alpha-3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub minor_units: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MerchantIdentifier {
    pub value: String,
    pub kind: IdentifierKind,
}

/// The canonical transaction (see `wit/v0.1.0/deps/types/types.wit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub external_id: String,
    pub side: Side,
    pub kind: Kind,
    pub amount: Money,
    pub occurred_at: DateTime<FixedOffset>,
    pub time_known: bool,
    pub provider: Option<String>,
    pub merchant_ids: Vec<MerchantIdentifier>,
    pub card_first_six: Option<String>,
    pub card_last_four: Option<String>,
    pub card_token: Option<String>,
    pub auth_code: Option<String>,
    pub approval_code: Option<String>,
    pub settlement_key: Option<String>,
    pub account_id: Option<String>,
    pub reference_id: Option<String>,
    pub payer_account: Option<String>,
    pub beneficiary_account: Option<String>,
    pub extras: Vec<(String, String)>,
}

impl Transaction {
    /// The optional text fields, in the `transactions` table's column order
    /// (provider first).
    pub fn optional_texts(&self) -> [&Option<String>; 11] {
        [
            &self.provider,
            &self.card_first_six,
            &self.card_last_four,
            &self.card_token,
            &self.auth_code,
            &self.approval_code,
            &self.settlement_key,
            &self.account_id,
            &self.reference_id,
            &self.payer_account,
            &self.beneficiary_account,
        ]
    }

    /// A sale of 1.00 GBP at the start of 2026 with nothing else set
    /// (tests fill in what they need).
    #[cfg(test)]
    pub fn example(external_id: &str) -> Transaction {
        Transaction {
            external_id: external_id.into(),
            side: Side::Payment,
            kind: Kind::Sale,
            amount: Money {
                minor_units: 100,
                currency: "GBP".into(),
            },
            occurred_at: DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .expect("a valid time"),
            time_known: true,
            provider: None,
            merchant_ids: vec![],
            card_first_six: None,
            card_last_four: None,
            card_token: None,
            auth_code: None,
            approval_code: None,
            settlement_key: None,
            account_id: None,
            reference_id: None,
            payer_account: None,
            beneficiary_account: None,
            extras: vec![],
        }
    }
}

/// A row a parser could not turn into a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    pub row: Option<u64>,
    pub byte_offset: Option<u64>,
    pub field: Option<String>,
    pub reason: String,
    pub raw: String,
}

/// A transaction and the input row it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub row: Option<u64>,
    pub transaction: Transaction,
}

/// What a parser produced for (part of) one input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedBatch {
    pub transactions: Vec<Parsed>,
    pub rejects: Vec<Reject>,
}

impl ParsedBatch {
    pub fn append(&mut self, mut other: ParsedBatch) {
        self.transactions.append(&mut other.transactions);
        self.rejects.append(&mut other.rejects);
    }
}

/// Which plugin build produced a result; persisted beside every result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginIdentity {
    pub name: String,
    pub version: String,
    /// sha256 of the `.wasm`, hex.
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    Parser,
    Matcher,
    Router,
}

str_enum!(PluginKind { Parser => "parser", Matcher => "matcher", Router => "router" });

/// The cardholder behind a payment, from the card registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cardholder {
    pub card_token: String,
    pub first_six: Option<String>,
    pub last_four: Option<String>,
    pub loyalty_id: Option<String>,
}

/// One payment and its candidate merchant-side transactions. The
/// candidates are shared (a record is often a candidate of several payments,
/// and the engine's cache holds them): a group is built without copying
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchGroup {
    pub payment: Transaction,
    pub cardholder: Option<Cardholder>,
    pub candidates: Vec<std::sync::Arc<Transaction>>,
}

/// A matcher's answer for one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchDecision {
    pub chosen: Option<usize>,
    pub reason: String,
    /// 0..=100.
    pub confidence: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    Matched,
    Spotted,
    Forced,
    Unmatched,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub id: String,
    pub kind: MatchKind,
    pub payment: Transaction,
    pub merchant: Option<Transaction>,
    pub merchant_slug: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteItem {
    Transaction(Transaction),
    Matched(Matched),
}

/// Where a router sends one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub destination: String,
    pub payload: Vec<u8>,
    pub content_type: String,
    pub idempotency_key: String,
    pub not_before: Option<DateTime<FixedOffset>>,
}
