//! Store tests on real PostgreSQL: each `#[sqlx::test]` gets a fresh,
//! migrated database (DATABASE_URL names the server).

use chrono::{DateTime, FixedOffset, TimeZone as _};
use futures::TryStreamExt as _;
use sqlx::PgPool;

use super::*;
use crate::domain::{
    IdentifierKind, Kind, MerchantIdentifier, Money, Parsed, ParsedBatch, PluginIdentity, Reject,
    Side, Transaction,
};

fn plugin() -> PluginIdentity {
    PluginIdentity {
        name: "csv".into(),
        version: "0.1.0".into(),
        sha256: "ab".repeat(32),
    }
}

fn at(offset_secs: i32, rfc3339_local: &str) -> DateTime<FixedOffset> {
    let offset = FixedOffset::east_opt(offset_secs).unwrap();
    let naive =
        chrono::NaiveDateTime::parse_from_str(rfc3339_local, "%Y-%m-%d %H:%M:%S%.f").unwrap();
    offset.from_local_datetime(&naive).unwrap()
}

fn tx(external_id: &str, minor: i64) -> Transaction {
    Transaction {
        external_id: external_id.into(),
        side: Side::Merchant,
        kind: Kind::Sale,
        amount: Money {
            minor_units: minor,
            currency: "EUR".into(),
        },
        occurred_at: at(3600, "2024-03-01 12:34:56.789"),
        time_known: true,
        provider: Some("acme".into()),
        ..Transaction::example(external_id)
    }
}

fn batch(rows: &[(u64, Transaction)], rejects: Vec<Reject>) -> ParsedBatch {
    ParsedBatch {
        transactions: rows
            .iter()
            .map(|(row, t)| Parsed {
                row: Some(*row),
                transaction: t.clone(),
            })
            .collect(),
        rejects,
    }
}

fn reject(row: u64, reason: &str, raw: &str) -> Reject {
    Reject {
        row: Some(row),
        byte_offset: Some(row * 10),
        field: Some("amount".into()),
        reason: reason.into(),
        raw: raw.into(),
    }
}

async fn receive(store: &Store, source: &str, body: &[u8]) -> Received {
    let mut r = store
        .begin_receive(NewImport {
            source: source.into(),
            channel: Channel::Http,
            original_name: Some("file.csv".into()),
        })
        .await
        .unwrap();
    r.write_chunk(body).await.unwrap();
    r.finish().await.unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn receive_streams_chunks_and_detects_duplicates_by_sha(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    // 2.5 chunks, written in slices that straddle chunk boundaries.
    let body: Vec<u8> = (0..CHUNK_SIZE * 5 / 2)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut r = store
        .begin_receive(NewImport {
            source: "iceland".into(),
            channel: Channel::Directory,
            original_name: Some("a.csv".into()),
        })
        .await
        .unwrap();
    for piece in body.chunks(CHUNK_SIZE / 3 + 17) {
        r.write_chunk(piece).await.unwrap();
    }
    let first = r.finish().await.unwrap();
    assert_eq!(first.size, body.len() as u64);
    assert_eq!(first.duplicate_of, None);
    {
        use sha2::Digest as _;
        assert_eq!(first.sha256, hex::encode(sha2::Sha256::digest(&body)));
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM import_chunks").await, 3);

    // Byte for byte back out, chunk by chunk.
    let chunks: Vec<bytes::Bytes> = store
        .import_chunks(first.import_id)
        .try_collect()
        .await
        .unwrap();
    assert!(chunks.iter().all(|c| c.len() <= CHUNK_SIZE));
    assert_eq!(chunks.concat(), body);

    let row = store.get_import(first.import_id).await.unwrap().unwrap();
    assert_eq!(row.status, ImportStatus::Received);
    assert_eq!(row.channel, Channel::Directory);
    assert_eq!(row.size_bytes, body.len() as i64);
    assert_eq!(row.counts, None);

    // Same bytes, same source: a duplicate, whose chunks are not kept twice.
    let dup = receive(&store, "iceland", &body).await;
    assert_eq!(dup.duplicate_of, Some(first.import_id));
    assert_eq!(dup.sha256, first.sha256);
    let dup_row = store.get_import(dup.import_id).await.unwrap().unwrap();
    assert_eq!(dup_row.status, ImportStatus::Duplicate);
    assert_eq!(dup_row.duplicate_of, Some(first.import_id));
    assert_eq!(count(&pool, "SELECT count(*) FROM import_chunks").await, 3);
    assert!(
        store
            .pending_imports()
            .await
            .unwrap()
            .iter()
            .all(|i| i.id != dup.import_id)
    );

    // Same bytes for another source are that source's first import.
    let other = receive(&store, "norway", &body).await;
    assert_eq!(other.duplicate_of, None);

    let found = store
        .find_import_by_sha("iceland", &first.sha256)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, first.import_id);
    assert!(
        store
            .find_import_by_sha("iceland", &"0".repeat(64))
            .await
            .unwrap()
            .is_none()
    );

    let events = store.events_for_import(dup.import_id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].stage, "duplicate");
    assert_eq!(events[0].actor, "http");

    // An empty body is a valid (if odd) import with no chunks.
    let empty = receive(&store, "iceland", b"").await;
    assert_eq!(empty.size, 0);
    let chunks: Vec<bytes::Bytes> = store
        .import_chunks(empty.import_id)
        .try_collect()
        .await
        .unwrap();
    assert!(chunks.is_empty());
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn dropped_receive_leaves_nothing(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let mut r = store
        .begin_receive(NewImport {
            source: "s".into(),
            channel: Channel::Cli,
            original_name: None,
        })
        .await
        .unwrap();
    r.write_chunk(&vec![1u8; CHUNK_SIZE + 1]).await.unwrap();
    drop(r);
    assert_eq!(count(&pool, "SELECT count(*) FROM import_chunks").await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM imports").await, 0);
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn commit_counts_in_file_and_cross_file_duplicates(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let a = receive(&store, "iceland", b"file a").await;
    let mut parsing = store.begin_parse(a.import_id, &plugin()).await.unwrap();
    parsing
        .stage(&batch(
            &[(1, tx("t1", 100)), (2, tx("t2", 200))],
            vec![reject(3, "bad amount", "x,y")],
        ))
        .await
        .unwrap();
    // Second batch: t2 again (in-file duplicate, later row loses), t3 new.
    parsing
        .stage(&batch(
            &[(4, tx("t2", 999)), (5, tx("t3", 300))],
            vec![reject(6, "short row", "z")],
        ))
        .await
        .unwrap();
    let counts = parsing.commit().await.unwrap();
    assert_eq!(
        counts,
        ParseCounts {
            accepted: 3,
            duplicates: 1,
            rejected: 2
        }
    );

    let t2 = store
        .list_transactions(&TransactionFilter {
            source: Some("iceland".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|t| t.transaction.external_id == "t2")
        .unwrap();
    assert_eq!(
        t2.source_row,
        Some(2),
        "the first occurrence in the file wins"
    );
    assert_eq!(t2.transaction.amount.minor_units, 200);
    assert_eq!(t2.import_id, a.import_id);

    let row = store.get_import(a.import_id).await.unwrap().unwrap();
    assert_eq!(row.status, ImportStatus::Parsed);
    assert_eq!(row.counts, Some(counts));
    assert_eq!(row.plugin, Some(plugin()));
    assert!(row.parsed_at.is_some());

    // Another file with t3 (already stored) and t4 (new).
    let b = receive(&store, "iceland", b"file b").await;
    let mut parsing = store.begin_parse(b.import_id, &plugin()).await.unwrap();
    parsing
        .stage(&batch(&[(1, tx("t3", 300)), (2, tx("t4", 400))], vec![]))
        .await
        .unwrap();
    let counts = parsing.commit().await.unwrap();
    assert_eq!(
        counts,
        ParseCounts {
            accepted: 1,
            duplicates: 1,
            rejected: 0
        }
    );

    // Same external id from another source is a different transaction.
    let c = receive(&store, "norway", b"file c").await;
    let mut parsing = store.begin_parse(c.import_id, &plugin()).await.unwrap();
    parsing
        .stage(&batch(&[(1, tx("t1", 100))], vec![]))
        .await
        .unwrap();
    assert_eq!(parsing.commit().await.unwrap().accepted, 1);

    assert_eq!(count(&pool, "SELECT count(*) FROM transactions").await, 5);
    let rejects = store.rejects_for_import(a.import_id, 10).await.unwrap();
    assert_eq!(
        rejects
            .iter()
            .map(|r| r.reject.reason.as_str())
            .collect::<Vec<_>>(),
        ["bad amount", "short row"]
    );

    // A parsed import cannot be parsed again or failed.
    assert!(matches!(
        store.begin_parse(a.import_id, &plugin()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.fail_import(a.import_id, "late", None).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.begin_parse(424242, &plugin()).await,
        Err(StoreError::NotFound(_))
    ));

    let stages: Vec<String> = store
        .events_for_import(a.import_id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.stage)
        .collect();
    assert_eq!(stages, ["received", "parsed"]);
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn copy_round_trips_nasty_strings(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let nasty = [
        "tab\there",
        "new\nline",
        "carriage\rreturn",
        "back\\slash",
        "\\N",
        "\\.",
        "quote \" and ' and ,comma",
        "unicode: Þórsmörk 東京 🦀 \u{200B}",
        "",
        "\u{1}\u{7f} control",
        "trailing backslash \\",
    ];
    let mut transactions = Vec::new();
    for (i, s) in nasty.iter().enumerate() {
        let mut t = tx(&format!("id{i}{s}"), -(i as i64) * 1_000_000_007);
        t.side = Side::Payment;
        t.kind = Kind::Refund;
        t.amount.currency = "ISK".into();
        // Odd offsets, including one with seconds, survive exactly.
        t.occurred_at = at(
            [20700, -34200, 0, 3723][i % 4],
            "1999-12-31 23:59:59.123456",
        );
        t.time_known = i % 2 == 0;
        t.provider = Some(s.to_string());
        t.card_first_six = (i % 2 == 0).then(|| s.to_string());
        t.card_last_four = (i % 3 == 0).then(|| format!("{s}/last four"));
        t.card_token = Some(format!("{s}{s}"));
        // Each column its own value: stored_transaction reads by position.
        t.auth_code = Some(format!("{s}/auth"));
        t.approval_code = Some(format!("{s}/approval"));
        t.settlement_key = Some(format!("{s}/key"));
        t.account_id = Some(format!("{s}/account"));
        t.reference_id = Some(format!("{s}/reference"));
        t.payer_account = Some(format!("{s}/payer"));
        t.beneficiary_account = Some(format!("{s}/beneficiary"));
        t.merchant_ids = vec![
            MerchantIdentifier {
                value: s.to_string(),
                kind: IdentifierKind::Psimi,
            },
            MerchantIdentifier {
                value: "42".into(),
                kind: IdentifierKind::Primary,
            },
        ];
        // Order and repeated keys are kept.
        t.extras = vec![
            ("z".into(), s.to_string()),
            (s.to_string(), "v".into()),
            ("z".into(), "again".into()),
        ];
        transactions.push((i as u64 + 1, t));
    }
    let rejects: Vec<Reject> = nasty
        .iter()
        .enumerate()
        .map(|(i, s)| reject(i as u64, s, &format!("raw {s}")))
        .collect();

    let r = receive(&store, "nasty", b"nasty").await;
    let mut parsing = store.begin_parse(r.import_id, &plugin()).await.unwrap();
    parsing
        .stage(&batch(&transactions, rejects.clone()))
        .await
        .unwrap();
    let counts = parsing.commit().await.unwrap();
    assert_eq!(counts.accepted, nasty.len() as u64);

    let mut stored = store
        .list_transactions(&TransactionFilter {
            import_id: Some(r.import_id),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    stored.reverse();
    assert_eq!(stored.len(), transactions.len());
    for (s, (row, t)) in stored.iter().zip(&transactions) {
        assert_eq!(&s.transaction, t);
        assert_eq!(s.transaction.occurred_at.offset(), t.occurred_at.offset());
        assert_eq!(s.source_row, Some(*row as i64));
        assert_eq!(s.source, "nasty");
    }
    let back: Vec<Reject> = store
        .rejects_for_import(r.import_id, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.reject)
        .collect();
    assert_eq!(back, rejects);

    // Through the API the original wall time is shown.
    let json = serde_json::to_value(&stored[0]).unwrap();
    assert_eq!(json["occurred_at"], "1999-12-31T23:59:59.123456+05:45");
    assert_eq!(json["extras"][0], serde_json::json!(["z", nasty[0]]));
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn unstorable_transactions_become_rejects(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let r = receive(&store, "s", b"x").await;
    let mut nul = tx("nul", 1);
    nul.card_token = Some("a\0b".into());
    let mut nul_extra = tx("nul-extra", 1);
    nul_extra.extras = vec![("k".into(), "\0".into())];
    let mut euro = tx("euro", 1);
    euro.amount.currency = "EURO".into();
    let mut ancient = tx("ancient", 1);
    ancient.occurred_at = at(0, "0000-06-01 00:00:00");
    let mut plugin_reject = reject(9, "nul \0 in reason", "raw \0");
    plugin_reject.field = Some("f\0".into());

    let mut parsing = store.begin_parse(r.import_id, &plugin()).await.unwrap();
    parsing
        .stage(&batch(
            &[
                (1, nul),
                (2, nul_extra),
                (3, euro),
                (4, ancient),
                (5, tx("", 1)),
                (6, tx("ok", 1)),
            ],
            vec![plugin_reject],
        ))
        .await
        .unwrap();
    let counts = parsing.commit().await.unwrap();
    assert_eq!(
        counts,
        ParseCounts {
            accepted: 1,
            duplicates: 0,
            rejected: 6
        }
    );
    let rejects = store.rejects_for_import(r.import_id, 100).await.unwrap();
    let fields: Vec<_> = rejects
        .iter()
        .map(|r| r.reject.field.clone().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "f\u{FFFD}",
            "card_token",
            "extras",
            "currency",
            "occurred_at",
            "external_id"
        ]
    );
    assert_eq!(rejects[0].reject.raw, "raw \u{FFFD}");
    assert_eq!(rejects[1].reject.row, Some(1));
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn dropped_parse_commits_nothing(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let r = receive(&store, "s", b"body").await;
    let mut parsing = store.begin_parse(r.import_id, &plugin()).await.unwrap();
    parsing
        .stage(&batch(
            &[(1, tx("a", 1)), (2, tx("b", 2))],
            vec![reject(3, "r", "raw")],
        ))
        .await
        .unwrap();
    drop(parsing);

    assert_eq!(count(&pool, "SELECT count(*) FROM transactions").await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM rejects").await, 0);
    let row = store.get_import(r.import_id).await.unwrap().unwrap();
    assert_eq!(row.status, ImportStatus::Received);
    let pending: Vec<i64> = store
        .pending_imports()
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(pending, [r.import_id]);

    // Recovery re-parses it from scratch, exactly once.
    let mut parsing = store.begin_parse(r.import_id, &plugin()).await.unwrap();
    parsing
        .stage(&batch(&[(1, tx("a", 1)), (2, tx("b", 2))], vec![]))
        .await
        .unwrap();
    assert_eq!(parsing.commit().await.unwrap().accepted, 2);
    assert!(store.pending_imports().await.unwrap().is_empty());
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn concurrent_parse_of_one_import_conflicts(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let r = receive(&store, "s", b"body").await;
    let mut first = store.begin_parse(r.import_id, &plugin()).await.unwrap();
    first
        .stage(&batch(&[(1, tx("a", 1))], vec![]))
        .await
        .unwrap();
    let second = {
        let store = store.clone();
        tokio::spawn(async move { store.begin_parse(r.import_id, &plugin()).await.map(drop) })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "the second parser waits on the row lock"
    );
    first.commit().await.unwrap();
    assert!(matches!(
        second.await.unwrap(),
        Err(StoreError::Conflict(_))
    ));
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn failed_imports_and_disposal(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let r = receive(&store, "s", b"garbage").await;
    store
        .fail_import(r.import_id, "not a CSV file", Some(&plugin()))
        .await
        .unwrap();
    let row = store.get_import(r.import_id).await.unwrap().unwrap();
    assert_eq!(row.status, ImportStatus::Failed);
    assert_eq!(row.error.as_deref(), Some("not a CSV file"));
    assert_eq!(row.plugin, Some(plugin()));
    assert!(matches!(
        store.fail_import(r.import_id, "again", None).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.fail_import(999, "x", None).await,
        Err(StoreError::NotFound(_))
    ));

    // A failed import does not hold its bytes' slot: after a parser fix the
    // same file can be sent again.
    let again = receive(&store, "s", b"garbage").await;
    assert_eq!(again.duplicate_of, None);
    // ...and from then on the new live import is what the sha finds.
    let found = store
        .find_import_by_sha("s", &r.sha256)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, again.import_id);

    store
        .mark_disposed(r.import_id, "failed/s/garbage")
        .await
        .unwrap();
    store
        .mark_disposed(r.import_id, "failed/s/garbage")
        .await
        .unwrap();
    assert!(matches!(
        store.mark_disposed(r.import_id, "archive/s/garbage").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.mark_disposed(999, "x").await,
        Err(StoreError::NotFound(_))
    ));
    let row = store.get_import(r.import_id).await.unwrap().unwrap();
    assert_eq!(row.disposed_to.as_deref(), Some("failed/s/garbage"));
    assert!(row.disposed_at.is_some());
    let stages: Vec<String> = store
        .events_for_import(r.import_id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.stage)
        .collect();
    assert_eq!(stages, ["received", "failed", "disposed", "disposed"]);
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn events_are_append_only(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    receive(&store, "s", b"x").await;
    for sql in [
        "UPDATE events SET stage = 'forged'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE stage = 'received'"
        )
        .await,
        1
    );
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn keyset_paging(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let mut ids = Vec::new();
    for i in 0..5 {
        let source = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(
            receive(&store, source, format!("body {i}").as_bytes())
                .await
                .import_id,
        );
    }
    store.fail_import(ids[4], "bad", None).await.unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_imports(&ImportFilter {
                limit: Some(2),
                cursor,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|i| i.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let even = store
        .list_imports(&ImportFilter {
            source: Some("even".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        even.items.iter().map(|i| i.id).collect::<Vec<_>>(),
        [ids[4], ids[2], ids[0]]
    );
    assert_eq!(even.next_cursor, None);
    let failed = store
        .list_imports(&ImportFilter {
            status: Some(ImportStatus::Failed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.items.len(), 1);
    assert_eq!(failed.items[0].error.as_deref(), Some("bad"));

    // Transactions page the same way.
    let mut parsing = store.begin_parse(ids[0], &plugin()).await.unwrap();
    let rows: Vec<(u64, Transaction)> = (0..7)
        .map(|i| (i, tx(&format!("t{i}"), i as i64)))
        .collect();
    parsing.stage(&batch(&rows, vec![])).await.unwrap();
    parsing.commit().await.unwrap();
    let filter = TransactionFilter {
        source: Some("even".into()),
        limit: Some(3),
        ..Default::default()
    };
    let p1 = store.list_transactions(&filter).await.unwrap();
    let p2 = store
        .list_transactions(&TransactionFilter {
            cursor: p1.next_cursor,
            ..filter.clone()
        })
        .await
        .unwrap();
    let p3 = store
        .list_transactions(&TransactionFilter {
            cursor: p2.next_cursor,
            ..filter.clone()
        })
        .await
        .unwrap();
    assert_eq!((p1.items.len(), p2.items.len(), p3.items.len()), (3, 3, 1));
    assert_eq!(p3.next_cursor, None);
    assert_eq!(p1.items[0].transaction.external_id, "t6");
    assert_eq!(p3.items[0].transaction.external_id, "t0");
    let none = store
        .list_transactions(&TransactionFilter {
            source: Some("odd".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.items.is_empty());
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    // Port 1 on localhost: nothing listens, the connection is refused.
    let err = Store::connect_with(
        "postgres://postgres@127.0.0.1:1/none",
        StoreOptions {
            max_connections: 1,
            acquire_timeout: std::time::Duration::from_secs(2),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}
