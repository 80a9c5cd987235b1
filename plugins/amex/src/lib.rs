//! American Express JSON messages: auth and settlement (payment-feeds.md §2).
//!
//! The input is newline-delimited JSON (one message per line, parsed as it
//! streams in) or one JSON array of messages. Each message becomes one
//! transaction or one [`Reject`] naming the missing or bad key; the rest of
//! the input goes on. Amounts are read from their decimal text, never
//! through a float, and truncated as Harmonia does.
//!
//! This parser does not know merchants: suppressing auths of spotting and
//! streaming merchants (§2.3) is the host's job after identification.

use accord_plugin_sdk::json::{
    JsonFeed, JsonMessages, Message, object, optional, required, required_non_empty,
};
use accord_plugin_sdk::prelude::*;
use serde::Deserialize;
use serde_json::Value;

/// Which queue the messages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Feed {
    Auth,
    Settlement,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub feed: Feed,
    /// Largest JSON-array document buffered before giving up.
    #[serde(default = "accord_plugin_sdk::json::default_max_bytes")]
    pub max_bytes: u64,
}

/// The per-feed keys of the field table (§2.1).
struct Keys {
    id: &'static str,
    amount: &'static str,
    time: &'static str,
    merchant: &'static str,
    token: &'static str,
    approval_code: &'static str,
}

const AUTH: Keys = Keys {
    id: "transaction_id",
    amount: "transaction_amount",
    time: "transaction_time",
    merchant: "merchant_number",
    token: "cm_alias",
    approval_code: "approval_code",
};
const SETTLEMENT: Keys = Keys {
    id: "transactionId",
    amount: "transactionAmount",
    time: "transactionDate",
    merchant: "merchantNumber",
    token: "cardToken",
    approval_code: "approvalCode",
};

/// Settlement only: masked PAN `NNNNNNXXXXXNNNN`.
const DPAN: &str = "dpan";

pub struct AmexParser {
    feed: Feed,
    /// Auth times: MST, a fixed UTC−07:00 with no DST.
    mst: time::Zone,
    /// Settlement times: BST-aware London.
    london: time::Zone,
    input: JsonMessages,
}

impl AmexParser {
    fn decode(&self, message: Message<'_>, out: &mut Batch) {
        message.deliver(out, |v| self.transaction(v).map(Some));
    }

    fn transaction(&self, message: &Value) -> Result<Transaction, FieldError> {
        let m = object(message)?;
        let (keys, zone, kind) = match self.feed {
            Feed::Auth => (&AUTH, &self.mst, Kind::Authorisation),
            Feed::Settlement => (&SETTLEMENT, &self.london, Kind::Settlement),
        };
        let id = required_non_empty(m, keys.id)?;
        // Any currency in the message (`UKL`, `826`) is ignored: always GBP.
        let amount = money::parse_major_truncating(&required(m, keys.amount)?, "GBP")
            .map_err(|e| e.on(keys.amount))?;
        let occurred_at = zone
            .parse_instant(&required(m, keys.time)?)
            .map_err(|e| e.on(keys.time))?;
        let merchant = required(m, keys.merchant)?;
        let token = required(m, keys.token)?;
        let approval_code = optional(m, keys.approval_code)?;

        let mut tx = Transaction::new(id.as_ref(), Side::Payment, kind, amount, occurred_at)
            .with_merchant_id(merchant.trim(), IdentifierKind::Primary);
        tx.provider = Some("amex".to_string());
        tx.card_token = non_empty(&token);
        // Amex's code is an approval code, never an auth code (§0, §2.3).
        tx.approval_code = approval_code.and_then(non_empty);
        // The raw id pairs auth and settlement; no hashing (§4).
        tx.settlement_key = Some(id.into_owned());
        if self.feed == Feed::Settlement
            && let Some(dpan) = optional(m, DPAN)?.and_then(non_empty)
        {
            let (first_six, last_four) = split_dpan(&dpan).map_err(|e| e.on(DPAN))?;
            tx.card_first_six = Some(first_six.to_string());
            tx.card_last_four = Some(last_four.to_string());
        }
        Ok(tx)
    }
}

/// `374245XXXXX1007` → (`374245`, `1007`). Harmonia splits on `XXXXX` and
/// crashes on anything else; the reference recommends rejecting a value that
/// does not split into exactly a 6- and a 4-character part.
pub fn split_dpan(dpan: &str) -> Result<(&str, &str), FieldError> {
    let mut parts = dpan.split("XXXXX");
    match (parts.next(), parts.next(), parts.next()) {
        (Some(first), Some(last), None)
            if first.chars().count() == 6 && last.chars().count() == 4 =>
        {
            Ok((first, last))
        }
        _ => Err(FieldError::reason(format!(
            "{dpan:?} is not a masked PAN of the form NNNNNNXXXXXNNNN"
        ))),
    }
}

impl Parser for AmexParser {
    type Config = Config;

    fn open(config: Config) -> Result<Self, PluginError> {
        Ok(AmexParser {
            feed: config.feed,
            mst: time::zone("MST").map_err(PluginError::internal)?,
            london: time::zone("Europe/London").map_err(PluginError::internal)?,
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

impl JsonFeed for AmexParser {
    fn input(&mut self) -> &mut JsonMessages {
        &mut self.input
    }
    fn message(&self, message: Message<'_>, out: &mut Batch) {
        self.decode(message, out)
    }
}

accord_plugin_sdk::export_parser!(AmexParser);

#[cfg(test)]
mod tests {
    use super::*;
    use accord_plugin_sdk::testing::run_parser;

    const AUTH_NDJSON: &[u8] = include_bytes!("../fixtures/auth.ndjson");
    const SETTLEMENT_JSON: &[u8] = include_bytes!("../fixtures/settlement.json");
    const CHUNKS: [usize; 4] = [1, 7, 300, 64 * 1024];

    fn ids(tx: &Transaction) -> Vec<(&str, IdentifierKind)> {
        tx.merchant_ids
            .iter()
            .map(|m| (m.value.as_str(), m.kind))
            .collect()
    }

    #[test]
    fn dpan_splits_into_first_six_and_last_four() {
        assert_eq!(split_dpan("374245XXXXX1007"), Ok(("374245", "1007")));
        for bad in [
            "374245XXXX1007",
            "37424XXXXX1007",
            "374245XXXXX100",
            "374245XXXXX1007XXXXX1",
            "3742451234561007",
        ] {
            assert!(split_dpan(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn auth_messages_line_by_line() {
        for chunk in CHUNKS {
            let batch =
                run_parser::<AmexParser>(r#"{"feed": "auth"}"#, AUTH_NDJSON, chunk).unwrap();
            let rows: Vec<_> = batch.transactions.iter().map(|p| p.row).collect();
            assert_eq!(rows, [Some(1), Some(2), Some(4)], "chunk {chunk}");

            // §2.2 auth example and the §5 vector.
            let tx = &batch.transactions[0].transaction;
            assert_eq!(tx.external_id, "QU1YLVNZTlRILTAwMDM");
            assert_eq!(tx.side, Side::Payment);
            assert_eq!(tx.kind, Kind::Authorisation);
            assert_eq!(tx.provider.as_deref(), Some("amex"));
            assert_eq!(tx.amount, Money::new(2450, "GBP"), "24.5 as a JSON number");
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-03-09T11:42:10-07:00"
            );
            // = 2024-03-09T18:42:10Z
            assert_eq!(tx.occurred_at.epoch_seconds, 1_710_009_730);
            assert_eq!(ids(tx), [("9449001234", IdentifierKind::Primary)]);
            assert_eq!(tx.card_token.as_deref(), Some("amx-alias-7Qp2"));
            assert_eq!(tx.approval_code.as_deref(), Some("004512"));
            assert_eq!(tx.auth_code, None);
            assert_eq!(tx.settlement_key.as_deref(), Some("QU1YLVNZTlRILTAwMDM"));
            assert_eq!(
                (tx.card_first_six.as_ref(), tx.card_last_four.as_ref()),
                (None, None)
            );

            // MST has no DST: mid-summer is still -07:00. String amount, truncated.
            let tx = &batch.transactions[1].transaction;
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-07-01T12:00:00-07:00"
            );
            assert_eq!(tx.amount, Money::new(1000, "GBP"));
            assert_eq!(tx.approval_code, None, "older messages omit it");

            // An explicit offset is kept; integer amount; empty approval code.
            let tx = &batch.transactions[2].transaction;
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-03-09T11:42:10+01:00"
            );
            assert_eq!(tx.amount, Money::new(700, "GBP"));
            assert_eq!(tx.approval_code, None);

            assert_eq!(batch.rejects.len(), 3);
            let r = &batch.rejects[0];
            assert_eq!(r.row, Some(3));
            assert_eq!(r.field.as_deref(), Some("merchant_number"));
            assert_eq!(r.reason, "missing required key");
            assert!(r.byte_offset.is_some_and(|o| o > 0));
            let r = &batch.rejects[1];
            assert_eq!(r.row, Some(5));
            assert_eq!(r.field.as_deref(), Some("transaction_time"));
            let r = &batch.rejects[2];
            assert_eq!(r.row, Some(6));
            assert_eq!(r.field, None);
            assert!(r.reason.starts_with("invalid JSON"), "{}", r.reason);
        }
    }

    #[test]
    fn settlement_array_pairs_with_the_auth() {
        for chunk in CHUNKS {
            let batch =
                run_parser::<AmexParser>(r#"{"feed": "settlement"}"#, SETTLEMENT_JSON, chunk)
                    .unwrap();
            assert_eq!(batch.transactions.len(), 2, "chunk {chunk}");

            let tx = &batch.transactions[0].transaction;
            assert_eq!(batch.transactions[0].row, Some(1));
            assert_eq!(tx.external_id, "QU1YLVNZTlRILTAwMDM");
            assert_eq!(tx.kind, Kind::Settlement);
            assert_eq!(tx.provider.as_deref(), Some("amex"));
            assert_eq!(tx.amount, Money::new(2450, "GBP"));
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-03-09T18:42:10+00:00"
            );
            assert_eq!(ids(tx), [("9449001234", IdentifierKind::Primary)]);
            assert_eq!(tx.card_token.as_deref(), Some("amx-alias-7Qp2"));
            assert_eq!(tx.card_first_six.as_deref(), Some("374245"));
            assert_eq!(tx.card_last_four.as_deref(), Some("1007"));
            assert_eq!(tx.approval_code.as_deref(), Some("004512"));
            assert_eq!(tx.auth_code, None);
            // Same key as the auth example: the two collapse.
            assert_eq!(tx.settlement_key.as_deref(), Some("QU1YLVNZTlRILTAwMDM"));

            // London in summer is +01:00; empty dpan leaves the digits unknown.
            let tx = &batch.transactions[1].transaction;
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-07-01T19:00:00+01:00"
            );
            assert_eq!(tx.occurred_at.epoch_seconds, 1_719_856_800);
            assert_eq!(tx.amount, Money::new(1000, "GBP"));
            assert_eq!(
                (tx.card_first_six.as_ref(), tx.card_last_four.as_ref()),
                (None, None)
            );
            assert_eq!(tx.approval_code, None);

            assert_eq!(batch.rejects.len(), 2);
            let r = &batch.rejects[0];
            assert_eq!((r.row, r.byte_offset), (Some(3), None));
            assert_eq!(r.field.as_deref(), Some("dpan"));
            assert!(r.raw.contains("QU1YLVNZTlRILTAwMDg"), "{}", r.raw);
            let r = &batch.rejects[1];
            assert_eq!(r.row, Some(4));
            assert_eq!(r.field.as_deref(), Some("transactionId"));
        }
    }

    #[test]
    fn auth_keys_are_not_settlement_keys() {
        // A settlement message on the auth feed lacks every auth key.
        let batch = run_parser::<AmexParser>(r#"{"feed": "auth"}"#, SETTLEMENT_JSON, 64).unwrap();
        assert!(batch.transactions.is_empty());
        assert_eq!(batch.rejects.len(), 4);
        assert_eq!(batch.rejects[0].field.as_deref(), Some("transaction_id"));
    }

    #[test]
    fn broken_array_fails_the_input() {
        let err = run_parser::<AmexParser>(r#"{"feed": "auth"}"#, b" [{\"a\": 1}, ", 3)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::MalformedInput);
    }

    #[test]
    fn array_over_max_bytes_fails_the_input() {
        let err = run_parser::<AmexParser>(
            r#"{"feed": "settlement", "max_bytes": 10}"#,
            b"[{}, {}, {}, {}]",
            4,
        )
        .err()
        .unwrap();
        assert_eq!(err.code, ErrorCode::MalformedInput);
    }

    #[test]
    fn config_needs_a_known_feed() {
        for config in [
            r#"{}"#,
            r#"{"feed": "refund"}"#,
            r#"{"feed": "auth", "zone": "UTC"}"#,
        ] {
            let err = run_parser::<AmexParser>(config, b"", 1).err().unwrap();
            assert_eq!(err.code, ErrorCode::InvalidConfig, "{config}");
        }
    }

    #[test]
    fn empty_input_is_empty_batch() {
        let batch = run_parser::<AmexParser>(r#"{"feed": "auth"}"#, b" \n\n", 1).unwrap();
        assert!(batch.transactions.is_empty() && batch.rejects.is_empty());
    }
}
