//! Mastercard TGX2 settlement and refund files: fixed-width text, one record
//! per line (payment-feeds.md §3.2).
//!
//! Line 1 is a header and is always discarded; only `D` (detail) records
//! become transactions, every other record type is skipped. Fields are read at
//! Mastercard's 0-based offsets and tolerate short or long lines. Unlike
//! Harmonia, one unreadable detail record is a [`Reject`] and the rest of the
//! file is kept.

use accord_plugin_sdk::prelude::*;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Which file this source delivers; the file itself does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Feed {
    Settlement,
    Refund,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub feed: Feed,
}

/// Where a field sits in a detail record: its name (for rejects), 0-based
/// start and width.
struct Span(&'static str, usize, usize);

impl Span {
    fn name(&self) -> &'static str {
        self.0
    }
    fn get<'a>(&self, line: &'a str) -> &'a str {
        fixed::field(line, self.1, self.2)
    }
}

const TOKEN: Span = Span("token", 21, 30);
const DATE: Span = Span("date", 102, 8);
const MID: Span = Span("mid", 451, 15);
const LOCATION_ID: Span = Span("location_id", 500, 12);
const AGGREGATE_MERCHANT_ID: Span = Span("aggregate_merchant_id", 512, 6);
const AMOUNT: Span = Span("amount", 518, 12);
const TIME: Span = Span("time", 563, 4);
const AUTH_CODE: Span = Span("auth_code", 567, 6);
const TRANSACTION_ID: Span = Span("transaction_id", 761, 9);

pub struct Tgx2Parser {
    feed: Feed,
    london: time::Zone,
    lines: LineSplitter,
}

impl Tgx2Parser {
    fn line(&self, line: Line<'_>, out: &mut Batch) {
        // Line 1 is the header whatever it contains; only details carry payments.
        if line.number == 1 || line.bytes.first() != Some(&b'D') {
            return;
        }
        match self.detail(&line) {
            Ok(tx) => out.accept(line.number, tx),
            Err(e) => out.reject(e.reject(&line)),
        }
    }

    fn detail(&self, line: &Line<'_>) -> Result<Transaction, FieldError> {
        let text = line.text()?;
        let raw_id = TRANSACTION_ID.get(text);
        if raw_id.is_empty() {
            // Harmonia invents a random id here, which can never be
            // deduplicated or paired; the reference recommends rejecting.
            return Err(FieldError::new(
                TRANSACTION_ID.name(),
                "missing transaction id",
            ));
        }
        let date = DATE.get(text);
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FieldError::new(
                DATE.name(),
                format!("expected YYYYMMDD, got {date:?}"),
            ));
        }
        let hhmm = TIME.get(text);
        if !valid_hhmm(hhmm) {
            return Err(FieldError::new(
                TIME.name(),
                format!("expected HHmm, got {hhmm:?}"),
            ));
        }
        let occurred_at = self
            .london
            .parse_local(&format!("{date} {hhmm}"), "%Y%m%d %H%M")
            .map_err(|e| e.on(DATE.name()))?;

        let mut amount =
            money::parse_minor(AMOUNT.get(text), "GBP").map_err(|e| e.on(AMOUNT.name()))?;
        let kind = match self.feed {
            Feed::Settlement => Kind::Settlement,
            Feed::Refund => {
                // Harmonia keeps the sign as written; the reference recommends
                // refunds always negative, as for Visa.
                amount.minor_units = -amount.minor_units.saturating_abs();
                Kind::Refund
            }
        };

        let mid = merchant_id(MID.get(text));
        let token = TOKEN.get(text);
        // The timestamp is London local time, so its local date is the raw date.
        let london_date = format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..]);
        let key = settlement_key(raw_id, &london_date, mid, token);

        let mut tx = Transaction::new(
            format!("{raw_id}_{date}"),
            Side::Payment,
            kind,
            amount,
            occurred_at,
        )
        .with_merchant_id(mid, IdentifierKind::Primary)
        .with_merchant_id(
            merchant_id(LOCATION_ID.get(text)),
            IdentifierKind::Secondary,
        )
        .with_merchant_id(
            merchant_id(AGGREGATE_MERCHANT_ID.get(text)),
            IdentifierKind::Psimi,
        );
        tx.provider = Some("mastercard".to_string());
        tx.card_token = non_empty(token);
        tx.auth_code = non_empty(AUTH_CODE.get(text));
        tx.settlement_key = Some(key);
        Ok(tx)
    }
}

/// `"0"` is a placeholder for "no identifier" (reference §0.1 Recommendation);
/// empty values are dropped by `with_merchant_id`.
fn merchant_id(value: &str) -> &str {
    if value == "0" { "" } else { value }
}

fn valid_hhmm(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 4
        && b.iter().all(u8::is_ascii_digit)
        && (b[0] - b'0') * 10 + (b[1] - b'0') < 24
        && (b[2] - b'0') * 10 + (b[3] - b'0') < 60
}

/// Pairs this settlement with the Mastercard auth of the same purchase
/// (payment-feeds.md §4): both sides hash the same four values.
pub fn settlement_key(raw_id: &str, london_date: &str, mid: &str, token: &str) -> String {
    let mut h = Sha256::new();
    for (i, part) in ["mastercard", raw_id, london_date, mid, token]
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

impl Parser for Tgx2Parser {
    type Config = Config;

    fn open(config: Config) -> Result<Self, PluginError> {
        let london = time::zone("Europe/London").map_err(PluginError::internal)?;
        Ok(Tgx2Parser {
            feed: config.feed,
            london,
            lines: LineSplitter::new(),
        })
    }

    fn push(&mut self, chunk: &[u8], out: &mut Batch) -> Result<(), PluginError> {
        let mut lines = std::mem::take(&mut self.lines);
        lines.push(chunk, |line| self.line(line, out));
        self.lines = lines;
        Ok(())
    }

    fn finish(&mut self, out: &mut Batch) -> Result<(), PluginError> {
        let mut lines = std::mem::take(&mut self.lines);
        lines.finish(|line| self.line(line, out));
        self.lines = lines;
        Ok(())
    }
}

accord_plugin_sdk::export_parser!(Tgx2Parser);

#[cfg(test)]
mod tests {
    use super::*;
    use accord_plugin_sdk::testing::run_parser;

    const FIXTURE: &[u8] = include_bytes!("../fixtures/settlement.txt");
    const CHUNKS: [usize; 4] = [1, 7, 1000, 64 * 1024];

    /// A record of `len` spaces with `fields` written left-justified at their
    /// 0-based offsets, the way Mastercard (and Harmonia's generator) lay out TGX2.
    fn record(len: usize, fields: &[(usize, &str)]) -> String {
        let mut line = vec![b' '; len];
        for (start, value) in fields {
            line[*start..*start + value.len()].copy_from_slice(value.as_bytes());
        }
        String::from_utf8(line).expect("ASCII fields")
    }

    /// The synthetic detail record of payment-feeds.md §3.2.
    fn synthetic_detail() -> String {
        record(
            770,
            &[
                (0, "D"),
                (21, "mc-token-synth-001"),
                (102, "20240309"),
                (451, "MCMID0000012345"),
                (500, "LOC000000777"),
                (512, "AGG042"),
                (518, "000000002450"),
                (563, "1842"),
                (567, "731904"),
                (761, "A1B2C3D4E"),
            ],
        )
    }

    /// The fixture: header, three good details (the synthetic one first), a
    /// detail without transaction id, one with an impossible date, an unknown
    /// record type, a blank line and the trailer.
    fn fixture() -> String {
        let lines = [
            record(850, &[(0, "H20240310020000")]),
            synthetic_detail(),
            record(
                770,
                &[
                    (0, "D"),
                    (21, "mc-token-synth-002"),
                    (102, "20240310"),
                    (451, "MCMID0000012345"),
                    (512, "0"),
                    (518, "000000011199"),
                    (563, "0905"),
                    (567, "112233"),
                    (761, "F9E8D7C6B"),
                ],
            ),
            // Summer time: 23:30 London is 22:30 UTC, offset +01:00.
            record(
                800,
                &[
                    (0, "D"),
                    (21, "mc-token-synth-003"),
                    (102, "20240701"),
                    (451, "MCMID0000099999"),
                    (500, "LOC000000001"),
                    (518, "-00000000500"),
                    (563, "2330"),
                    (761, "Z00000001"),
                ],
            ),
            record(
                770,
                &[
                    (0, "D"),
                    (21, "mc-token-synth-004"),
                    (102, "20240309"),
                    (518, "000000000100"),
                    (563, "1200"),
                ],
            ),
            record(
                770,
                &[
                    (0, "D"),
                    (21, "mc-token-synth-005"),
                    (102, "20240231"),
                    (518, "000000000100"),
                    (563, "1200"),
                    (761, "BADDATE01"),
                ],
            ),
            "X this record type is not parsed".to_string(),
            String::new(),
            record(850, &[(0, "T000000005")]),
        ];
        lines.join("\n") + "\n"
    }

    #[test]
    fn synthetic_detail_matches_the_reference_hash() {
        let line = synthetic_detail();
        assert_eq!(line.len(), 770);
        assert_eq!(
            hex::encode(Sha256::digest(line.as_bytes())),
            "a5fa3898ff5b939dea87b34fd4cc8518ae3a4357432e8b21df3485713a5dc0d4"
        );
    }

    #[test]
    fn committed_fixture_is_the_generated_one() {
        assert_eq!(
            std::str::from_utf8(FIXTURE).unwrap(),
            fixture(),
            "run: cargo test -p accord-plugin-mastercard-tgx2 -- --ignored"
        );
    }

    /// Regenerates `fixtures/settlement.txt` after a change to `fixture()`.
    #[test]
    #[ignore = "tool: rewrites fixtures/settlement.txt; run by hand after changing the builder"]
    fn regenerate_fixture() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/settlement.txt");
        std::fs::write(path, fixture()).unwrap();
    }

    #[test]
    fn settlement_fixture_at_any_chunk_size() {
        for chunk in CHUNKS {
            let batch =
                run_parser::<Tgx2Parser>(r#"{"feed": "settlement"}"#, FIXTURE, chunk).unwrap();
            assert_eq!(batch.transactions.len(), 3, "chunk {chunk}");
            assert_eq!(batch.rejects.len(), 2, "chunk {chunk}");

            let p = &batch.transactions[0];
            assert_eq!(p.row, Some(2));
            let tx = &p.transaction;
            assert_eq!(tx.external_id, "A1B2C3D4E_20240309");
            assert_eq!(tx.side, Side::Payment);
            assert_eq!(tx.kind, Kind::Settlement);
            assert_eq!(tx.amount, Money::new(2450, "GBP"));
            assert_eq!(tx.occurred_at, Timestamp::new(1_710_009_720, 0, 0)); // 2024-03-09T18:42:00+00:00
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-03-09T18:42:00+00:00"
            );
            assert!(tx.time_known);
            assert_eq!(tx.provider.as_deref(), Some("mastercard"));
            assert_eq!(
                tx.merchant_ids,
                vec![
                    MerchantIdentifier {
                        value: "MCMID0000012345".into(),
                        kind: IdentifierKind::Primary
                    },
                    MerchantIdentifier {
                        value: "LOC000000777".into(),
                        kind: IdentifierKind::Secondary
                    },
                    MerchantIdentifier {
                        value: "AGG042".into(),
                        kind: IdentifierKind::Psimi
                    },
                ]
            );
            assert_eq!(tx.card_token.as_deref(), Some("mc-token-synth-001"));
            assert_eq!(tx.auth_code.as_deref(), Some("731904"));
            assert_eq!(tx.card_first_six, None);
            assert_eq!(tx.card_last_four, None);
            assert_eq!(
                tx.settlement_key.as_deref(),
                Some("bc603eabbc3298f754704573d386573d05ae6d96776b5ee5ce8a897ca42cdb12")
            );

            let tx = &batch.transactions[1].transaction;
            assert_eq!(batch.transactions[1].row, Some(3));
            assert_eq!(tx.external_id, "F9E8D7C6B_20240310");
            assert_eq!(tx.amount, Money::new(11199, "GBP"));
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2024-03-10T09:05:00+00:00"
            );
            // Empty location id and a "0" aggregate id are both dropped.
            assert_eq!(
                tx.merchant_ids,
                vec![MerchantIdentifier {
                    value: "MCMID0000012345".into(),
                    kind: IdentifierKind::Primary
                }]
            );

            let tx = &batch.transactions[2].transaction;
            assert_eq!(tx.external_id, "Z00000001_20240701");
            // A settlement file keeps the sign as written.
            assert_eq!(tx.amount, Money::new(-500, "GBP"));
            assert_eq!(tx.occurred_at, Timestamp::new(1_719_873_000, 0, 3600));
            assert_eq!(tx.auth_code, None);

            let missing_id = &batch.rejects[0];
            assert_eq!(missing_id.row, Some(5));
            assert_eq!(missing_id.field.as_deref(), Some("transaction_id"));
            assert_eq!(missing_id.reason, "missing transaction id");
            let header_and_three = 850 + 1 + 770 + 1 + 770 + 1 + 800 + 1;
            assert_eq!(missing_id.byte_offset, Some(header_and_three));
            assert!(missing_id.raw.starts_with("D"));

            let bad_date = &batch.rejects[1];
            assert_eq!(bad_date.row, Some(6));
            assert_eq!(bad_date.field.as_deref(), Some("date"));
        }
    }

    #[test]
    fn refund_feed_is_always_negative() {
        for chunk in CHUNKS {
            let batch = run_parser::<Tgx2Parser>(r#"{"feed": "refund"}"#, FIXTURE, chunk).unwrap();
            let amounts: Vec<i64> = batch
                .transactions
                .iter()
                .map(|p| p.transaction.amount.minor_units)
                .collect();
            assert_eq!(amounts, [-2450, -11199, -500]);
            assert!(
                batch
                    .transactions
                    .iter()
                    .all(|p| p.transaction.kind == Kind::Refund)
            );
        }
    }

    #[test]
    fn crlf_and_short_lines_are_tolerated() {
        let short =
            "D                    tok                                                 20240309";
        let input = format!("H\r\n{}\r\n{short}\r\n", synthetic_detail());
        let batch =
            run_parser::<Tgx2Parser>(r#"{"feed": "settlement"}"#, input.as_bytes(), 5).unwrap();
        assert_eq!(batch.transactions.len(), 1);
        assert_eq!(
            batch.transactions[0].transaction.external_id,
            "A1B2C3D4E_20240309"
        );
        // The short line ends before the transaction id.
        assert_eq!(batch.rejects[0].field.as_deref(), Some("transaction_id"));
    }

    #[test]
    fn bad_time_and_amount_name_their_field() {
        let base = |time: &str, amount: &str| {
            record(
                770,
                &[
                    (0, "D"),
                    (102, "20240309"),
                    (518, amount),
                    (563, time),
                    (761, "A1B2C3D4E"),
                ],
            )
        };
        let input = format!(
            "H\n{}\n{}\n",
            base("2460", "000000000100"),
            base("1200", "00000000x100")
        );
        let batch =
            run_parser::<Tgx2Parser>(r#"{"feed": "settlement"}"#, input.as_bytes(), 64).unwrap();
        let fields: Vec<_> = batch.rejects.iter().map(|r| r.field.as_deref()).collect();
        assert_eq!(fields, [Some("time"), Some("amount")]);
    }

    #[test]
    fn unknown_feed_is_invalid_config() {
        let err = run_parser::<Tgx2Parser>(r#"{"feed": "auth"}"#, b"", 1)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::InvalidConfig);
    }
}
