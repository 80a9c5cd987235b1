//! Mastercard auth JSON messages (payment-feeds.md §3.1).
//!
//! The input is newline-delimited JSON (one message per line, parsed as it
//! streams in) or one JSON array of messages. Each message becomes one
//! authorisation or one [`Reject`] naming the missing or bad key. The
//! settlement key hashes the same four values as the TGX2 settlement parser
//! (`plugins/mastercard-tgx2`), with the London local date, so an auth and
//! its settlement collapse even around midnight.

use accord_plugin_sdk::json::{
    JsonFeed, JsonMessages, Message, object, required, required_non_empty,
};
use accord_plugin_sdk::prelude::*;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Largest JSON-array document buffered before giving up.
    #[serde(default = "accord_plugin_sdk::json::default_max_bytes")]
    pub max_bytes: u64,
}

pub struct MastercardAuthParser {
    london: time::Zone,
    input: JsonMessages,
}

impl MastercardAuthParser {
    fn decode(&self, message: Message<'_>, out: &mut Batch) {
        message.deliver(out, |v| self.transaction(v).map(Some));
    }

    fn transaction(&self, message: &Value) -> Result<Transaction, FieldError> {
        let m = object(message)?;
        // Harmonia invents a random id (and so a random settlement key) when
        // this is missing: such a row can never be deduplicated or paired.
        // The reference recommends rejecting it.
        let third_party_id = required_non_empty(m, "third_party_id")?;
        let time_text = required(m, "time")?;
        let occurred_at = self
            .london
            .parse_instant(&time_text)
            .map_err(|e| e.on("time"))?;
        let currency = required(m, "currency_code")?;
        let amount = money::parse_major_truncating(&required(m, "amount")?, currency.trim())
            .map_err(|e| {
                // A bad code makes the amount unreadable too; blame the code.
                let field = if money::exponent(currency.trim()).is_err() {
                    "currency_code"
                } else {
                    "amount"
                };
                e.on(field)
            })?;
        let mid = required(m, "mid")?;
        let mid = mid.trim();
        let token = required(m, "payment_card_token")?;

        // Harmonia: third_party_id + "_" + the first ten characters of `time`
        // without dashes, i.e. the date as written (parsing succeeded, so
        // they are a valid YYYY-MM-DD).
        let written_date: String = time_text.trim()[..10].replace('-', "");
        let external_id = format!("{third_party_id}_{written_date}");
        let london_date = to_london_date(&occurred_at, self.london)?;

        let mut tx = Transaction::new(
            external_id,
            Side::Payment,
            Kind::Authorisation,
            amount,
            occurred_at,
        )
        .with_merchant_id(mid, IdentifierKind::Primary);
        tx.provider = Some("mastercard".to_string());
        tx.card_token = non_empty(&token);
        tx.settlement_key = Some(settlement_key(&third_party_id, &london_date, mid, &token));
        Ok(tx)
    }
}

/// `YYYY-MM-DD` of `ts` in London, the date TGX2 files carry.
fn to_london_date(ts: &Timestamp, london: time::Zone) -> Result<String, FieldError> {
    let dt = time::to_datetime(ts).map_err(|e| e.on("time"))?;
    Ok(dt
        .with_timezone(&london.tz())
        .date_naive()
        .format("%Y-%m-%d")
        .to_string())
}

/// `hex(sha256("mastercard." + third_party_id + "." + YYYY-MM-DD + "." + mid
/// + "." + token))` (payment-feeds.md §4), the same as the TGX2 parser's.
pub fn settlement_key(third_party_id: &str, london_date: &str, mid: &str, token: &str) -> String {
    let mut h = Sha256::new();
    for (i, part) in ["mastercard", third_party_id, london_date, mid, token]
        .iter()
        .enumerate()
    {
        if i > 0 {
            h.update(b".");
        }
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

impl Parser for MastercardAuthParser {
    type Config = Config;

    fn open(config: Config) -> Result<Self, PluginError> {
        Ok(MastercardAuthParser {
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

impl JsonFeed for MastercardAuthParser {
    fn input(&mut self) -> &mut JsonMessages {
        &mut self.input
    }
    fn message(&self, message: Message<'_>, out: &mut Batch) {
        self.decode(message, out)
    }
}

accord_plugin_sdk::export_parser!(MastercardAuthParser);

#[cfg(test)]
mod tests {
    use super::*;
    use accord_plugin_sdk::testing::run_parser;

    const AUTH_NDJSON: &[u8] = include_bytes!("../fixtures/auth.ndjson");
    const CHUNKS: [usize; 4] = [1, 7, 300, 64 * 1024];
    const EXAMPLE_KEY: &str = "bc603eabbc3298f754704573d386573d05ae6d96776b5ee5ce8a897ca42cdb12";

    /// The fixture's messages as one pretty JSON array.
    fn as_array(ndjson: &[u8]) -> Vec<u8> {
        let items: Vec<&str> = std::str::from_utf8(ndjson)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        format!("[\n  {}\n]\n", items.join(",\n  ")).into_bytes()
    }

    #[test]
    fn settlement_key_vector() {
        assert_eq!(
            settlement_key(
                "A1B2C3D4E",
                "2024-03-09",
                "MCMID0000012345",
                "mc-token-synth-001"
            ),
            EXAMPLE_KEY
        );
    }

    fn check(batch: &Batch, with_offsets: bool) {
        let rows: Vec<_> = batch.transactions.iter().map(|p| p.row).collect();
        assert_eq!(rows, [Some(1), Some(2), Some(3)]);

        // §3.1 example and the §5 vectors.
        let tx = &batch.transactions[0].transaction;
        assert_eq!(tx.external_id, "A1B2C3D4E_20240309");
        assert_eq!(tx.side, Side::Payment);
        assert_eq!(tx.kind, Kind::Authorisation);
        assert_eq!(tx.provider.as_deref(), Some("mastercard"));
        assert_eq!(tx.amount, Money::new(2450, "GBP"));
        assert_eq!(
            time::format_iso(&tx.occurred_at),
            "2024-03-09T18:42:10+00:00"
        );
        assert_eq!(tx.merchant_ids.len(), 1);
        assert_eq!(tx.merchant_ids[0].value, "MCMID0000012345");
        assert_eq!(tx.merchant_ids[0].kind, IdentifierKind::Primary);
        assert_eq!(tx.card_token.as_deref(), Some("mc-token-synth-001"));
        assert_eq!(tx.auth_code, None);
        assert_eq!(tx.approval_code, None);
        assert_eq!(tx.settlement_key.as_deref(), Some(EXAMPLE_KEY));

        // BST naive time; numeric amount truncated; currency from the message.
        let tx = &batch.transactions[1].transaction;
        assert_eq!(tx.external_id, "F9E8D7C6B_20240701");
        assert_eq!(
            time::format_iso(&tx.occurred_at),
            "2024-07-01T23:30:00+01:00"
        );
        assert_eq!(tx.amount, Money::new(1000, "EUR"));
        assert_eq!(
            tx.settlement_key.as_deref(),
            Some(
                settlement_key(
                    "F9E8D7C6B",
                    "2024-07-01",
                    "MCMID0000099999",
                    "mc-token-synth-002"
                )
                .as_str()
            )
        );

        // Offset kept; the id uses the date as written, the key the London
        // date (04:30 on the 10th in London), as TGX2 would carry it.
        let tx = &batch.transactions[2].transaction;
        assert_eq!(tx.external_id, "Z00000001_20240309");
        assert_eq!(
            time::format_iso(&tx.occurred_at),
            "2024-03-09T23:30:00-05:00"
        );
        assert_eq!(tx.amount, Money::new(2450, "GBP"));
        assert_eq!(
            tx.settlement_key.as_deref(),
            Some(
                settlement_key(
                    "Z00000001",
                    "2024-03-10",
                    "MCMID0000012345",
                    "mc-token-synth-003"
                )
                .as_str()
            )
        );

        let got: Vec<_> = batch
            .rejects
            .iter()
            .map(|r| (r.row, r.field.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (Some(4), Some("third_party_id")),
                (Some(5), Some("third_party_id")),
                (Some(6), Some("currency_code")),
                (Some(7), Some("time")),
            ]
        );
        assert_eq!(batch.rejects[0].reason, "missing required key");
        assert!(
            batch.rejects[3].reason.contains("does not exist"),
            "{}",
            batch.rejects[3].reason
        );
        assert!(
            batch
                .rejects
                .iter()
                .all(|r| r.byte_offset.is_some() == with_offsets)
        );
    }

    #[test]
    fn ndjson_at_any_chunk_size() {
        for chunk in CHUNKS {
            check(
                &run_parser::<MastercardAuthParser>("{}", AUTH_NDJSON, chunk).unwrap(),
                true,
            );
        }
    }

    #[test]
    fn json_array_at_any_chunk_size() {
        let array = as_array(AUTH_NDJSON);
        for chunk in CHUNKS {
            check(
                &run_parser::<MastercardAuthParser>("", &array, chunk).unwrap(),
                false,
            );
        }
    }

    #[test]
    fn broken_array_fails_the_input() {
        let err = run_parser::<MastercardAuthParser>("{}", b"[{\"a\": 1}", 3)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::MalformedInput);
    }

    #[test]
    fn unknown_config_key_is_refused() {
        let err = run_parser::<MastercardAuthParser>(r#"{"feed": "auth"}"#, b"", 1)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::InvalidConfig);
    }
}
