//! The directory channel end to end through the library: real plugins, a
//! real PostgreSQL database per test, real inbox watchers on temp dirs.

use crate::support::{
    self, PARSER_V1, TestDb, archived, drop_file, files_in, install, install_example, shop_csv,
};
use accord::config::Config;
use accord::ingest::Inboxes;
use accord::pipeline::{self, Context, IngestError};
use accord::store::{
    Channel, ImportFilter, ImportRow, ImportStatus, NewImport, Store, TransactionFilter,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One test's world: a database, a data dir with inboxes, plugins, and the
/// inbox watchers running.
struct Harness {
    db: Option<TestDb>,
    _root: tempfile::TempDir,
    data: PathBuf,
    ctx: Arc<Context>,
    inboxes: Option<Inboxes>,
}

impl Harness {
    async fn start() -> Harness {
        let db = TestDb::create().await;
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let plugins = data.join("plugins");
        install_example(&plugins, "csv");
        install(&plugins, "panicky", "accord-guest-panicker", PARSER_V1);
        let inbox = |name: &str| serde_json::json!({ "path": format!("data/inbox/{name}") });
        let config = support::config_toml(&serde_json::json!({
            "database_url": db.url,
            "data_dir": "data",
            "sources": [
                {
                    "name": "iceland", "side": "merchant", "parser": "csv",
                    "inbox": { "path": "data/inbox/iceland", "glob": "*.csv" },
                    "config": support::iceland_config(),
                },
                {
                    "name": "shop", "side": "merchant", "parser": "csv",
                    "inbox": inbox("shop"), "config": support::shop_csv_config(),
                },
                { "name": "trap", "side": "standalone", "parser": "panicky", "inbox": inbox("trap") },
                { "name": "nobody", "side": "standalone", "parser": "not-installed", "inbox": inbox("nobody") },
            ],
        }));
        let config_path = root.path().join("accord.toml");
        std::fs::write(&config_path, config).unwrap();
        let config = Config::load(Some(&config_path), Vec::new()).unwrap();
        let store = Store::connect(&db.url).await.unwrap();
        let runtime = accord::plugins::Runtime::new(accord::plugins::RuntimeOptions {
            plugins_dir: Some(plugins),
            cache_dir: support::shared_cache_dir(),
        })
        .unwrap();
        let report = tokio::task::spawn_blocking({
            let runtime = runtime.clone();
            move || runtime.rescan()
        })
        .await
        .unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        let ctx = Arc::new(Context {
            store,
            runtime,
            config: Arc::new(config),
        });
        let inboxes = Inboxes::start(ctx.clone()).unwrap();
        Harness {
            db: Some(db),
            _root: root,
            data,
            ctx,
            inboxes: Some(inboxes),
        }
    }

    fn inbox(&self, source: &str) -> PathBuf {
        self.data.join("inbox").join(source)
    }

    fn failed(&self, source: &str) -> PathBuf {
        self.data.join("failed").join(source)
    }

    fn store(&self) -> &Store {
        &self.ctx.store
    }

    async fn imports(&self, source: &str) -> Vec<ImportRow> {
        let mut items = self
            .store()
            .list_imports(&ImportFilter {
                source: Some(source.into()),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap()
            .items;
        items.reverse();
        items
    }

    async fn transactions(&self, source: &str) -> usize {
        self.store()
            .list_transactions(&TransactionFilter {
                source: Some(source.into()),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap()
            .items
            .len()
    }

    /// Wait until `name` has left the inbox, landed in archive or failed,
    /// and every directory import of the source has its move recorded.
    async fn wait_disposed(&self, source: &str, name: &str) {
        let inbox = self.inbox(source);
        let failed = self.failed(source);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let moved = !inbox.join(name).exists()
                && (archived(&self.data, source).iter().any(|n| n == name)
                    || failed.join(name).exists());
            if moved
                && self
                    .imports(source)
                    .await
                    .iter()
                    .all(|i| i.channel != Channel::Directory || i.disposed_at.is_some())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {source}/{name} to be disposed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(i) = self.inboxes.take() {
            i.shutdown(Duration::from_secs(5)).await;
        }
        self.ctx.store.close().await;
        if let Some(db) = self.db.take() {
            db.drop_database().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_file_is_parsed_stored_and_archived_and_again_is_a_duplicate() {
    let h = Harness::start().await;
    let bytes = std::fs::read(support::fixture("csv", "iceland.csv")).unwrap();
    drop_file(&h.inbox("iceland"), "day-1.csv", &bytes);
    h.wait_disposed("iceland", "day-1.csv").await;

    let imports = h.imports("iceland").await;
    assert_eq!(imports.len(), 1, "{imports:#?}");
    let first = &imports[0];
    assert_eq!(first.status, ImportStatus::Parsed);
    assert_eq!(first.channel, Channel::Directory);
    assert_eq!(first.original_name.as_deref(), Some("day-1.csv"));
    let counts = first.counts.unwrap();
    assert_eq!(
        (counts.accepted, counts.duplicates, counts.rejected),
        (4, 0, 2)
    );
    assert_eq!(first.plugin.as_ref().unwrap().name, "csv");
    let disposed = first.disposed_to.as_deref().unwrap();
    assert!(
        disposed.contains("/archive/iceland/") && disposed.ends_with("/day-1.csv"),
        "{disposed}"
    );
    assert!(Path::new(disposed).is_file());
    assert_eq!(h.transactions("iceland").await, 4);
    let rejects = h.store().rejects_for_import(first.id, 100).await.unwrap();
    assert_eq!(rejects.len(), 2);
    assert!(
        rejects
            .iter()
            .any(|r| r.reject.field.as_deref() == Some("amount")),
        "{rejects:#?}"
    );

    // The same bytes again, under another name: a duplicate import, archived
    // beside the first, nothing new stored.
    drop_file(&h.inbox("iceland"), "day-1-again.csv", &bytes);
    h.wait_disposed("iceland", "day-1-again.csv").await;
    let imports = h.imports("iceland").await;
    assert_eq!(imports.len(), 2);
    assert_eq!(imports[1].status, ImportStatus::Duplicate);
    assert_eq!(imports[1].duplicate_of, Some(first.id));
    assert!(imports[1].disposed_at.is_some());
    assert_eq!(h.transactions("iceland").await, 4);

    // And under the same name again: archived under a free name.
    drop_file(&h.inbox("iceland"), "day-1.csv", &bytes);
    h.wait_disposed("iceland", "day-1.1.csv").await;
    assert_eq!(
        archived(&h.data, "iceland"),
        ["day-1-again.csv", "day-1.1.csv", "day-1.csv"]
    );
    assert_eq!(h.imports("iceland").await.len(), 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_hidden_and_unmatched_names_are_left_alone() {
    let h = Harness::start().await;
    let inbox = h.inbox("iceland");
    let bytes = std::fs::read(support::fixture("csv", "iceland.csv")).unwrap();
    for name in [
        "upload.csv.part",
        "upload.csv.tmp",
        ".hidden.csv",
        "notes.txt",
    ] {
        std::fs::write(inbox.join(name), &bytes).unwrap();
    }
    // A real file after them: once it is done, the others were seen too.
    drop_file(&inbox, "real.csv", &bytes);
    h.wait_disposed("iceland", "real.csv").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        files_in(&inbox),
        [
            ".hidden.csv",
            "notes.txt",
            "upload.csv.part",
            "upload.csv.tmp"
        ]
    );
    assert_eq!(h.imports("iceland").await.len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_input_and_trapping_plugin_go_to_failed_with_a_reason() {
    let h = Harness::start().await;

    // The CSV parser refuses a file whose header lacks a mapped column.
    drop_file(
        &h.inbox("iceland"),
        "wrong.csv",
        b"some,other,header\n1,2,3\n",
    );
    // The panicking guest traps on a line saying `panic`.
    drop_file(&h.inbox("trap"), "boom.txt", b"fine\npanic\nfine\n");
    // A source whose parser is not installed.
    drop_file(&h.inbox("nobody"), "orphan.dat", b"whatever\n");

    for (source, name, needle) in [
        ("iceland", "wrong.csv", "missing column"),
        ("trap", "boom.txt", "panicked"),
        ("nobody", "orphan.dat", "no active plugin `not-installed`"),
    ] {
        h.wait_disposed(source, name).await;
        let failed = h.failed(source);
        assert!(failed.join(name).is_file());
        let note = std::fs::read_to_string(failed.join(format!("{name}.error.txt"))).unwrap();
        assert!(note.contains(needle), "{source}: {note}");
        let imports = h.imports(source).await;
        assert_eq!(imports.len(), 1);
        assert_eq!(imports[0].status, ImportStatus::Failed);
        assert!(
            imports[0].error.as_deref().unwrap().contains(needle),
            "{:?}",
            imports[0].error
        );
        assert!(
            imports[0]
                .disposed_to
                .as_deref()
                .unwrap()
                .contains("/failed/")
        );
        assert_eq!(h.transactions(source).await, 0);
    }
    // The panicking plugin's identity is recorded with the failure.
    assert_eq!(
        h.imports("trap").await[0].plugin.as_ref().unwrap().name,
        "panicky"
    );

    // The daemon's other work goes on: a good file after the bad ones.
    let bytes = std::fs::read(support::fixture("csv", "iceland.csv")).unwrap();
    drop_file(&h.inbox("iceland"), "good.csv", &bytes);
    h.wait_disposed("iceland", "good.csv").await;
    assert_eq!(h.transactions("iceland").await, 4);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_transaction_in_another_file_is_a_counted_duplicate() {
    let h = Harness::start().await;
    drop_file(&h.inbox("shop"), "a.csv", &shop_csv(1..=3));
    h.wait_disposed("shop", "a.csv").await;
    drop_file(&h.inbox("shop"), "b.csv", &shop_csv(3..=5));
    h.wait_disposed("shop", "b.csv").await;
    let imports = h.imports("shop").await;
    let counts: Vec<_> = imports
        .iter()
        .map(|i| {
            let c = i.counts.unwrap();
            (c.accepted, c.duplicates, c.rejected)
        })
        .collect();
    assert_eq!(counts, [(3, 0, 0), (2, 1, 0)]);
    assert_eq!(h.transactions("shop").await, 5);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_is_finished_not_recorded_again() {
    let h = Harness::start().await;
    let inbox = h.inbox("shop");

    // Crashed after the parse committed, before the move: the file is still
    // in the inbox and its import parsed but not disposed.
    let parsed_bytes = shop_csv(10..=12);
    let outcome = pipeline::import_stream(
        &h.ctx,
        "shop",
        Channel::Directory,
        Some("parsed.csv".into()),
        None,
        u64::MAX,
        futures::stream::iter([Ok(bytes::Bytes::from(parsed_bytes.clone()))]),
    )
    .await
    .unwrap();
    assert_eq!(outcome.status, ImportStatus::Parsed);

    // Crashed after the receive committed, before the parse did.
    let received_bytes = shop_csv(20..=21);
    let mut receiving = h
        .store()
        .begin_receive(NewImport {
            source: "shop".into(),
            channel: Channel::Directory,
            original_name: Some("received.csv".into()),
        })
        .await
        .unwrap();
    receiving.write_chunk(&received_bytes).await.unwrap();
    let received = receiving.finish().await.unwrap();

    drop_file(&inbox, "parsed.csv", &parsed_bytes);
    drop_file(&inbox, "received.csv", &received_bytes);
    h.wait_disposed("shop", "parsed.csv").await;
    h.wait_disposed("shop", "received.csv").await;

    let imports = h.imports("shop").await;
    assert_eq!(
        imports.iter().map(|i| (i.id, i.status)).collect::<Vec<_>>(),
        [
            (outcome.import_id, ImportStatus::Parsed),
            (received.import_id, ImportStatus::Parsed)
        ],
        "no duplicate import was recorded"
    );
    assert!(imports.iter().all(|i| i.disposed_at.is_some()));
    assert_eq!(h.transactions("shop").await, 5);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_reparses_received_imports_and_bad_input_errors_are_typed() {
    let h = Harness::start().await;
    let mut receiving = h
        .store()
        .begin_receive(NewImport {
            source: "shop".into(),
            channel: Channel::Http,
            original_name: None,
        })
        .await
        .unwrap();
    receiving.write_chunk(&shop_csv(1..=4)).await.unwrap();
    let received = receiving.finish().await.unwrap();
    assert_eq!(pipeline::recover(&h.ctx).await.unwrap(), 1);
    let row = h
        .store()
        .get_import(received.import_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, ImportStatus::Parsed);
    assert_eq!(pipeline::recover(&h.ctx).await.unwrap(), 0);

    let body = || futures::stream::iter([Ok(bytes::Bytes::from_static(b"0123456789"))]);
    let err = pipeline::import_stream(&h.ctx, "nope", Channel::Http, None, None, 100, body())
        .await
        .unwrap_err();
    assert!(matches!(err, IngestError::UnknownSource(_)), "{err:?}");
    let err = pipeline::import_stream(&h.ctx, "shop", Channel::Http, None, None, 5, body())
        .await
        .unwrap_err();
    assert!(matches!(err, IngestError::TooLarge { limit: 5 }), "{err:?}");
    // Nothing was recorded for either.
    assert_eq!(h.imports("shop").await.len(), 1);
    h.stop().await;
}

/// The shipped example config loads, and each example source parses its
/// shipped sample through the pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_config_and_samples_work_together() {
    let db = TestDb::create().await;
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    for p in [
        "csv",
        "mastercard-tgx2",
        "visa-vop",
        "psp-xml",
        "merchant-feeds",
    ] {
        install_example(&plugins, p);
    }
    let examples = support::workspace().join("examples");
    let env = [
        ("ACCORD_DATABASE_URL", db.url.as_str()),
        ("ACCORD_DATA_DIR", root.path().to_str().unwrap()),
        ("ACCORD_PLUGINS_DIR", plugins.to_str().unwrap()),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let config = Config::load(Some(&examples.join("accord.toml")), env).unwrap();
    let runtime = accord::plugins::Runtime::new(accord::plugins::RuntimeOptions {
        plugins_dir: Some(plugins),
        cache_dir: support::shared_cache_dir(),
    })
    .unwrap();
    let report = tokio::task::spawn_blocking({
        let runtime = runtime.clone();
        move || runtime.rescan()
    })
    .await
    .unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    let ctx = Context {
        store: Store::connect(&db.url).await.unwrap(),
        runtime,
        config: Arc::new(config),
    };
    for (source, sample) in [
        ("iceland", "samples/iceland.csv"),
        ("shop-csv", "samples/iceland.csv"),
        ("mastercard-settlement", "samples/settlement.txt"),
        ("visa-auth", "samples/auth.ndjson"),
        ("psp-payments", "samples/seed-payments.xml"),
        ("iceland", "walkthrough/iceland.csv"),
        ("visa-auth", "walkthrough/visa-auth.ndjson"),
    ] {
        let bytes = std::fs::read(examples.join(sample)).unwrap();
        let outcome = pipeline::import_stream(
            &ctx,
            source,
            Channel::Cli,
            Some(sample.into()),
            None,
            u64::MAX,
            futures::stream::iter([Ok(bytes::Bytes::from(bytes))]),
        )
        .await
        .unwrap_or_else(|e| panic!("{source}: {e}"));
        assert_eq!(outcome.status, ImportStatus::Parsed, "{source}");
        assert!(
            outcome.counts.unwrap().accepted > 0,
            "{source}: {outcome:?}"
        );
    }
    ctx.store.close().await;
    db.drop_database().await;
}
