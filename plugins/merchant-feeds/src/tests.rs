//! Fixture tests per feed: every kept row's values, every skip rule, every
//! reject, at several chunk sizes.

use super::*;
use accord_plugin_sdk::testing::run_parser;

const ICELAND: &[u8] = include_bytes!("../fixtures/iceland.csv");
const WASABI: &[u8] = include_bytes!("../fixtures/wasabi.csv");
const ITSU: &[u8] = include_bytes!("../fixtures/itsu.csv");
const TGI_FRIDAYS: &[u8] = include_bytes!("../fixtures/tgi-fridays.csv");
const STONEGATE: &[u8] = include_bytes!("../fixtures/stonegate.ndjson");
const COSTA: &[u8] = include_bytes!("../fixtures/costa.json");
const CHUNKS: [usize; 4] = [1, 7, 300, 64 * 1024];

fn config(merchant: &str) -> String {
    format!(r#"{{"merchant": "{merchant}"}}"#)
}

/// Every chunk size gives the same batch; returns it with the counts.
fn parse(merchant: &str, input: &[u8]) -> (Batch, Counts) {
    let mut first: Option<(Batch, Counts)> = None;
    for chunk in CHUNKS {
        let mut parser =
            MerchantFeedParser::open(accord_plugin_sdk::parse_config(&config(merchant)).unwrap())
                .unwrap();
        let mut out = Batch::new();
        for c in input.chunks(chunk) {
            parser.push(c, &mut out).unwrap();
        }
        parser.finish(&mut out).unwrap();
        let got = (out, parser.counts().clone());
        // The SDK's harness agrees with the hand-driven run.
        assert_eq!(
            run_parser::<MerchantFeedParser>(&config(merchant), input, chunk).unwrap(),
            got.0,
            "{merchant} chunk {chunk}"
        );
        match &first {
            None => first = Some(got),
            Some(f) => assert_eq!(&got, f, "{merchant} chunk {chunk}"),
        }
    }
    first.unwrap()
}

fn tx(batch: &Batch, row: u64) -> &Transaction {
    &batch
        .transactions
        .iter()
        .find(|p| p.row == Some(row))
        .unwrap_or_else(|| panic!("no transaction for row {row}"))
        .transaction
}

fn rows(batch: &Batch) -> Vec<u64> {
    batch.transactions.iter().filter_map(|p| p.row).collect()
}

fn rejects(batch: &Batch) -> Vec<(Option<u64>, Option<&str>)> {
    batch
        .rejects
        .iter()
        .map(|r| (r.row, r.field.as_deref()))
        .collect()
}

fn mids(tx: &Transaction) -> Vec<(&str, IdentifierKind)> {
    tx.merchant_ids
        .iter()
        .map(|m| (m.value.as_str(), m.kind))
        .collect()
}

fn iso(tx: &Transaction) -> String {
    time::format_iso(&tx.occurred_at)
}

fn skipped(pairs: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
    pairs.iter().copied().collect()
}

fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[test]
fn iceland() {
    let (b, counts) = parse("iceland-bonus-card", ICELAND);
    assert_eq!(rows(&b), [2, 7, 8]);

    // Reference row 1.
    let t = tx(&b, 2);
    assert_eq!(t.external_id, "7f1d2c3b-0a9e-4d6f-8b21-5c4e3a2f1b00");
    assert_eq!((t.side, t.kind), (Side::Merchant, Kind::Sale));
    assert_eq!(t.provider.as_deref(), Some("visa"));
    assert_eq!(t.amount, Money::new(2450, "GBP"));
    assert_eq!(iso(t), "2024-03-09T18:42:10+00:00");
    assert!(t.time_known);
    assert_eq!(mids(t), [("ICE-STORE-0457", IdentifierKind::Primary)]);
    assert_eq!(t.card_first_six.as_deref(), Some("454321"));
    assert_eq!(t.card_last_four.as_deref(), Some("4821"));
    assert_eq!(t.auth_code.as_deref(), Some("731904"));
    assert!(t.extras.is_empty());

    // BST, truncated amount, quoted store id.
    let t = tx(&b, 7);
    assert_eq!(t.provider.as_deref(), Some("amex"));
    assert_eq!(t.amount, Money::new(1000, "GBP"));
    assert_eq!(iso(t), "2024-07-01T12:00:00+01:00");
    assert_eq!(mids(t), [("ICE-STORE-0999", IdentifierKind::Primary)]);
    let t = tx(&b, 8);
    assert_eq!(t.provider.as_deref(), Some("mastercard"));
    assert_eq!(t.amount, Money::new(320, "GBP"));

    assert_eq!(
        rejects(&b),
        [
            (Some(9), Some("TransactionAmountValue")),
            (Some(10), Some("TransactionCardSchemeId")),
        ]
    );
    assert!(b.rejects[0].byte_offset.is_some_and(|o| o > 0));
    assert!(b.rejects[0].raw.contains("12,50"), "{}", b.rejects[0].raw);
    // DECLINE / decline (the second with an unreadable amount, never
    // converted), Diners and lower-case "visa".
    assert_eq!(
        counts,
        Counts {
            kept: 3,
            rejected: 2,
            skipped: skipped(&[("declined", 2), ("unknown_card_scheme", 2)]),
        }
    );
}

#[test]
fn wasabi() {
    let (b, counts) = parse("wasabi-club", WASABI);
    assert_eq!(rows(&b), [2, 6, 7]);

    // Reference row 1.
    let t = tx(&b, 2);
    assert_eq!(t.external_id, "0000A0000000123456789");
    assert_eq!(t.provider.as_deref(), Some("visa"));
    assert_eq!(t.amount, Money::new(2450, "GBP"));
    assert_eq!(iso(t), "2024-03-09T18:42:10+00:00");
    assert_eq!(mids(t), [("WAS-EFT-31337", IdentifierKind::Primary)]);
    assert_eq!(t.card_first_six.as_deref(), Some("454321"));
    assert_eq!(t.card_last_four.as_deref(), Some("4821"));
    assert_eq!(t.auth_code.as_deref(), Some("731904"));

    // The sic Visa name; BST; "Authorisation Ok" = 0 is not a filter.
    let t = tx(&b, 6);
    assert_eq!(t.provider.as_deref(), Some("visa"));
    assert_eq!(t.amount, Money::new(500, "GBP"));
    assert_eq!(iso(t), "2024-07-01T12:00:00+01:00");
    assert_eq!(t.card_first_six.as_deref(), Some("475129"));
    assert_eq!(t.card_last_four.as_deref(), Some("0019"));
    // Compliments Card, no card number, no auth code; 3.999 truncated.
    let t = tx(&b, 7);
    assert_eq!(t.provider.as_deref(), Some("mastercard"));
    assert_eq!(t.amount, Money::new(399, "GBP"));
    assert_eq!(
        (t.card_first_six.as_deref(), t.card_last_four.as_deref()),
        (None, None)
    );
    assert_eq!(t.auth_code, None);

    assert_eq!(
        rejects(&b),
        [(Some(8), Some("Date")), (Some(9), Some("Time"))]
    );
    // Discover and lower-case "visa"; the NUL receipt.
    assert_eq!(
        counts,
        Counts {
            kept: 3,
            rejected: 2,
            skipped: skipped(&[("nul_receipt", 1), ("unknown_card_type", 2)]),
        }
    );
}

#[test]
fn itsu() {
    let (b, counts) = parse("itsu", ITSU);
    assert_eq!(rows(&b), [2, 5, 9]);

    // Reference row 1: the location id is a store identifier for the host.
    let t = tx(&b, 2);
    assert_eq!(t.external_id, "017/007/48213");
    assert_eq!(t.provider.as_deref(), Some("visa"));
    assert_eq!(t.amount, Money::new(2450, "GBP"));
    assert_eq!(iso(t), "2024-03-09T18:42:10+00:00");
    assert_eq!(mids(t), [("17", IdentifierKind::Store)]);
    assert_eq!(t.card_first_six, None);
    assert_eq!(t.card_last_four.as_deref(), Some("4821"));
    assert_eq!(t.auth_code.as_deref(), Some("731904"));

    // Exactly 500p is kept; a naive time is UTC, even in summer.
    let t = tx(&b, 5);
    assert_eq!(t.provider.as_deref(), Some("amex"));
    assert_eq!(t.amount, Money::new(500, "GBP"));
    assert_eq!(iso(t), "2024-07-01T12:00:00+00:00");
    assert_eq!(t.card_first_six.as_deref(), Some("374245"));
    assert_eq!(mids(t), [("18", IdentifierKind::Store)]);
    // No location id: stored without identifiers (can never match).
    let t = tx(&b, 9);
    assert_eq!(t.amount, Money::new(600, "GBP"));
    assert!(t.merchant_ids.is_empty());

    // Row 7's card type ("VISA") would skip it, but its amount is converted
    // first, as in Harmonia.
    assert_eq!(
        rejects(&b),
        [(Some(7), Some("amount")), (Some(8), Some("date"))]
    );
    // 4.99 and -12.00 below 500p; "Visa".
    assert_eq!(
        counts,
        Counts {
            kept: 3,
            rejected: 2,
            skipped: skipped(&[("below_minimum_amount", 2), ("unknown_card_type", 1)]),
        }
    );
}

#[test]
fn tgi_fridays() {
    let (b, counts) = parse("tgi-fridays", TGI_FRIDAYS);
    assert_eq!(rows(&b), [2, 4, 5, 6, 10]);

    // Reference row 1.
    let t = tx(&b, 2);
    assert_eq!(
        t.external_id,
        "1a211a2509bb9fb3d125c7a5af4dff38460df5c4e1152694e72426c66f7675c5"
    );
    assert_eq!(t.provider.as_deref(), Some("visa"));
    assert_eq!(t.amount, Money::new(2450, "GBP"));
    assert_eq!(iso(t), "2024-03-09T18:40:00+00:00");
    assert_eq!(t.extras, [("amount".to_string(), "21.50".to_string())]);
    assert_eq!(mids(t), [("TGIMID-0042", IdentifierKind::Primary)]);
    assert_eq!(t.card_first_six.as_deref(), Some("454321"));
    assert_eq!(t.card_last_four.as_deref(), Some("4821"));
    assert_eq!(t.auth_code.as_deref(), Some("731904"));

    // Prefix 5; amount and gratuity truncated separately; offset kept; the
    // id hashes the raw strings.
    let t = tx(&b, 4);
    assert_eq!(t.provider.as_deref(), Some("mastercard"));
    assert_eq!(t.amount, Money::new(1000 + 99, "GBP"));
    assert_eq!(iso(t), "2024-07-01T12:00:00+01:00");
    assert_eq!(t.extra("amount"), Some("10.005"));
    assert_eq!(
        t.external_id,
        sha("2024-07-01T12:00:00+01:00.TGIMID-0042.10.005.TGI-REC-5514.0.999")
    );
    // Name map: "EDC/Maestro"; "americanexpress" with a 5-char first six.
    assert_eq!(tx(&b, 5).provider.as_deref(), Some("mastercard"));
    assert_eq!(tx(&b, 5).amount, Money::new(900, "GBP"));
    assert_eq!(tx(&b, 6).provider.as_deref(), Some("amex"));
    assert_eq!(tx(&b, 6).card_first_six.as_deref(), Some("37424"));
    // Naive summer time is London.
    assert_eq!(iso(tx(&b, 10)), "2024-07-01T19:00:00+01:00");

    assert_eq!(rejects(&b), [(Some(9), Some("gratuity_amount"))]);
    // "Gift Card", "american experience" (601100 falls through), "AX".
    assert_eq!(
        counts,
        Counts {
            kept: 5,
            rejected: 1,
            skipped: skipped(&[("unknown_card_type", 3)]),
        }
    );
}

#[test]
fn stonegate() {
    let (b, counts) = parse("stonegate", STONEGATE);
    assert_eq!(rows(&b), [1, 2, 3]);

    // Reference example and its id vector.
    let t = tx(&b, 1);
    assert_eq!(
        t.external_id,
        "7daa2816921b7313dee3aab14819f069e2d98ef84c2ec68f881b7ddf408136ab"
    );
    assert_eq!(
        t.external_id,
        sha("2024-03-09T18:42:10+00:00.731904.ACC-778812.24.5.SG-POS-000981")
    );
    assert_eq!((t.side, t.kind), (Side::Merchant, Kind::Sale));
    assert_eq!(t.provider.as_deref(), Some("visa"));
    assert_eq!(t.amount, Money::new(2450, "GBP"));
    assert_eq!(iso(t), "2024-03-09T18:42:10+00:00");
    assert_eq!(mids(t), [("SG-LOC-0981", IdentifierKind::Store)]);
    assert_eq!(t.card_first_six.as_deref(), Some("454321"));
    assert_eq!(t.card_last_four.as_deref(), Some("4821"));
    assert_eq!(t.auth_code.as_deref(), Some("731904"));
    assert_eq!(
        t.extras,
        [
            ("account_id".to_string(), "ACC-778812".to_string()),
            ("transaction_id".to_string(), "SG-POS-000981".to_string()),
        ]
    );

    // Typed envelope with a naive time (London, BST); float 24.0 hashes as
    // Python's "24.0"; "MC" by name with a null first six.
    let t = tx(&b, 2);
    assert_eq!(t.provider.as_deref(), Some("mastercard"));
    assert_eq!(t.amount, Money::new(2400, "GBP"));
    assert_eq!(iso(t), "2024-07-01T19:00:00+01:00");
    assert_eq!(t.card_first_six, None);
    assert_eq!(
        t.external_id,
        sha("2024-07-01T19:00:00+01:00.112233.ACC-1.24.0.SG-POS-000982")
    );
    // Integer amount hashes as "12"; microseconds and Z as isoformat writes them.
    let t = tx(&b, 3);
    assert_eq!(t.provider.as_deref(), Some("visa"));
    assert_eq!(t.amount, Money::new(1200, "GBP"));
    assert_eq!(
        t.external_id,
        sha("2024-03-09T18:42:10.123456+00:00.223344.ACC-2.12.SG-POS-000983")
    );

    assert_eq!(
        rejects(&b),
        [
            (Some(6), Some("metadata.AccountID")),
            (Some(7), Some("date"))
        ]
    );
    assert!(b.rejects.iter().all(|r| r.byte_offset.is_some()));
    // "Diners" with 601100 (its bad amount never converted), "AX".
    assert_eq!(
        counts,
        Counts {
            kept: 3,
            rejected: 2,
            skipped: skipped(&[("unknown_card_type", 2)]),
        }
    );
}

#[test]
fn costa() {
    let (b, counts) = parse("costa", COSTA);
    assert_eq!(rows(&b), [1, 2]);

    // Reference example.
    let t = tx(&b, 1);
    assert_eq!(t.external_id, "COSTA-TX-2024-000451");
    assert_eq!((t.side, t.kind), (Side::Merchant, Kind::Sale));
    assert_eq!(t.provider.as_deref(), Some("mastercard"));
    assert_eq!(t.amount, Money::new(385, "GBP"));
    assert_eq!(iso(t), "2024-03-09T08:15:30+00:00");
    assert_eq!(mids(t), [("COSTA-MID-7781", IdentifierKind::Primary)]);
    assert_eq!(t.card_first_six.as_deref(), Some("512345"));
    assert_eq!(t.card_last_four.as_deref(), Some("0077"));
    assert_eq!(t.auth_code.as_deref(), Some("208816"));
    assert_eq!(t.extra("metadata"), Some(r#"{"basket_ref":"B-99812"}"#));
    assert_eq!(
        t.extra("items_ordered"),
        Some(r#"{"products":[{"id":"7","productUuid":"2b7c8e90-0000-4000-8000-000000000007"}]}"#)
    );

    // Envelope with a naive time: UTC, also in summer; 10.005 truncated.
    let t = tx(&b, 2);
    assert_eq!(t.provider.as_deref(), Some("visa"));
    assert_eq!(t.amount, Money::new(1000, "GBP"));
    assert_eq!(iso(t), "2024-07-01T12:00:00+00:00");
    assert_eq!(t.auth_code, None);
    assert!(t.extras.is_empty());

    // "Visa" is not a known card type (Recommendation); a missing amount.
    assert_eq!(
        rejects(&b),
        [
            (Some(3), Some("payment_card_type")),
            (Some(4), Some("amount"))
        ]
    );
    assert!(b.rejects.iter().all(|r| r.byte_offset.is_none()));
    assert_eq!(
        counts,
        Counts {
            kept: 2,
            rejected: 2,
            skipped: BTreeMap::new(),
        }
    );
}

#[test]
fn json_feeds_take_ndjson_or_an_array() {
    // Costa as NDJSON, Stonegate as an array: same transactions.
    let costa: serde_json::Value = serde_json::from_slice(COSTA).unwrap();
    let ndjson: String = costa
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{m}\n"))
        .collect();
    let (b, _) = parse("costa", ndjson.as_bytes());
    let (a, _) = parse("costa", COSTA);
    let strip = |b: &Batch| b.transactions.clone();
    assert_eq!(strip(&a), strip(&b));

    let lines: Vec<&str> = std::str::from_utf8(STONEGATE)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .collect();
    let array = format!("[{}]", lines.join(",\n"));
    let (a, _) = parse("stonegate", array.as_bytes());
    let (b, _) = parse("stonegate", STONEGATE);
    assert_eq!(strip(&a), strip(&b));
}

#[test]
fn header_missing_a_column_fails_the_file() {
    let input = b"TransactionId,TransactionAuthCode\nX,123456\n";
    for chunk in CHUNKS {
        let err = run_parser::<MerchantFeedParser>(&config("iceland-bonus-card"), input, chunk)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::MalformedInput);
        assert!(
            err.message.contains("\"TransactionCardFirst6\""),
            "{}",
            err.message
        );
    }
}

#[test]
fn empty_csv_fails_and_empty_json_is_empty() {
    let err = run_parser::<MerchantFeedParser>(&config("itsu"), b"", 1)
        .err()
        .unwrap();
    assert_eq!(err.code, ErrorCode::MalformedInput);
    let b = run_parser::<MerchantFeedParser>(&config("costa"), b"\n \n", 1).unwrap();
    assert!(b.transactions.is_empty() && b.rejects.is_empty());
}

#[test]
fn header_only_csv_is_empty() {
    let b = run_parser::<MerchantFeedParser>(
        &config("itsu"),
        &ITSU[..ITSU.iter().position(|&c| c == b'\n').unwrap() + 1],
        5,
    )
    .unwrap();
    assert!(b.transactions.is_empty() && b.rejects.is_empty());
}

#[test]
fn config_needs_a_known_merchant() {
    for config in [
        r#"{}"#,
        r#"{"merchant": "slim-chickens"}"#,
        r#"{"merchant": "Itsu"}"#,
        r#"{"merchant": "itsu", "zone": "UTC"}"#,
    ] {
        let err = run_parser::<MerchantFeedParser>(config, b"", 1)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::InvalidConfig, "{config}");
    }
}
