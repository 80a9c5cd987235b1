//! Visa VOP JSON messages: auth, settlement and refund (payment-feeds.md §1).
//!
//! The input is either one JSON array of messages (buffered until `finish`,
//! capped by `max_bytes`) or newline-delimited JSON, one message per line,
//! parsed line by line as it streams in. Each message becomes one transaction
//! or one [`Reject`] naming the missing or bad key; the rest of the input goes
//! on. Amounts are converted from their decimal text, never through a float.

use std::borrow::Cow;
use std::collections::BTreeMap;

use accord_plugin_sdk::json::{JsonFeed, JsonMessages, Message, object, text};
use accord_plugin_sdk::prelude::*;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Which queue the messages come from; the messages do not say reliably.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Feed {
    Auth,
    Settlement,
    Refund,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub feed: Feed,
    /// Zone of auth timestamps that carry no offset, for merchants not listed
    /// in `zone_by_merchant_id`.
    #[serde(default = "gmt")]
    pub auth_zone: String,
    /// Primary MID (`MerchantCardAcceptorId`) -> zone of its naive auth
    /// timestamps. Harmonia picks the zone from the merchant it resolved;
    /// a parser cannot know merchants, so the operator maps their MIDs.
    #[serde(default)]
    pub zone_by_merchant_id: BTreeMap<String, String>,
    /// Largest JSON-array document buffered before giving up.
    #[serde(default = "accord_plugin_sdk::json::default_max_bytes")]
    pub max_bytes: u64,
}

fn gmt() -> String {
    "GMT".to_string()
}

pub struct VopParser {
    feed: Feed,
    auth_zone: time::Zone,
    zone_by_mid: BTreeMap<String, time::Zone>,
    gmt: time::Zone,
    input: JsonMessages,
}

/// Key prefix and the per-feed keys of the field table (§1.2).
struct Keys {
    id: &'static str,
    amount: &'static str,
    time: &'static str,
    primary: &'static str,
    secondary: &'static str,
    psimi: &'static str,
    auth_code: &'static str,
}

const AUTH: Keys = Keys {
    id: "Transaction.VipTransactionId",
    amount: "Transaction.TransactionAmount",
    time: "Transaction.TimeStampYYMMDD",
    primary: "Transaction.MerchantCardAcceptorId",
    secondary: "Transaction.VisaStoreId",
    psimi: "Transaction.VisaMerchantId",
    auth_code: "Transaction.AuthCode",
};
const SETTLEMENT: Keys = Keys {
    amount: "Transaction.SettlementAmount",
    time: "Transaction.MerchantDateTimeGMT",
    ..AUTH
};
const REFUND: Keys = Keys {
    id: "ReturnTransaction.VipTransactionId",
    amount: "ReturnTransaction.Amount",
    time: "ReturnTransaction.DateTime",
    primary: "ReturnTransaction.CardAcceptorIdCode",
    secondary: "ReturnTransaction.VisaStoreId",
    psimi: "ReturnTransaction.VisaMerchantId",
    auth_code: "ReturnTransaction.AuthCode",
};

/// `M/D/YYYY h:m:s AM`: chrono reads unpadded numbers for these specifiers.
const REFUND_TIME_FORMAT: &str = "%m/%d/%Y %I:%M:%S %p";

impl VopParser {
    fn keys(&self) -> &'static Keys {
        match self.feed {
            Feed::Auth => &AUTH,
            Feed::Settlement => &SETTLEMENT,
            Feed::Refund => &REFUND,
        }
    }

    /// One message: a transaction, or a reject naming its record and offset.
    fn decode(&self, message: Message<'_>, out: &mut Batch) {
        message.deliver(out, |v| self.transaction(v).map(Some));
    }

    fn transaction(&self, message: &Value) -> Result<Transaction, FieldError> {
        let message = object(message)?;
        let keys = self.keys();
        let card_token = match message.get("ExternalUserId") {
            Some(v) => text(v)
                .ok_or_else(|| FieldError::new("ExternalUserId", "not a string or number"))?,
            None => return Err(FieldError::new("ExternalUserId", "missing required key")),
        };
        let elements = match message.get("MessageElementsCollection") {
            Some(Value::Array(items)) => Elements(items),
            Some(_) => return Err(FieldError::new("MessageElementsCollection", "not an array")),
            None => {
                return Err(FieldError::new(
                    "MessageElementsCollection",
                    "missing required key",
                ));
            }
        };

        let id = elements.required(keys.id)?;
        if id.trim().is_empty() {
            // An empty id would collide with every other empty id on dedupe.
            return Err(FieldError::new(keys.id, "empty transaction id"));
        }
        let primary = elements.required(keys.primary)?;
        let secondary = elements.required(keys.secondary)?;
        let psimi = elements.required(keys.psimi)?;

        let amount_text = elements.required(keys.amount)?;
        let mut amount =
            money::parse_major_truncating(&amount_text, "GBP").map_err(|e| e.on(keys.amount))?;
        let time_text = elements.required(keys.time)?;
        let occurred_at = match self.feed {
            Feed::Auth => {
                let zone = self
                    .zone_by_mid
                    .get(primary.as_ref())
                    .unwrap_or(&self.auth_zone);
                zone.parse_instant(&time_text)
            }
            Feed::Settlement => self.gmt.parse_instant(&time_text),
            Feed::Refund => self.gmt.parse_local(&time_text, REFUND_TIME_FORMAT),
        }
        .map_err(|e| e.on(keys.time))?;
        let kind = match self.feed {
            Feed::Auth => Kind::Authorisation,
            Feed::Settlement => Kind::Settlement,
            Feed::Refund => {
                // Refunds are negative whatever sign the message carries.
                amount.minor_units = -amount.minor_units.saturating_abs();
                Kind::Refund
            }
        };

        let mut tx = Transaction::new(id.as_ref(), Side::Payment, kind, amount, occurred_at)
            .with_merchant_id(primary.as_ref(), IdentifierKind::Primary)
            .with_merchant_id(merchant_id(&secondary), IdentifierKind::Secondary)
            .with_merchant_id(merchant_id(&psimi), IdentifierKind::Psimi);
        tx.provider = Some("visa".to_string());
        tx.card_token = non_empty(&card_token);
        tx.auth_code = elements.optional(keys.auth_code).and_then(non_empty);
        tx.settlement_key = Some(settlement_key(&id));
        Ok(tx)
    }
}

/// `MessageElementsCollection`: `{"Key", "Value"}` pairs.
struct Elements<'a>(&'a [Value]);

impl<'a> Elements<'a> {
    /// The first element whose `Key` is exactly `key`, as text; `None` when
    /// absent, an error when its value is neither a string nor a number.
    fn find(&self, key: &str) -> Option<Result<Cow<'a, str>, FieldError>> {
        let item = self
            .0
            .iter()
            .find(|item| item.get("Key").and_then(Value::as_str) == Some(key))?;
        Some(match item.get("Value") {
            Some(v) => {
                text(v).ok_or_else(|| FieldError::new(key, "value is not a string or number"))
            }
            None => Err(FieldError::new(key, "element has no Value")),
        })
    }

    fn required(&self, key: &str) -> Result<Cow<'a, str>, FieldError> {
        self.find(key)
            .unwrap_or_else(|| Err(FieldError::new(key, "missing required key")))
    }

    /// Absent, empty and unreadable all mean "not given" for optional keys.
    fn optional(&self, key: &str) -> Option<Cow<'a, str>> {
        self.find(key).and_then(Result::ok)
    }
}

/// `"0"` means "no identifier" (payment-feeds.md §0.1 Recommendation); empty
/// values are dropped by `with_merchant_id`.
fn merchant_id(value: &str) -> &str {
    let v = value.trim();
    if v == "0" { "" } else { v }
}

/// Pairs an auth with its settlement: both carry the same VipTransactionId.
pub fn settlement_key(vip_transaction_id: &str) -> String {
    hex::encode(Sha256::digest(
        format!("visa.{vip_transaction_id}").as_bytes(),
    ))
}

fn zone(name: &str, what: &str) -> Result<time::Zone, PluginError> {
    time::zone(name).map_err(|e| PluginError::invalid_config(format!("{what}: {e}")))
}

impl Parser for VopParser {
    type Config = Config;

    fn open(config: Config) -> Result<Self, PluginError> {
        let auth_zone = zone(&config.auth_zone, "auth_zone")?;
        let zone_by_mid = config
            .zone_by_merchant_id
            .iter()
            .map(|(mid, name)| {
                Ok((
                    mid.clone(),
                    zone(name, &format!("zone_by_merchant_id.{mid}"))?,
                ))
            })
            .collect::<Result<_, PluginError>>()?;
        Ok(VopParser {
            feed: config.feed,
            auth_zone,
            zone_by_mid,
            gmt: zone("GMT", "GMT")?,
            input: JsonMessages::new(config.max_bytes),
        })
    }

    fn push(&mut self, chunk: &[u8], out: &mut Batch) -> Result<(), PluginError> {
        self.push_json(chunk, out)
    }

    fn finish(&mut self, out: &mut Batch) -> Result<(), PluginError> {
        self.finish_json(out)
    }
}

impl JsonFeed for VopParser {
    fn input(&mut self) -> &mut JsonMessages {
        &mut self.input
    }
    fn message(&self, message: Message<'_>, out: &mut Batch) {
        self.decode(message, out)
    }
}

accord_plugin_sdk::export_parser!(VopParser);

#[cfg(test)]
mod tests {
    use super::*;
    use accord_plugin_sdk::testing::run_parser;

    const AUTH_NDJSON: &[u8] = include_bytes!("../fixtures/auth.ndjson");
    const SETTLEMENT_JSON: &[u8] = include_bytes!("../fixtures/settlement.json");
    const REFUND_NDJSON: &[u8] = include_bytes!("../fixtures/refund.ndjson");
    const CHUNKS: [usize; 4] = [1, 7, 300, 64 * 1024];

    fn ids(tx: &Transaction) -> Vec<(&str, IdentifierKind)> {
        tx.merchant_ids
            .iter()
            .map(|m| (m.value.as_str(), m.kind))
            .collect()
    }

    #[test]
    fn settlement_key_vectors() {
        assert_eq!(
            settlement_key("VFhOLVNZTlRILTAwMDE"),
            "0cf08ef0efca1a91c25c4516715b1d9a3e6e308c927a7c9a5c4f398cd717e7e7"
        );
        assert_eq!(
            settlement_key("UkVGLVNZTlRILTAwMDI"),
            "8effb3f2282c768ec42338ae6cf1939dada204c7b0e488acadcbefd416bdb8e3"
        );
    }

    #[test]
    fn auth_messages_line_by_line() {
        let config =
            r#"{"feed": "auth", "zone_by_merchant_id": {"CAID77001234": "Europe/London"}}"#;
        for chunk in CHUNKS {
            let batch = run_parser::<VopParser>(config, AUTH_NDJSON, chunk).unwrap();
            assert_eq!(batch.transactions.len(), 4, "chunk {chunk}");

            let p = &batch.transactions[0];
            assert_eq!(p.row, Some(1));
            let tx = &p.transaction;
            assert_eq!(tx.external_id, "VFhOLVNZTlRILTAwMDE");
            assert_eq!(tx.side, Side::Payment);
            assert_eq!(tx.kind, Kind::Authorisation);
            assert_eq!(tx.provider.as_deref(), Some("visa"));
            assert_eq!(tx.amount, Money::new(2450, "GBP"));
            // Naive time in the merchant's zone, Europe/London: +00:00 in March.
            assert_eq!(tx.occurred_at, Timestamp::new(1_710_009_730, 0, 0));
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
            assert_eq!(tx.card_last_four, None, "PanLastFour is ignored");
            assert_eq!(
                tx.settlement_key.as_deref(),
                Some("0cf08ef0efca1a91c25c4516715b1d9a3e6e308c927a7c9a5c4f398cd717e7e7")
            );

            // A London merchant in summer: the naive time gets +01:00.
            let tx = &batch.transactions[1].transaction;
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-07-01T12:00:00+01:00"
            );
            // Amount as a JSON number, truncated: 10.005 -> 1000.
            assert_eq!(tx.amount, Money::new(1000, "GBP"));
            // AuthCode absent, "0" psimi dropped.
            assert_eq!(tx.auth_code, None);
            assert_eq!(
                ids(tx),
                [
                    ("CAID77001234", IdentifierKind::Primary),
                    ("51234567", IdentifierKind::Secondary)
                ]
            );

            // An unmapped merchant: auth_zone (GMT) applies; an explicit offset is kept.
            let tx = &batch.transactions[2].transaction;
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-07-01T12:00:00+00:00"
            );
            assert_eq!(tx.amount, Money::new(2450, "GBP"), "24.5 as a JSON number");
            let tx = &batch.transactions[3].transaction;
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-07-01T12:00:00-04:00"
            );

            let rows: Vec<_> = batch.transactions.iter().map(|p| p.row).collect();
            assert_eq!(rows, [Some(1), Some(2), Some(3), Some(5)]);

            assert_eq!(batch.rejects.len(), 3);
            let r = &batch.rejects[0];
            assert_eq!(r.row, Some(4));
            assert_eq!(r.field.as_deref(), Some("Transaction.TransactionAmount"));
            assert_eq!(r.reason, "missing required key");
            assert!(r.byte_offset.is_some_and(|o| o > 0));
            // The raw excerpt is bounded; this message is longer.
            assert!(
                r.raw.starts_with(r#"{"CardId": "VFhOLVNZT""#) && r.raw.ends_with('…'),
                "{}",
                r.raw
            );
            let r = &batch.rejects[1];
            assert_eq!(r.row, Some(6));
            assert_eq!(r.field, None);
            assert!(r.reason.starts_with("invalid JSON"), "{}", r.reason);
            let r = &batch.rejects[2];
            assert_eq!(r.row, Some(7));
            assert_eq!(r.field.as_deref(), Some("ExternalUserId"));
        }
    }

    #[test]
    fn settlement_array_collapses_onto_the_auth() {
        for chunk in CHUNKS {
            let batch =
                run_parser::<VopParser>(r#"{"feed": "settlement"}"#, SETTLEMENT_JSON, chunk)
                    .unwrap();
            assert_eq!(batch.transactions.len(), 1, "chunk {chunk}");
            let tx = &batch.transactions[0].transaction;
            assert_eq!(batch.transactions[0].row, Some(1));
            assert_eq!(tx.external_id, "VFhOLVNZTlRILTAwMDE");
            assert_eq!(tx.kind, Kind::Settlement);
            assert_eq!(tx.amount, Money::new(2450, "GBP"));
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-03-09T18:42:10+00:00"
            );
            assert_eq!(
                tx.settlement_key.as_deref(),
                Some("0cf08ef0efca1a91c25c4516715b1d9a3e6e308c927a7c9a5c4f398cd717e7e7")
            );

            let r = &batch.rejects[0];
            assert_eq!(r.row, Some(2));
            assert_eq!(r.byte_offset, None);
            assert_eq!(r.field.as_deref(), Some("Transaction.MerchantDateTimeGMT"));
        }
    }

    #[test]
    fn refund_is_negative_with_a_us_style_time() {
        for chunk in CHUNKS {
            let batch =
                run_parser::<VopParser>(r#"{"feed": "refund"}"#, REFUND_NDJSON, chunk).unwrap();
            assert_eq!(batch.transactions.len(), 2, "chunk {chunk}");
            let tx = &batch.transactions[0].transaction;
            assert_eq!(tx.external_id, "UkVGLVNZTlRILTAwMDI");
            assert_eq!(tx.kind, Kind::Refund);
            assert_eq!(tx.amount, Money::new(-2450, "GBP"));
            assert_eq!(tx.occurred_at, Timestamp::new(1_710_061_507, 0, 0));
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-03-10T09:05:07+00:00"
            );
            assert_eq!(tx.auth_code, None);
            assert_eq!(ids(tx), [("CAID77001234", IdentifierKind::Primary)]);
            assert_eq!(
                tx.settlement_key.as_deref(),
                Some("8effb3f2282c768ec42338ae6cf1939dada204c7b0e488acadcbefd416bdb8e3")
            );
            // Already negative in the message: stays negative; PM is 12-hour.
            let tx = &batch.transactions[1].transaction;
            assert_eq!(tx.amount, Money::new(-1000, "GBP"));
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-12-31T23:59:59+00:00"
            );

            assert_eq!(batch.rejects.len(), 1);
            assert_eq!(batch.rejects[0].row, Some(3));
            assert_eq!(
                batch.rejects[0].field.as_deref(),
                Some("ReturnTransaction.DateTime")
            );
        }
    }

    #[test]
    fn broken_array_fails_the_input() {
        let err = run_parser::<VopParser>(r#"{"feed": "auth"}"#, b"  [{\"a\": 1}, ", 3)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::MalformedInput);
    }

    #[test]
    fn array_over_max_bytes_fails_the_input() {
        let err = run_parser::<VopParser>(
            r#"{"feed": "auth", "max_bytes": 10}"#,
            b"[{}, {}, {}, {}]",
            4,
        )
        .err()
        .unwrap();
        assert_eq!(err.code, ErrorCode::MalformedInput);
    }

    #[test]
    fn unknown_zone_is_invalid_config() {
        let config = r#"{"feed": "auth", "zone_by_merchant_id": {"M1": "Mars/Olympus"}}"#;
        let err = run_parser::<VopParser>(config, b"", 1).err().unwrap();
        assert_eq!(err.code, ErrorCode::InvalidConfig);
        assert!(
            err.message.contains("zone_by_merchant_id.M1"),
            "{}",
            err.message
        );
    }

    #[test]
    fn empty_input_is_empty_batch() {
        let batch = run_parser::<VopParser>(r#"{"feed": "auth"}"#, b" \n\n", 1).unwrap();
        assert!(batch.transactions.is_empty() && batch.rejects.is_empty());
    }
}
