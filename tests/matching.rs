//! Matching scenarios (matching-rules.md) end to end through the library:
//! feed files from `tests/fixtures/matching/` imported through sources
//! configured like production (one payment source per scheme feed, one
//! merchant source per merchant feed with `merchant = "<slug>"`), the real
//! parser and matcher plugins (wasm, built from source), reference data
//! onboarded through the store, a fresh PostgreSQL database per test, then
//! `run_until_idle` and assertions on which external ids were paired.
//!
//! Matching selects candidates by ingestion time (the lookback window), so
//! the fixtures' 2024 dates match today; the unmatched sweep compares the
//! transaction date with an explicit `now`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use accord::config::Config;
use accord::domain::MatchGroup;
use accord::pipeline::matching::{self as engine, MatchStats};
use accord::pipeline::{self, Context};
use accord::store::matching::{ClaimScope, LegRow, MatchBatch, Verdict};
use accord::store::{
    Card, Channel, Explanation, IdentifierType, ImportStatus, MatchFilter, MatchRow, MerchantMode,
    NewMerchant, NewMid, PaymentFilter, PaymentRow, RedressError, SettingsPatch, Store,
    StoreOptions, TransactionFilter,
};
use chrono::{DateTime, TimeZone as _, Utc};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::support;

/// The plugins a matching deployment runs: the scheme feeds, the merchant
/// feeds and the matcher.
const PLUGINS: &[&str] = &[
    "visa-vop",
    "amex",
    "mastercard-auth",
    "mastercard-tgx2",
    "merchant-feeds",
    "harmonia",
];

/// Merchant-side sources: (source name, merchant slug).
const MERCHANT_SOURCES: &[(&str, &str)] = &[
    ("iceland", "iceland-bonus-card"),
    ("wasabi", "wasabi-club"),
    ("itsu", "itsu"),
    ("tgi-fridays", "tgi-fridays"),
    ("stonegate", "stonegate"),
    ("costa", "costa"),
];

const HARMONIA_REASON_WASABI: &str = "visa: auth-code → 2 candidates; time-window(180s) → 2 candidates; \
     user-first-six-last-four → 1 candidate";

/// Install every plugin of [`PLUGINS`] with its own manifest.
fn install_plugins(dir: &Path) {
    for p in PLUGINS {
        support::install_example(dir, p);
    }
}

fn fixture(path: &str) -> PathBuf {
    support::workspace()
        .join("tests/fixtures/matching")
        .join(path)
}

/// Drops the test's database even when the test panics (on a thread of its
/// own: `Drop` runs inside the test's runtime, which must not block on another).
struct DropDb(Option<support::TestDb>);

impl Drop for DropDb {
    fn drop(&mut self) {
        if let Some(db) = self.0.take() {
            let _ = std::thread::spawn(move || db.drop_blocking()).join();
        }
    }
}

/// One test's deployment: a database, the plugins, the production-like
/// sources, and a pipeline context over them.
struct World {
    ctx: Context,
    url: String,
    plugins_dir: PathBuf,
    config: Arc<Config>,
    _dir: tempfile::TempDir,
    // Last: dropped after the pools above are gone.
    _db: DropDb,
}

impl World {
    async fn start() -> World {
        World::start_with(StoreOptions::default()).await
    }

    /// A world whose store is connected with `options` (its transaction
    /// cache's size).
    async fn start_with(options: StoreOptions) -> World {
        let db = support::TestDb::create().await;
        let dir = tempfile::tempdir().unwrap();
        let plugins_dir = dir.path().join("plugins");
        install_plugins(&plugins_dir);

        let payment = |name: &str, parser: &str, config: Value| json!({ "name": name, "side": "payment", "parser": parser, "config": config });
        let mut sources = vec![
            payment("visa-auth", "visa-vop", json!({ "feed": "auth" })),
            payment(
                "visa-settlement",
                "visa-vop",
                json!({ "feed": "settlement" }),
            ),
            payment("visa-refund", "visa-vop", json!({ "feed": "refund" })),
            payment("amex-auth", "amex", json!({ "feed": "auth" })),
            payment("amex-settlement", "amex", json!({ "feed": "settlement" })),
            payment("mastercard-auth", "mastercard-auth", json!({})),
            payment(
                "mastercard-settlement",
                "mastercard-tgx2",
                json!({ "feed": "settlement" }),
            ),
            payment(
                "mastercard-refund",
                "mastercard-tgx2",
                json!({ "feed": "refund" }),
            ),
        ];
        for (name, slug) in MERCHANT_SOURCES {
            sources.push(json!({
                "name": name, "side": "merchant", "parser": "merchant-feeds",
                "merchant": slug, "config": { "merchant": slug },
            }));
        }
        let config = json!({
            "database_url": db.url,
            "data_dir": dir.path().join("data"),
            "plugins_dir": plugins_dir,
            "sources": sources,
        });
        let path = dir.path().join("accord.toml");
        std::fs::write(&path, support::config_toml(&config)).unwrap();
        let config = Arc::new(Config::load(Some(&path), Vec::new()).unwrap());
        let url = db.url.clone();
        let ctx = context_with(&url, &plugins_dir, config.clone(), options).await;
        World {
            ctx,
            url,
            plugins_dir,
            config,
            _dir: dir,
            _db: DropDb(Some(db)),
        }
    }

    /// Another deployment on the same database: its own pool and runtime
    /// (a second daemon).
    async fn second_context(&self) -> Context {
        context(&self.url, &self.plugins_dir, self.config.clone()).await
    }

    fn store(&self) -> &Store {
        &self.ctx.store
    }

    /// Import a fixture file through `source`; every record must be accepted.
    async fn import(&self, source: &str, file: &str) -> i64 {
        let bytes = std::fs::read(fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        self.import_bytes(source, file, bytes).await
    }

    async fn import_bytes(&self, source: &str, name: &str, bytes: Vec<u8>) -> i64 {
        let outcome = pipeline::import_stream(
            &self.ctx,
            source,
            Channel::Cli,
            Some(name.to_owned()),
            None,
            u64::MAX,
            futures::stream::iter([Ok(bytes::Bytes::from(bytes))]),
        )
        .await
        .unwrap_or_else(|e| panic!("importing {name} into {source}: {e}"));
        assert_eq!(outcome.status, ImportStatus::Parsed, "{name}: {outcome:?}");
        let counts = outcome.counts.unwrap();
        assert!(
            counts.accepted > 0 && counts.rejected == 0,
            "{name}: every record accepted: {outcome:?}"
        );
        outcome.import_id
    }

    async fn run(&self) -> MatchStats {
        let stats = engine::run_until_idle(&self.ctx).await.unwrap();
        assert_eq!(stats.decided.errors, 0, "no matcher errors: {stats:?}");
        stats
    }

    async fn merchant(&self, slug: &str, settings: SettingsPatch) {
        self.store()
            .upsert_merchant(&NewMerchant {
                slug: slug.into(),
                name: slug.into(),
                settings,
            })
            .await
            .unwrap();
    }

    /// Onboard primary MIDs: (identifier, provider, merchant, location id).
    async fn mids(&self, rows: &[(&str, &str, &str, Option<&str>)]) {
        let rows: Vec<NewMid> = rows
            .iter()
            .enumerate()
            .map(|(i, (identifier, provider, merchant, location))| NewMid {
                line: i as u64 + 1,
                identifier: (*identifier).into(),
                identifier_type: IdentifierType::Primary,
                provider: (*provider).into(),
                merchant: (*merchant).into(),
                location_id: location.map(str::to_owned),
                merchant_internal_id: None,
                location_name: None,
                postcode: None,
            })
            .collect();
        let outcome = self.store().import_mids(&rows).await.unwrap();
        assert!(outcome.rejected.is_empty(), "{outcome:?}");
        assert_eq!(outcome.inserted, rows.len() as u64, "{outcome:?}");
    }

    /// Register cards: (token, first six, last four).
    async fn cards(&self, cards: &[(&str, &str, &str)]) {
        let cards: Vec<Card> = cards
            .iter()
            .map(|(token, f6, l4)| Card {
                card_token: (*token).into(),
                first_six: Some((*f6).into()),
                last_four: Some((*l4).into()),
                loyalty_id: Some(format!("loyalty-{token}")),
                updated_at: None,
            })
            .collect();
        self.store().upsert_cards(&cards).await.unwrap();
    }

    /// Stored transactions by id → `source:external_id`.
    async fn names(&self) -> HashMap<i64, String> {
        let mut out = HashMap::new();
        let mut cursor = None;
        loop {
            let page = self
                .store()
                .list_transactions(&TransactionFilter {
                    limit: Some(1000),
                    cursor,
                    ..Default::default()
                })
                .await
                .unwrap();
            for t in &page.items {
                out.insert(t.id, format!("{}:{}", t.source, t.transaction.external_id));
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }

    /// The id of the transaction `external_id` of `source`.
    async fn tx(&self, source: &str, external_id: &str) -> i64 {
        let wanted = format!("{source}:{external_id}");
        self.names()
            .await
            .into_iter()
            .find_map(|(id, name)| (name == wanted).then_some(id))
            .unwrap_or_else(|| panic!("no transaction {wanted}"))
    }

    /// The id of the transaction of `source` whose extra `key` is `value`
    /// (Stonegate's ids are hashes; its raw id is an extra).
    async fn tx_with_extra(&self, source: &str, key: &str, value: &str) -> i64 {
        self.store()
            .list_transactions(&TransactionFilter {
                source: Some(source.into()),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|t| {
                t.transaction
                    .extras
                    .iter()
                    .any(|(k, v)| k == key && v == value)
            })
            .unwrap_or_else(|| panic!("no {source} transaction with {key} = {value}"))
            .id
    }

    async fn explain(&self, tx: i64) -> Explanation {
        self.store()
            .explain_transaction(tx)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no transaction {tx}"))
    }

    /// The payment transaction `tx` is a leg of.
    async fn payment(&self, tx: i64) -> PaymentRow {
        self.explain(tx)
            .await
            .payment
            .unwrap_or_else(|| panic!("transaction {tx} has no payment"))
    }

    async fn matches(&self, merchant: &str) -> Vec<MatchRow> {
        let mut items = self
            .store()
            .list_matches(&MatchFilter {
                merchant: Some(merchant.into()),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap()
            .items;
        items.reverse();
        items
    }

    /// A merchant's matches as (kind, payment-side `source:id`, merchant-side
    /// `source:id`), sorted.
    async fn pairs(&self, merchant: &str) -> Vec<(String, String, Option<String>)> {
        let names = self.names().await;
        let mut out: Vec<_> = self
            .matches(merchant)
            .await
            .into_iter()
            .map(|m| {
                (
                    m.kind,
                    names[&m.payment_transaction_id].clone(),
                    m.merchant_transaction_id.map(|t| names[&t].clone()),
                )
            })
            .collect();
        out.sort();
        out
    }

    async fn payments(&self, merchant: Option<&str>, status: Option<&str>) -> Vec<PaymentRow> {
        self.store()
            .list_payments(&PaymentFilter {
                merchant: merchant.map(str::to_owned),
                status: status.map(str::to_owned),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap()
            .items
    }

    /// A transaction holding advisory lock `key` (another daemon at work)
    /// until it is rolled back.
    async fn hold_lock(&self, key: i64) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut held = self.store().pool().begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut *held)
            .await
            .unwrap();
        held
    }

    /// Staging of every parsed import, by a second daemon, in a task.
    async fn spawn_stager(
        &self,
    ) -> tokio::task::JoinHandle<Result<MatchStats, accord::store::StoreError>> {
        let ctx = self.second_context().await;
        tokio::spawn(async move {
            let mut stats = MatchStats::default();
            let result = engine::stage_pending(&ctx, &mut stats).await;
            ctx.store.close().await;
            result.map(|()| stats)
        })
    }

    /// `expr` of import `id` (an expression over `imports`' columns).
    async fn of_import<T>(&self, expr: &str, id: i64) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        sqlx::query_scalar(&format!("SELECT {expr} FROM imports WHERE id = $1"))
            .bind(id)
            .fetch_one(self.store().pool())
            .await
            .unwrap_or_else(|e| panic!("{expr} of import {id}: {e}"))
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.store().pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

async fn context(url: &str, plugins_dir: &Path, config: Arc<Config>) -> Context {
    context_with(url, plugins_dir, config, StoreOptions::default()).await
}

async fn context_with(
    url: &str,
    plugins_dir: &Path,
    config: Arc<Config>,
    options: StoreOptions,
) -> Context {
    let store = Store::connect_with(url, options).await.unwrap();
    let runtime = support::runtime(plugins_dir, &support::shared_cache_dir());
    let report = tokio::task::spawn_blocking({
        let runtime = runtime.clone();
        move || runtime.rescan()
    })
    .await
    .unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.loaded.len(), PLUGINS.len(), "{report:?}");
    Context {
        store,
        runtime,
        config,
    }
}

fn match_mode() -> SettingsPatch {
    SettingsPatch::default()
}

fn mode(mode: MerchantMode) -> SettingsPatch {
    SettingsPatch {
        mode: Some(mode),
        ..Default::default()
    }
}

fn s(v: &str) -> String {
    v.to_owned()
}

fn pair(kind: &str, payment: &str, merchant: Option<&str>) -> (String, String, Option<String>) {
    (s(kind), s(payment), merchant.map(s))
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, sec: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, sec).unwrap()
}

/// matching-rules.md §7.1: the primary filter (AC) keeps both Wasabi rows,
/// T(180) keeps both (110 s apart), the cardholder's first six / last four
/// from the card registry keep s1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasabi_visa_worked_example_refines_to_s1_by_the_registered_card() {
    let w = World::start().await;
    w.merchant("wasabi-club", match_mode()).await;
    w.mids(&[("WAS-EFT-31337", "visa", "wasabi-club", None)])
        .await;
    w.cards(&[("tok-visa-5f3a91", "454321", "4821")]).await;
    // The merchant side first (see the Itsu Amex test): the payment's
    // single attempt is asserted below.
    w.import("wasabi", "wasabi/wasabi.csv").await;
    w.run().await;
    w.import("visa-auth", "wasabi/visa-auth.ndjson").await;

    let stats = w.run().await;
    assert_eq!(stats.decided.matched, 1, "{stats:?}");

    assert_eq!(
        w.pairs("wasabi-club").await,
        [pair(
            "matched",
            "visa-auth:VFhOLVNZTlRILTAwMDE",
            Some("wasabi:0000A0000000123456789")
        )]
    );
    let visa = w.tx("visa-auth", "VFhOLVNZTlRILTAwMDE").await;
    let e = w.explain(visa).await;
    assert_eq!(e.stage, "matched");
    let m = e.matched.as_ref().expect("the payment's match");
    let plugin = m.plugin.as_ref().expect("the matcher that chose");
    assert_eq!(
        (plugin.name.as_str(), plugin.version.as_str()),
        ("harmonia", "0.1.0")
    );
    assert_eq!(
        plugin.sha256,
        sha256_hex(&w.plugins_dir.join("harmonia.wasm"))
    );
    assert_eq!(m.reason, HARMONIA_REASON_WASABI);
    assert_eq!((m.confidence, m.candidates), (Some(80), Some(2)));
    assert_eq!(m.actor, "plugin:harmonia@0.1.0");
    let history = e
        .history
        .iter()
        .find(|h| h.stage == "matched")
        .unwrap_or_else(|| panic!("a `matched` history entry: {:#?}", e.history));
    assert!(
        history.detail.contains("plugin:harmonia@0.1.0")
            && history.detail.contains(HARMONIA_REASON_WASABI),
        "{history:?}"
    );
    let p = e.payment.as_ref().unwrap();
    assert_eq!(
        (p.attempts, p.last_candidates, p.last_plugin.as_deref()),
        (1, Some(2), Some("harmonia@0.1.0"))
    );
    assert_eq!(p.last_reason.as_deref(), Some(HARMONIA_REASON_WASABI));

    // s1 knows its partner; s2 is still a candidate for a later payment.
    let s1 = w
        .explain(w.tx("wasabi", "0000A0000000123456789").await)
        .await;
    assert_eq!(s1.stage, "matched");
    assert_eq!(
        s1.matched.as_ref().map(|m| m.payment_transaction_id),
        Some(visa)
    );
    let s2 = w
        .explain(w.tx("wasabi", "0000A0000000123456791").await)
        .await;
    assert_eq!((s2.stage.as_str(), s2.matched.is_none()), ("pending", true));
}

/// While payment-side imports wait to be staged, the engine matches only
/// payments they cannot change (`ClaimScope::Settled`): the Mastercard
/// authorisation waits, since its settlement may be in the next import; once
/// its settlement is staged onto it, it is claimed in that scope too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_scope_leaves_authorisations_waiting_for_their_settlement() {
    let w = World::start().await;
    w.merchant("iceland-bonus-card", match_mode()).await;
    w.mids(&[("ICE-STORE-0457", "mastercard", "iceland-bonus-card", None)])
        .await;
    w.import("mastercard-auth", "iceland/mastercard-auth.ndjson")
        .await;
    w.import("iceland", "iceland/iceland.csv").await;
    let mut stats = MatchStats::default();
    engine::stage_pending(&w.ctx, &mut stats).await.unwrap();
    assert_eq!(stats.staged.payments_created, 1, "{stats:?}");

    assert!(
        w.store()
            .claim_match_batch_in(10, ClaimScope::Settled, None)
            .await
            .unwrap()
            .is_none(),
        "the authorisation waits in the settled scope"
    );
    let all = w
        .store()
        .claim_match_batch_in(10, ClaimScope::All, None)
        .await
        .unwrap()
        .expect("claimed with every payment");
    assert_eq!(all.len(), 1);
    drop(all); // rolled back: nothing decided

    w.import("mastercard-settlement", "iceland/mastercard-settlement.txt")
        .await;
    let mut stats = MatchStats::default();
    engine::stage_pending(&w.ctx, &mut stats).await.unwrap();
    assert_eq!(stats.staged.payments_settled, 1, "{stats:?}");
    let settled = w
        .store()
        .claim_match_batch_in(10, ClaimScope::Settled, None)
        .await
        .unwrap()
        .expect("the settled payment is claimed in the settled scope");
    assert_eq!(settled.len(), 1);
}

/// Iceland × Mastercard: the auth (no auth code) and the TGX2 settlement of
/// the same purchase collapse into one payment that takes the settlement's
/// auth code; AC keeps both same-day rows with that code, T(60) the one 20 s
/// away (confidence 90).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iceland_mastercard_ambiguity_resolved_by_the_time_window() {
    let w = World::start().await;
    w.merchant("iceland-bonus-card", match_mode()).await;
    w.mids(&[("ICE-STORE-0457", "mastercard", "iceland-bonus-card", None)])
        .await;
    w.cards(&[("mc-token-ice-001", "512345", "0077")]).await;
    w.import("mastercard-auth", "iceland/mastercard-auth.ndjson")
        .await;
    w.import("mastercard-settlement", "iceland/mastercard-settlement.txt")
        .await;
    w.import("iceland", "iceland/iceland.csv").await;

    let stats = w.run().await;
    assert_eq!(
        (stats.staged.payments_created, stats.staged.payments_settled),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(
        w.pairs("iceland-bonus-card").await,
        [pair(
            "matched",
            "mastercard-settlement:A1B2C3D4E_20240309",
            Some("iceland:ICE-MC-0001")
        )]
    );
    let auth = w.tx("mastercard-auth", "A1B2C3D4E_20240309").await;
    let e = w.explain(auth).await;
    let legs: Vec<&str> = e.legs.iter().map(|l| l.action.as_str()).collect();
    assert_eq!(legs, ["created", "settled"]);
    let p = e.payment.unwrap();
    assert_eq!(
        p.auth_code.as_deref(),
        Some("731904"),
        "filled from the settlement"
    );
    let m = e.matched.unwrap();
    assert_eq!(
        m.reason,
        "mastercard: auth-code → 2 candidates; time-window(60s) → 1 candidate"
    );
    assert_eq!((m.confidence, m.candidates), (Some(90), Some(2)));
    let other = w.explain(w.tx("iceland", "ICE-MC-0002").await).await;
    assert_eq!(other.stage, "pending");
}

/// Stonegate × Visa without an auth code: AC0 sets no time condition, so
/// both rows at the location (on different days) stay; the cardholder's last
/// four decides. The store id is expanded to the location's MIDs (every
/// provider); an unknown location leaves a record that can never match; an
/// unregistered card leaves the ambiguity unresolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stonegate_visa_without_auth_code_resolved_by_user_last_four() {
    let w = World::start().await;
    w.merchant("stonegate", match_mode()).await;
    w.mids(&[
        ("SG-CAID-0981", "visa", "stonegate", Some("SG-LOC-0981")),
        ("SG-MC-0981", "mastercard", "stonegate", Some("SG-LOC-0981")),
        ("SG-CAID-0982", "visa", "stonegate", Some("SG-LOC-0982")),
    ])
    .await;
    w.cards(&[("tok-sg-4821", "454321", "4821")]).await;
    w.import("stonegate", "stonegate/stonegate.ndjson").await;
    w.import("visa-auth", "stonegate/visa-auth.ndjson").await;
    w.run().await;

    // The §5 example's id (merchant-feeds.md test vector).
    let example = "7daa2816921b7313dee3aab14819f069e2d98ef84c2ec68f881b7ddf408136ab";
    assert_eq!(
        w.pairs("stonegate").await,
        [pair(
            "matched",
            "visa-auth:U0ctVklTQS0wMDE",
            Some(&format!("stonegate:{example}"))
        )]
    );
    let e = w.explain(w.tx("stonegate", example).await).await;
    assert_eq!(
        e.scheme.as_ref().unwrap().mids,
        ["SG-CAID-0981", "SG-MC-0981"]
    );
    let m = e.matched.unwrap();
    assert_eq!(
        m.reason,
        "visa: auth-code-or-nothing(no code: no time condition) → 2 candidates; user-last-four → 1 candidate"
    );
    assert_eq!((m.confidence, m.candidates), (Some(80), Some(2)));

    // Unknown store id: stored with no MIDs, never a candidate (the 24.50
    // payment above saw two candidates, not three).
    let lost = w
        .explain(
            w.tx_with_extra("stonegate", "transaction_id", "SG-POS-000993")
                .await,
        )
        .await;
    let scheme = lost.scheme.unwrap();
    assert!(scheme.mids.is_empty(), "{scheme:?}");
    assert_eq!(scheme.status, "pending");

    // No cardholder: the user fallback is not applicable, no match.
    let p = w.payment(w.tx("visa-auth", "U0ctVklTQS0wMDI").await).await;
    assert_eq!((p.status.as_str(), p.last_candidates), ("pending", Some(2)));
    assert_eq!(
        p.last_reason.as_deref(),
        Some(
            "visa: auth-code-or-nothing(no code: no time condition) → 2 candidates; \
             user-last-four → n/a (no cardholder); ambiguous after fallbacks user-last-four"
        )
    );
    for raw in ["SG-POS-000990", "SG-POS-000991", "SG-POS-000992"] {
        let tx = w.tx_with_extra("stonegate", "transaction_id", raw).await;
        assert_eq!(w.explain(tx).await.stage, "pending", "{raw}");
    }
}

/// Itsu × Visa with an auth code: AC0 keeps the two same-code rows of the
/// day (a third row with another code goes), the cardholder's last four
/// picks one. Itsu rows carry a store id, expanded to the location's MIDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn itsu_visa_same_code_resolved_by_user_last_four() {
    let w = World::start().await;
    w.merchant("itsu", match_mode()).await;
    w.mids(&[
        ("ITSU-CAID-17", "visa", "itsu", Some("17")),
        ("9449001717", "amex", "itsu", Some("17")),
    ])
    .await;
    w.cards(&[("tok-itsu-4821", "475129", "4821")]).await;
    w.import("visa-auth", "itsu/visa-auth.ndjson").await;
    w.import("itsu", "itsu/itsu.csv").await;
    w.run().await;

    assert_eq!(
        w.pairs("itsu").await,
        [pair(
            "matched",
            "visa-auth:SVRTVS1WSVNBLTAwMQ",
            Some("itsu:017/007/48213")
        )]
    );
    let e = w.explain(w.tx("itsu", "017/007/48213").await).await;
    assert_eq!(
        e.scheme.as_ref().unwrap().mids,
        ["9449001717", "ITSU-CAID-17"]
    );
    let m = e.matched.unwrap();
    assert_eq!(
        m.reason,
        "visa: auth-code-or-nothing → 2 candidates; user-last-four → 1 candidate"
    );
    assert_eq!((m.confidence, m.candidates), (Some(80), Some(3)));
    for other in ["017/007/48216", "017/007/48217"] {
        assert_eq!(
            w.explain(w.tx("itsu", other).await).await.stage,
            "pending",
            "{other}"
        );
    }
}

/// matching-rules.md §7: Itsu has no Amex rule. The Amex payment has its
/// candidate, the matcher refuses, the payment stays pending saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn itsu_amex_is_unsupported_and_stays_pending_with_the_reason() {
    let w = World::start().await;
    w.merchant("itsu", match_mode()).await;
    w.mids(&[
        ("ITSU-CAID-17", "visa", "itsu", Some("17")),
        ("9449001717", "amex", "itsu", Some("17")),
    ])
    .await;
    w.cards(&[("amx-itsu-1007", "374245", "1007")]).await;
    // The merchant side first: staged in the payment's own run (the two
    // sides side by side) it may come after the payment's first attempt,
    // and flag it for a second one.
    w.import("itsu", "itsu/itsu.csv").await;
    w.run().await;
    w.import("amex-settlement", "itsu/amex-settlement.json")
        .await;
    let stats = w.run().await;
    assert_eq!(
        (stats.decided.matched, stats.decided.unmatched),
        (0, 1),
        "{stats:?}"
    );

    let e = w
        .explain(w.tx("amex-settlement", "SVRTVS1BTUVYLTAwMQ").await)
        .await;
    assert_eq!(e.stage, "pending");
    assert!(e.matched.is_none());
    let p = e.payment.unwrap();
    assert_eq!(
        (p.first_six.as_deref(), p.last_four.as_deref()),
        (Some("374245"), Some("1007"))
    );
    assert_eq!(
        p.last_reason.as_deref(),
        Some("amex not supported for itsu")
    );
    assert_eq!(
        (p.last_candidates, p.last_plugin.as_deref()),
        (Some(1), Some("harmonia@0.1.0"))
    );
    assert_eq!(
        w.explain(w.tx("itsu", "018/001/00001").await).await.stage,
        "pending"
    );
    assert!(w.matches("itsu").await.is_empty());
}

/// matching-rules.md §3 (Visa: same VipTransactionId → same settlement
/// key): auth and settlement of one purchase are one payment carrying the
/// settled amount; a settlement arriving after its auth was matched is
/// recorded (`ignored`) and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costa_visa_auth_and_settlement_collapse_and_a_late_settlement_is_ignored() {
    let w = World::start().await;
    w.merchant("costa", match_mode()).await;
    w.mids(&[("COSTA-MID-7781", "visa", "costa", None)]).await;
    w.cards(&[("tok-costa-1", "454321", "4821")]).await;
    w.import("visa-auth", "costa/visa-auth.ndjson").await;
    w.import("visa-settlement", "costa/visa-settlement.json")
        .await;
    w.import("costa", "costa/costa.json").await;
    let stats = w.run().await;
    assert_eq!(
        (
            stats.staged.payments_created,
            stats.staged.payments_settled,
            stats.staged.legs_ignored
        ),
        (2, 1, 0),
        "{stats:?}"
    );

    let auth1 = w.tx("visa-auth", "Q09TVEEtVklTQS0wMDE").await;
    let settled1 = w.tx("visa-settlement", "Q09TVEEtVklTQS0wMDE").await;
    let auth2 = w.tx("visa-auth", "Q09TVEEtVklTQS0wMDI").await;
    // The settled amount (25.00) wins over the auth's (24.50): the 25.00
    // record is the partner, the 24.50 one with the same code stays.
    assert_eq!(
        w.pairs("costa").await,
        [
            pair(
                "matched",
                "visa-auth:Q09TVEEtVklTQS0wMDI",
                Some("costa:COSTA-TX-2024-000502")
            ),
            pair(
                "matched",
                "visa-settlement:Q09TVEEtVklTQS0wMDE",
                Some("costa:COSTA-TX-2024-000501")
            ),
        ]
    );
    let e = w.explain(auth1).await;
    let p1 = e.payment.clone().unwrap();
    assert_eq!(
        (p1.amount_minor, p1.kind.as_str(), p1.transaction_id),
        (2500, "settlement", settled1)
    );
    let key = hex::encode(Sha256::digest(b"visa.Q09TVEEtVklTQS0wMDE"));
    assert_eq!(p1.settlement_key, Some(key));
    let legs: Vec<(i64, &str)> = e
        .legs
        .iter()
        .map(|l| (l.transaction_id, l.action.as_str()))
        .collect();
    assert_eq!(legs, [(auth1, "created"), (settled1, "settled")]);
    assert_eq!(w.explain(settled1).await.payment.unwrap().id, p1.id);
    assert_eq!(
        w.explain(w.tx("costa", "COSTA-TX-2024-000500").await)
            .await
            .stage,
        "pending"
    );

    // The second purchase's settlement arrives after its auth was matched.
    w.import("visa-settlement", "costa/visa-settlement-late.json")
        .await;
    let stats = w.run().await;
    assert_eq!(
        (
            stats.staged.payments_created,
            stats.staged.payments_settled,
            stats.staged.legs_ignored
        ),
        (0, 0, 1),
        "{stats:?}"
    );
    assert_eq!(stats.claimed, 0, "{stats:?}");
    let late = w.tx("visa-settlement", "Q09TVEEtVklTQS0wMDI").await;
    let e = w.explain(late).await;
    let leg: &LegRow = e.leg.as_ref().unwrap();
    let p2 = e.payment.clone().unwrap();
    assert_eq!(
        (leg.action.as_str(), leg.payment_id, leg.note.as_deref()),
        (
            "ignored",
            Some(p2.id),
            Some("settlement for a payment already matched")
        )
    );
    assert_eq!(
        (p2.transaction_id, p2.amount_minor, p2.status.as_str()),
        (auth2, 385, "matched")
    );
    assert_eq!(w.payments(Some("costa"), None).await.len(), 2);
    assert_eq!(w.matches("costa").await.len(), 2);
    assert_eq!(w.count("SELECT count(*) FROM payments").await, 2);
}

/// Late merchant data: the payment waits with no candidates; the merchant
/// file arriving later flags it, and it matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgi_fridays_merchant_file_after_the_payment_matches_on_the_next_run() {
    let w = World::start().await;
    w.merchant("tgi-fridays", match_mode()).await;
    w.mids(&[("TGIMID-0042", "visa", "tgi-fridays", None)])
        .await;
    w.cards(&[("tok-tgi-1", "454321", "4821")]).await;
    w.import("visa-auth", "tgi-fridays/visa-auth.ndjson").await;
    w.run().await;

    let visa = w.tx("visa-auth", "VEdJLVZJU0EtMDAx").await;
    let p = w.payment(visa).await;
    assert_eq!(
        (p.status.as_str(), p.attempts, p.last_candidates),
        ("pending", 1, Some(0))
    );
    assert!(
        p.last_reason
            .as_deref()
            .unwrap()
            .starts_with("no candidates"),
        "{p:?}"
    );
    assert!(w.matches("tgi-fridays").await.is_empty());

    w.import("tgi-fridays", "tgi-fridays/tgi-fridays.csv").await;
    let stats = w.run().await;
    assert_eq!(
        (stats.staged.payments_flagged, stats.decided.matched),
        (1, 1),
        "{stats:?}"
    );
    // merchant-feeds.md §4 test vector: 21.50 + 3.00 gratuity = 24.50.
    let tgi = "1a211a2509bb9fb3d125c7a5af4dff38460df5c4e1152694e72426c66f7675c5";
    assert_eq!(
        w.pairs("tgi-fridays").await,
        [pair(
            "matched",
            "visa-auth:VEdJLVZJU0EtMDAx",
            Some(&format!("tgi-fridays:{tgi}"))
        )]
    );
    let m = w.explain(visa).await.matched.unwrap();
    assert_eq!(m.reason, "visa: auth-code-or-nothing → 1 candidate");
    assert_eq!(m.confidence, Some(100));
    assert_eq!(w.payment(visa).await.attempts, 2);
}

/// Refunds are streamed, never matched: neither the payment-side refunds
/// (Visa, Mastercard) nor the merchant's negative rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_streamed_never_matched() {
    let w = World::start().await;
    w.merchant("iceland-bonus-card", match_mode()).await;
    w.mids(&[
        ("ICE-STORE-0457", "visa", "iceland-bonus-card", None),
        ("ICE-STORE-0457", "mastercard", "iceland-bonus-card", None),
    ])
    .await;
    w.cards(&[
        ("tok-visa-5f3a91", "454321", "4821"),
        ("mc-token-ice-001", "512345", "0077"),
    ])
    .await;
    w.import("iceland", "refunds/iceland.csv").await;
    w.import("visa-refund", "refunds/visa-refund.ndjson").await;
    w.import("mastercard-refund", "refunds/mastercard-refund.txt")
        .await;
    let stats = w.run().await;
    assert_eq!(
        (stats.claimed, stats.staged.scheme_refunds),
        (0, 2),
        "{stats:?}"
    );

    assert_eq!(
        w.pairs("iceland-bonus-card").await,
        [
            pair("streamed", "mastercard-refund:R1B2C3D4E_20240310", None),
            pair("streamed", "visa-refund:UkVGLVNZTlRILTAwMDI", None),
        ]
    );
    for m in w.matches("iceland-bonus-card").await {
        assert_eq!(
            (m.reason.as_str(), m.actor.as_str(), m.scheme_id, m.plugin),
            ("refunds are streamed, never matched", "accord", None, None)
        );
    }
    for p in w.payments(Some("iceland-bonus-card"), None).await {
        assert_eq!(
            (p.status.as_str(), p.kind.as_str(), p.amount_minor),
            ("streamed", "refund", -2450)
        );
    }
    for id in ["ICE-RF-0001", "ICE-RF-0002"] {
        let e = w.explain(w.tx("iceland", id).await).await;
        assert_eq!(
            (e.stage.as_str(), e.matched.is_none()),
            ("refund", true),
            "{id}"
        );
    }
    assert_eq!(
        w.count("SELECT count(*) FROM matches WHERE scheme_id IS NOT NULL")
            .await,
        0
    );
}

/// A spot merchant: every identified payment is a SPOTTED match; an Amex
/// auth never becomes a payment, its settlement does (payment-feeds.md §2.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_merchant_spots_payments_and_ignores_amex_auths() {
    let w = World::start().await;
    w.merchant("the-works", mode(MerchantMode::Spot)).await;
    w.mids(&[
        ("WORKS-CAID-1", "visa", "the-works", None),
        ("9449001234", "amex", "the-works", None),
    ])
    .await;
    w.import("visa-auth", "spot/visa-auth.ndjson").await;
    w.import("amex-auth", "spot/amex-auth.ndjson").await;
    w.import("amex-settlement", "spot/amex-settlement.json")
        .await;
    let stats = w.run().await;
    assert_eq!(stats.claimed, 0, "nothing for a matcher: {stats:?}");

    assert_eq!(
        w.pairs("the-works").await,
        [
            pair("spotted", "amex-settlement:QU1YLVNZTlRILTAwMDM", None),
            pair("spotted", "visa-auth:V09SS1MtVklTQS0wMDE", None),
        ]
    );
    for m in w.matches("the-works").await {
        assert_eq!(
            (m.reason.as_str(), m.actor.as_str()),
            (
                "spot merchant: every identified payment is a match",
                "accord"
            )
        );
    }
    let e = w
        .explain(w.tx("amex-auth", "QU1YLVNZTlRILTAwMDM").await)
        .await;
    assert_eq!((e.stage.as_str(), e.payment.is_none()), ("ignored", true));
    let leg = e.leg.unwrap();
    assert_eq!(
        (leg.action.as_str(), leg.payment_id, leg.note.as_deref()),
        (
            "ignored",
            None,
            Some("Amex authorisation of a spot merchant: the settlement stands for the purchase")
        )
    );
    let p = w
        .payment(w.tx("amex-settlement", "QU1YLVNZTlRILTAwMDM").await)
        .await;
    assert_eq!(
        (
            p.status.as_str(),
            p.amount_minor,
            p.first_six.as_deref(),
            p.last_four.as_deref()
        ),
        ("spotted", 2450, Some("374245"), Some("1007"))
    );
    assert_eq!(w.payments(Some("the-works"), None).await.len(), 2);
}

/// A stream merchant: payments go straight on (`streamed`), Amex auths
/// are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_merchant_streams_payments() {
    let w = World::start().await;
    w.merchant("squaremeal", mode(MerchantMode::Stream)).await;
    w.mids(&[
        ("SQM-CAID-1", "visa", "squaremeal", None),
        ("SQM-MC-1", "mastercard", "squaremeal", None),
        ("9449007777", "amex", "squaremeal", None),
    ])
    .await;
    w.import("visa-auth", "stream/visa-auth.ndjson").await;
    w.import("mastercard-auth", "stream/mastercard-auth.ndjson")
        .await;
    w.import("amex-auth", "stream/amex-auth.ndjson").await;
    let stats = w.run().await;
    assert_eq!(stats.claimed, 0, "{stats:?}");

    assert_eq!(
        w.pairs("squaremeal").await,
        [
            pair("streamed", "mastercard-auth:SQM000001_20240309", None),
            pair("streamed", "visa-auth:U1FNLVZJU0EtMDAx", None),
        ]
    );
    for m in w.matches("squaremeal").await {
        assert_eq!(m.reason, "stream merchant: straight on to routing");
    }
    let statuses: Vec<String> = w
        .payments(Some("squaremeal"), None)
        .await
        .into_iter()
        .map(|p| p.status)
        .collect();
    assert_eq!(statuses, ["streamed", "streamed"]);
    let e = w.explain(w.tx("amex-auth", "U1FNLUFNRVgtMDAx").await).await;
    assert_eq!(e.stage, "ignored");
    assert_eq!(
        e.leg.unwrap().note.as_deref(),
        Some("Amex authorisation of a stream merchant: the settlement stands for the purchase")
    );
}

/// A payment whose MID nobody registered is kept, visibly unidentified;
/// onboarding the MID later identifies and matches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unidentified_payment_is_identified_and_matched_once_its_mid_is_onboarded() {
    let w = World::start().await;
    w.merchant("wasabi-club", match_mode()).await;
    w.mids(&[("WAS-EFT-31337", "visa", "wasabi-club", None)])
        .await;
    w.cards(&[("tok-visa-5f3a91", "454321", "4821")]).await;
    w.import("visa-auth", "unidentified/visa-auth.ndjson").await;
    w.import("wasabi", "unidentified/wasabi.csv").await;
    let stats = w.run().await;
    assert_eq!(
        (stats.staged.unidentified, stats.claimed),
        (1, 0),
        "{stats:?}"
    );

    let visa = w.tx("visa-auth", "VU5JRC1WSVNBLTAwMQ").await;
    let unidentified = w.payments(None, Some("unidentified")).await;
    assert_eq!(unidentified.len(), 1);
    let p = &unidentified[0];
    assert_eq!(
        (
            p.transaction_id,
            p.merchant.as_deref(),
            p.mid.as_str(),
            p.note.as_deref()
        ),
        (visa, None, "WAS-EFT-40404", Some("no registered MID"))
    );
    // The merchant's record is assigned by its source, and waits.
    assert_eq!(
        w.explain(w.tx("wasabi", "0000A0000000404040404").await)
            .await
            .stage,
        "pending"
    );

    w.mids(&[("WAS-EFT-40404", "visa", "wasabi-club", None)])
        .await;
    let stats = w.run().await;
    assert_eq!(
        (
            stats.reidentified.payments_identified,
            stats.decided.matched
        ),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(
        w.pairs("wasabi-club").await,
        [pair(
            "matched",
            "visa-auth:VU5JRC1WSVNBLTAwMQ",
            Some("wasabi:0000A0000000404040404")
        )]
    );
    let p = w.payment(visa).await;
    assert_eq!(
        (p.merchant.as_deref(), p.note.as_deref()),
        (Some("wasabi-club"), None)
    );
    assert!(w.payments(None, Some("unidentified")).await.is_empty());
}

/// The unmatched sweep: a merchant with `unmatched_after_days = 2` turns a
/// pending payment UNMATCHED once its date is before the start of
/// (today − 2 days); matched payments and merchants without the setting
/// are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_sweep_after_the_merchants_days() {
    let w = World::start().await;
    w.merchant(
        "stonegate",
        SettingsPatch {
            unmatched_after_days: Some(Some(2)),
            ..Default::default()
        },
    )
    .await;
    w.merchant("wasabi-club", match_mode()).await;
    w.mids(&[
        ("SG-CAID-0981", "visa", "stonegate", Some("SG-LOC-0981")),
        ("WAS-EFT-31337", "visa", "wasabi-club", None),
        ("SQM-MC-1", "mastercard", "stonegate", None),
    ])
    .await;
    w.cards(&[
        ("tok-sg-4821", "454321", "4821"),
        ("tok-visa-5f3a91", "454321", "4821"),
    ])
    .await;
    w.import("visa-auth", "sweep/visa-auth.ndjson").await;
    w.import("stonegate", "sweep/stonegate.ndjson").await;
    // A Mastercard auth of 2024-03-09 20:30: its settlement is still to come.
    w.import("mastercard-auth", "stream/mastercard-auth.ndjson")
        .await;
    // Stage and match only: run_until_idle would sweep with the real clock.
    let mut stats = MatchStats::default();
    engine::stage_pending(&w.ctx, &mut stats).await.unwrap();
    engine::match_pending(&w.ctx, &mut stats).await.unwrap();
    assert_eq!(stats.decided.matched, 1, "{stats:?}");

    let matched = w.tx("visa-auth", "U1dFRVAtVklTQS0wMDE").await;
    let old = w.tx("visa-auth", "U1dFRVAtVklTQS0wMDI").await;
    let wasabi = w.tx("visa-auth", "U1dFRVAtVklTQS0wMDM").await;
    assert_eq!(w.payment(old).await.status, "pending");

    // Dated 2024-03-09 18:50: not before the start of 2024-03-11 − 2 days.
    let swept = w
        .store()
        .sweep_unmatched(at(2024, 3, 11, 23, 59, 59), 1000)
        .await
        .unwrap();
    assert_eq!(swept, 0);
    assert_eq!(w.payment(old).await.status, "pending");

    let swept = w
        .store()
        .sweep_unmatched(at(2024, 3, 12, 0, 0, 0), 1000)
        .await
        .unwrap();
    assert_eq!(swept, 1);
    let e = w.explain(old).await;
    assert_eq!(e.stage, "unmatched");
    let mc_auth = w.tx("mastercard-auth", "SQM000001_20240309").await;
    assert_eq!(
        w.payment(mc_auth).await.status,
        "pending",
        "a Mastercard auth is swept only once settled (matching-rules.md §9)"
    );
    let m = e.matched.unwrap();
    assert_eq!(
        (
            m.kind.as_str(),
            m.reason.as_str(),
            m.actor.as_str(),
            m.scheme_id
        ),
        (
            "unmatched",
            "no partner within 2 days of the transaction date",
            "accord",
            None
        )
    );
    assert_eq!(w.payment(matched).await.status, "matched");
    assert_eq!(
        w.payment(wasabi).await.status,
        "pending",
        "wasabi has no unmatched_after_days"
    );
    assert_eq!(
        w.store()
            .sweep_unmatched(at(2030, 1, 1, 0, 0, 0), 1000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        w.pairs("stonegate").await,
        [
            pair(
                "matched",
                "visa-auth:U1dFRVAtVklTQS0wMDE",
                Some("stonegate:7daa2816921b7313dee3aab14819f069e2d98ef84c2ec68f881b7ddf408136ab")
            ),
            pair("unmatched", "visa-auth:U1dFRVAtVklTQS0wMDI", None),
        ]
    );
}

/// Tolerance and review: with a 5p tolerance an inexact candidate is
/// selected; a time-window decision on it (confidence 90, less harmonia's 30
/// for an inexact amount) under an auto-confirm threshold of 100 opens a
/// review. Confirmed → a match by the reviewer;
/// rejected → pending again, and that candidate is never offered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tolerance_and_review_confirm_and_reject() {
    let w = World::start().await;
    w.merchant(
        "costa",
        SettingsPatch {
            tolerance_minor: Some(5),
            auto_confirm_confidence: Some(100),
            ..Default::default()
        },
    )
    .await;
    w.mids(&[("COSTA-MID-7781", "visa", "costa", None)]).await;
    w.cards(&[("tok-costa-1", "454321", "4821")]).await;
    w.import("visa-auth", "review/visa-auth.ndjson").await;
    w.import("costa", "review/costa.json").await;
    let stats = w.run().await;
    assert_eq!(
        (stats.decided.reviews, stats.decided.matched),
        (2, 0),
        "{stats:?}"
    );
    assert!(w.matches("costa").await.is_empty());

    let names = w.names().await;
    let open = w
        .store()
        .list_reviews(Some("open"), None, None)
        .await
        .unwrap()
        .items;
    let mut offered: Vec<(String, String, i16, i32)> = open
        .iter()
        .map(|r| {
            (
                names[&r.payment_transaction_id].clone(),
                names[&r.merchant_transaction_id].clone(),
                r.confidence,
                r.candidates,
            )
        })
        .collect();
    offered.sort();
    // 24.52 is within 5p of 24.50 and chosen by the time window (90, less
    // 30 for the inexact amount); 24.56 is not a candidate.
    assert_eq!(
        offered,
        [
            (
                s("visa-auth:UkVWLVZJU0EtMDAx"),
                s("costa:COSTA-TX-R-11"),
                60,
                2
            ),
            (
                s("visa-auth:UkVWLVZJU0EtMDAy"),
                s("costa:COSTA-TX-R-21"),
                60,
                2
            ),
        ]
    );
    let p1 = w.tx("visa-auth", "UkVWLVZJU0EtMDAx").await;
    let p2 = w.tx("visa-auth", "UkVWLVZJU0EtMDAy").await;
    let review_of = |tx: i64| {
        open.iter()
            .find(|r| r.payment_transaction_id == tx)
            .unwrap()
            .clone()
    };
    let (r1, r2) = (review_of(p1), review_of(p2));
    let r1_reason = "visa: auth-code → 2 candidates; time-window(60s) → 1 candidate; \
         amount differs by 2 minor units (within tolerance)";
    assert_eq!(r1.reason, r1_reason);
    assert_eq!(
        (r1.plugin.name.as_str(), r1.plugin.version.as_str()),
        ("harmonia", "0.1.0")
    );
    let payment1 = w.payment(p1).await;
    assert_eq!(payment1.status, "review");
    assert!(
        payment1
            .last_reason
            .as_deref()
            .unwrap()
            .ends_with("confidence 60 is below the auto-confirm threshold: sent to review"),
        "{payment1:?}"
    );

    // Confirm: a match, by the reviewer.
    let confirmed = w
        .store()
        .decide_review(r1.id, true, "api:ops", Some("receipt checked"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            confirmed.status.as_str(),
            confirmed.decided_by.as_deref(),
            confirmed.note.as_deref()
        ),
        ("confirmed", Some("api:ops"), Some("receipt checked"))
    );
    let m = w.explain(p1).await.matched.unwrap();
    assert_eq!(
        (
            m.kind.as_str(),
            m.actor.as_str(),
            m.confidence,
            m.candidates
        ),
        ("matched", "api:ops", Some(60), Some(2))
    );
    assert_eq!(m.reason, format!("{r1_reason} (confirmed by api:ops)"));
    assert_eq!(m.plugin.map(|p| p.name), Some(s("harmonia")));
    assert_eq!(w.payment(p1).await.status, "matched");
    assert_eq!(
        w.explain(w.tx("costa", "COSTA-TX-R-11").await).await.stage,
        "matched"
    );
    assert_eq!(
        w.explain(w.tx("costa", "COSTA-TX-R-12").await).await.stage,
        "pending"
    );

    // Reject: pending again at once; a decided review cannot be decided again.
    let rejected = w
        .store()
        .decide_review(r2.id, false, "api:ops", Some("wrong basket"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rejected.status, "rejected");
    assert_eq!(w.payment(p2).await.status, "pending");
    let again = w
        .store()
        .decide_review(r2.id, true, "api:ops", None)
        .await
        .unwrap();
    assert!(matches!(again, Err(RedressError::Conflict(_))), "{again:?}");

    // The next run never offers R-21 again: R-22 is the only candidate left.
    let stats = w.run().await;
    assert_eq!(
        (stats.decided.matched, stats.decided.reviews),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(
        w.pairs("costa").await,
        [
            pair(
                "matched",
                "visa-auth:UkVWLVZJU0EtMDAx",
                Some("costa:COSTA-TX-R-11")
            ),
            pair(
                "matched",
                "visa-auth:UkVWLVZJU0EtMDAy",
                Some("costa:COSTA-TX-R-22")
            ),
        ]
    );
    let e = w.explain(p2).await;
    let m = e.matched.unwrap();
    assert_eq!(
        (m.reason.as_str(), m.confidence, m.candidates),
        ("visa: auth-code → 1 candidate", Some(100), Some(1))
    );
    let reviews: Vec<(&str, i64)> = e
        .reviews
        .iter()
        .map(|r| (r.status.as_str(), r.scheme_id))
        .collect();
    assert_eq!(reviews, [("rejected", r2.scheme_id)]);
    assert_eq!(
        w.explain(w.tx("costa", "COSTA-TX-R-21").await).await.stage,
        "pending"
    );
    assert!(
        w.store()
            .list_reviews(Some("open"), None, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Two payments of one batch choose the same record, one confidently (a
/// match), one below the auto-confirm threshold (a review): the review must
/// not be opened on a record that is already matched; that payment tries
/// again with what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_review_is_opened_on_a_record_matched_in_the_same_batch() {
    let w = World::start().await;
    w.merchant(
        "costa",
        SettingsPatch {
            tolerance_minor: Some(2),
            ..Default::default()
        },
    )
    .await;
    w.mids(&[("COSTA-MID-7781", "visa", "costa", None)]).await;
    w.cards(&[("tok-costa-1", "454321", "4821")]).await;
    // The merchant side first (see the Itsu Amex test): the attempts are
    // counted below.
    w.import("costa", "review-race/costa.json").await;
    w.run().await;
    w.import("visa-auth", "review-race/visa-auth.ndjson").await;
    // 24.50 sees only RACE-1 (24.50): a match at 100. 24.52 sees RACE-1 and
    // RACE-2 (24.54); T(60) picks RACE-1 at 90 − 30 (inexact): below the
    // default 80, a review — but RACE-1 is taken in the same batch. Tried
    // again, 24.52 sees only RACE-2: 100 − 30, a review on RACE-2.
    let stats = w.run().await;
    assert_eq!(
        (
            stats.decided.matched,
            stats.decided.lost,
            stats.decided.reviews
        ),
        (1, 1, 1),
        "{stats:?}"
    );
    assert_eq!(
        w.pairs("costa").await,
        [pair(
            "matched",
            "visa-auth:UkFDRS1WSVNBLTAwMQ",
            Some("costa:COSTA-TX-RACE-1")
        )]
    );
    let names = w.names().await;
    let open: Vec<(String, String, i16, String)> = w
        .store()
        .list_reviews(Some("open"), None, None)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| {
            (
                names[&r.payment_transaction_id].clone(),
                names[&r.merchant_transaction_id].clone(),
                r.confidence,
                r.reason,
            )
        })
        .collect();
    assert_eq!(
        open,
        [(
            s("visa-auth:UkFDRS1WSVNBLTAwMg"),
            s("costa:COSTA-TX-RACE-2"),
            70,
            s("visa: auth-code → 1 candidate; amount differs by 2 minor units (within tolerance)")
        )]
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM reviews r JOIN scheme_transactions s ON s.id = r.scheme_id \
             WHERE r.status = 'open' AND s.status <> 'pending'"
        )
        .await,
        0,
        "no open review on a matched record"
    );
    let p = w
        .payment(w.tx("visa-auth", "UkFDRS1WSVNBLTAwMg").await)
        .await;
    assert_eq!((p.status.as_str(), p.attempts), ("review", 2));
}

/// Force match (matching-rules.md §10): a person pairs two transactions no
/// rule would; recorded as `forced` with the reason and the actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_match_is_recorded_with_reason_and_actor() {
    let w = World::start().await;
    w.merchant("wasabi-club", match_mode()).await;
    w.mids(&[("WAS-EFT-31337", "visa", "wasabi-club", None)])
        .await;
    w.import("visa-auth", "force/visa-auth.ndjson").await;
    w.import("wasabi", "force/wasabi.csv").await;
    w.run().await;
    let visa = w.tx("visa-auth", "Rk9SQ0UtVklTQS0wMDE").await;
    let receipt = w.tx("wasabi", "0000A0000000700000001").await;
    let p = w.payment(visa).await;
    assert_eq!((p.status.as_str(), p.last_candidates), ("pending", Some(0)));

    // A payment-side transaction is not a merchant record.
    let wrong = w
        .store()
        .force_match(visa, visa, "typo", "api:ops")
        .await
        .unwrap();
    assert!(matches!(wrong, Err(RedressError::NotFound(_))), "{wrong:?}");

    let reason = "till receipt 700000001 shows this card; amount keyed wrongly";
    let m = w
        .store()
        .force_match(visa, receipt, reason, "api:ops")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            m.kind.as_str(),
            m.reason.as_str(),
            m.actor.as_str(),
            m.plugin.as_ref(),
            m.confidence
        ),
        ("forced", reason, "api:ops", None, None)
    );
    assert_eq!(
        (m.payment_transaction_id, m.merchant_transaction_id),
        (visa, Some(receipt))
    );
    assert_eq!(
        w.pairs("wasabi-club").await,
        [pair(
            "forced",
            "visa-auth:Rk9SQ0UtVklTQS0wMDE",
            Some("wasabi:0000A0000000700000001")
        )]
    );
    assert_eq!(w.payment(visa).await.status, "forced");
    let e = w.explain(receipt).await;
    assert_eq!(
        (e.stage.as_str(), e.matched.map(|m| m.id)),
        ("matched", Some(m.id))
    );

    let again = w
        .store()
        .force_match(visa, receipt, reason, "api:ops")
        .await
        .unwrap();
    assert!(matches!(again, Err(RedressError::Conflict(_))), "{again:?}");
    assert_eq!(w.matches("wasabi-club").await.len(), 1);
    // A forced payment is decided: the engine leaves it alone.
    assert_eq!(w.run().await.claimed, 0);
}

/// Visa auths sharing one auth code, amount and time; one Wasabi record.
fn contested_auths(n: usize) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..n {
        out.push_str(
            &json!({
                "ExternalUserId": "tok-visa-5f3a91",
                "MessageElementsCollection": [
                    {"Key": "Transaction.VipTransactionId", "Value": format!("CONTESTED-{i:03}")},
                    {"Key": "Transaction.TimeStampYYMMDD", "Value": "2024-03-09T12:00:00"},
                    {"Key": "Transaction.TransactionAmount", "Value": "20.00"},
                    {"Key": "Transaction.MerchantCardAcceptorId", "Value": "WAS-EFT-31337"},
                    {"Key": "Transaction.VisaStoreId", "Value": ""},
                    {"Key": "Transaction.VisaMerchantId", "Value": ""},
                    {"Key": "Transaction.AuthCode", "Value": "777777"},
                ],
            })
            .to_string(),
        );
        out.push('\n');
    }
    out.into_bytes()
}

const WASABI_HEADER: &str = "Store No_,Entry No_,Transaction No_,Tender Type,Amount,Card Number,\
     Card Type Name,Auth_code,Authorisation Ok,Date,Time,EFT Merchant No_,Receipt No_\n";

/// Decide a claimed batch with the real matcher, as the engine does.
async fn decide(ctx: &Context, batch: &MatchBatch) -> Vec<(i64, Verdict)> {
    let runtime = ctx.runtime.clone();
    let work: Vec<(i64, Vec<i64>, MatchGroup, String)> = batch
        .work
        .iter()
        .flat_map(|mw| {
            mw.payments.iter().map(|pw| {
                (
                    pw.payment_id,
                    pw.candidate_ids.clone(),
                    pw.group.clone(),
                    mw.merchant.slug.clone(),
                )
            })
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        work.into_iter()
            .map(|(payment_id, ids, group, slug)| {
                let mut session = runtime
                    .open_matcher("harmonia", Some(&json!({ "merchant": slug })))
                    .unwrap();
                let d = session.decide(&[&group]).unwrap().remove(0);
                let verdict = Verdict::Match {
                    scheme_id: ids[d.chosen.expect("a choice")],
                    reason: d.reason,
                    confidence: d.confidence,
                    candidates: ids.len(),
                    plugin: session.identity().clone(),
                };
                (payment_id, verdict)
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Two workers hold claims on two payments whose matcher picks the same
/// merchant record, and commit at once: one match, the other payment
/// loses, stays flagged and then finds nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_claims_choosing_the_same_candidate_end_in_one_match() {
    let w = World::start().await;
    w.merchant("wasabi-club", match_mode()).await;
    w.mids(&[("WAS-EFT-31337", "visa", "wasabi-club", None)])
        .await;
    w.import_bytes("visa-auth", "contested.ndjson", contested_auths(2))
        .await;
    let csv = format!(
        "{WASABI_HEADER}W012,80001,900800001,3,20.00,454321******4821,Visa,777777,1,09/03/2024,12:00:30,WAS-EFT-31337,CONTESTED-R\n"
    );
    w.import_bytes("wasabi", "contested.csv", csv.into_bytes())
        .await;
    let mut stats = MatchStats::default();
    engine::stage_pending(&w.ctx, &mut stats).await.unwrap();

    let other = w.second_context().await;
    let a = w
        .store()
        .claim_match_batch(1)
        .await
        .unwrap()
        .expect("a claims one");
    let b = other
        .store
        .claim_match_batch(1)
        .await
        .unwrap()
        .expect("b claims the other");
    assert!(
        w.store().claim_match_batch(1).await.unwrap().is_none(),
        "both are claimed"
    );
    let (pa, pb) = (
        a.work[0].payments[0].payment_id,
        b.work[0].payments[0].payment_id,
    );
    assert_ne!(pa, pb);
    assert_eq!(
        a.work[0].payments[0].candidate_ids,
        b.work[0].payments[0].candidate_ids
    );
    let (va, vb) = (decide(&w.ctx, &a).await, decide(&other, &b).await);
    let (ca, cb) = tokio::join!(a.commit(va), b.commit(vb));
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    assert_eq!(
        (ca.matched + cb.matched, ca.lost + cb.lost),
        (1, 1),
        "{ca:?} {cb:?}"
    );

    let winner = if ca.matched == 1 { pa } else { pb };
    let loser = if winner == pa { pb } else { pa };
    assert_eq!(w.count("SELECT count(*) FROM matches").await, 1);
    let flagged: (String, bool, String) =
        sqlx::query_as("SELECT status, needs_match, last_reason FROM payments WHERE id = $1")
            .bind(loser)
            .fetch_one(w.store().pool())
            .await
            .unwrap();
    assert_eq!((flagged.0.as_str(), flagged.1), ("pending", true));
    assert!(
        flagged.2.contains("matched to another payment first"),
        "{flagged:?}"
    );

    let stats = w.run().await;
    assert_eq!((stats.claimed, stats.decided.matched), (1, 0), "{stats:?}");
    let status: (String, Option<i32>) =
        sqlx::query_as("SELECT status, last_candidates FROM payments WHERE id = $1")
            .bind(loser)
            .fetch_one(w.store().pool())
            .await
            .unwrap();
    assert_eq!(status, (s("pending"), Some(0)));
    let matched: i64 = sqlx::query_scalar("SELECT payment_id FROM matches")
        .fetch_one(w.store().pool())
        .await
        .unwrap();
    assert_eq!(matched, winner);
    other.store.close().await;
}

/// Payments wanting the same merchant records, for the concurrency tests:
/// `2 × records` payments where every merchant record is wanted by exactly
/// two (payment i wants record i % records: its own code and amount), staged.
async fn competing_payments(records: usize) -> World {
    competing_payments_in(World::start().await, records).await
}

/// [`competing_payments`] in world `w`.
async fn competing_payments_in(w: World, records: usize) -> World {
    w.merchant("wasabi-club", match_mode()).await;
    w.mids(&[("WAS-EFT-31337", "visa", "wasabi-club", None)])
        .await;
    w.cards(&[("tok-visa-5f3a91", "454321", "4821")]).await;
    // Payment i wants record i % records (its own code and amount), so
    // payments k and k + records compete; with batches of 2000 claimed by
    // two workers, most pairs straddle the two batches.
    let mut auths = String::new();
    let mut csv = String::from(WASABI_HEADER);
    for i in 0..2 * records {
        let k = i % records;
        auths.push_str(
            &json!({
                "ExternalUserId": "tok-visa-5f3a91",
                "MessageElementsCollection": [
                    {"Key": "Transaction.VipTransactionId", "Value": format!("PAY-{i:05}-K-{k:05}")},
                    {"Key": "Transaction.TimeStampYYMMDD", "Value": "2024-03-09T12:00:00"},
                    {"Key": "Transaction.TransactionAmount", "Value": format!("{}.{:02}", 10 + k / 100, k % 100)},
                    {"Key": "Transaction.MerchantCardAcceptorId", "Value": "WAS-EFT-31337"},
                    {"Key": "Transaction.VisaStoreId", "Value": ""},
                    {"Key": "Transaction.VisaMerchantId", "Value": ""},
                    {"Key": "Transaction.AuthCode", "Value": format!("{:06}", 100_000 + k)},
                ],
            })
            .to_string(),
        );
        auths.push('\n');
    }
    for k in 0..records {
        csv.push_str(&format!(
            "W012,{k},{k},3,{}.{:02},454321******4821,Visa,{:06},1,09/03/2024,12:00:30,WAS-EFT-31337,REC-{k:05}\n",
            10 + k / 100,
            k % 100,
            100_000 + k
        ));
    }
    w.import_bytes("visa-auth", "many.ndjson", auths.into_bytes())
        .await;
    w.import_bytes("wasabi", "many.csv", csv.into_bytes()).await;
    let mut staged = MatchStats::default();
    engine::stage_pending(&w.ctx, &mut staged).await.unwrap();
    assert_eq!(staged.staged.payments_created, 2 * records as u64);

    w
}

/// A claim given the cursor of an earlier claim takes only the payments
/// after it (merchant, then payment order); without one it starts from the
/// first flagged payment again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_after_a_cursor_takes_the_payments_after_it() {
    let w = competing_payments(4).await;
    let ids = |b: &MatchBatch| -> Vec<i64> {
        b.work
            .iter()
            .flat_map(|mw| mw.payments.iter().map(|p| p.payment_id))
            .collect()
    };
    let flagged: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM payments WHERE needs_match AND status = 'pending' ORDER BY merchant, id",
    )
    .fetch_all(w.store().pool())
    .await
    .unwrap();
    assert_eq!(flagged.len(), 8);

    let first = w
        .store()
        .claim_match_batch_in(3, ClaimScope::All, None)
        .await
        .unwrap()
        .expect("flagged payments");
    assert_eq!(ids(&first), flagged[..3]);
    let cursor = first.cursor();
    drop(first); // rolled back: the three are free again

    let next = w
        .store()
        .claim_match_batch_in(3, ClaimScope::All, cursor)
        .await
        .unwrap()
        .expect("payments after the cursor");
    assert_eq!(ids(&next), flagged[3..6]);
    let last = w
        .store()
        .claim_match_batch_in(3, ClaimScope::All, next.cursor())
        .await
        .unwrap()
        .expect("the rest");
    assert_eq!(ids(&last), flagged[6..]);
    assert!(
        w.store()
            .claim_match_batch_in(3, ClaimScope::All, last.cursor())
            .await
            .unwrap()
            .is_none(),
        "nothing after the last payment"
    );
    drop((next, last));
    let again = w
        .store()
        .claim_match_batch_in(3, ClaimScope::All, None)
        .await
        .unwrap()
        .expect("from the start");
    assert_eq!(ids(&again), flagged[..3]);
}

/// A payment with more candidates than the claim hands a matcher
/// (`MAX_CANDIDATES`) is not decided: it stays pending with the count, and
/// no record is matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_with_too_many_candidates_stays_pending_with_the_count() {
    let over = accord::store::matching::MAX_CANDIDATES + 1;
    let w = World::start().await;
    w.merchant("wasabi-club", match_mode()).await;
    w.mids(&[("WAS-EFT-31337", "visa", "wasabi-club", None)])
        .await;
    let auth = json!({
        "ExternalUserId": "tok-visa-5f3a91",
        "MessageElementsCollection": [
            {"Key": "Transaction.VipTransactionId", "Value": "PAY-MANY"},
            {"Key": "Transaction.TimeStampYYMMDD", "Value": "2024-03-09T12:00:00"},
            {"Key": "Transaction.TransactionAmount", "Value": "10.00"},
            {"Key": "Transaction.MerchantCardAcceptorId", "Value": "WAS-EFT-31337"},
            {"Key": "Transaction.VisaStoreId", "Value": ""},
            {"Key": "Transaction.VisaMerchantId", "Value": ""},
            {"Key": "Transaction.AuthCode", "Value": "123456"},
        ],
    });
    let mut csv = String::from(WASABI_HEADER);
    for k in 0..over {
        csv.push_str(&format!(
            "W012,{k},{k},3,10.00,454321******4821,Visa,123456,1,09/03/2024,12:00:30,WAS-EFT-31337,REC-{k:05}\n"
        ));
    }
    // The merchant side first (see the Itsu Amex test).
    w.import_bytes("wasabi", "many.csv", csv.into_bytes()).await;
    w.run().await;
    w.import_bytes("visa-auth", "one.ndjson", format!("{auth}\n").into_bytes())
        .await;
    let decided = w.run().await.decided;
    assert_eq!((decided.matched, decided.unmatched), (0, 1), "{decided:?}");
    let p = w.payment(w.tx("visa-auth", "PAY-MANY").await).await;
    assert_eq!(
        (p.status.as_str(), p.last_candidates),
        ("pending", Some(over as i32)),
        "{p:?}"
    );
    assert!(
        p.last_reason
            .as_deref()
            .is_some_and(|r| r.contains("too ambiguous")),
        "{p:?}"
    );
    assert_eq!(w.count("SELECT count(*) FROM matches").await, 0);
}

/// Every record and every payment of [`competing_payments`] is in at most
/// one match, each record went to one of its own two payments, and the
/// statuses agree with the matches.
async fn assert_one_match_each(w: &World, records: usize) {
    // At most one match per record and per payment, one per record here.
    let count = |sql| w.count(sql);
    assert_eq!(count("SELECT count(*) FROM matches").await, records as i64);
    assert_eq!(
        count("SELECT count(DISTINCT scheme_id) FROM matches").await,
        records as i64
    );
    assert_eq!(
        count("SELECT count(DISTINCT payment_id) FROM matches").await,
        records as i64
    );
    assert_eq!(
        count("SELECT count(*) FROM (SELECT scheme_id FROM matches GROUP BY scheme_id HAVING count(*) > 1) x").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM (SELECT payment_id FROM matches GROUP BY payment_id HAVING count(*) > 1) x").await,
        0
    );
    // Every record went to one of its own two payments.
    assert_eq!(
        count(
            "SELECT count(*) FROM matches x \
             JOIN payments p ON p.id = x.payment_id JOIN transactions pt ON pt.id = p.transaction_id \
             JOIN scheme_transactions s ON s.id = x.scheme_id JOIN transactions st ON st.id = s.transaction_id \
             WHERE split_part(pt.external_id, '-K-', 2) = substr(st.external_id, 5)"
        )
        .await,
        records as i64
    );
    // Statuses agree with the matches: the other payment of each pair waits.
    assert_eq!(
        count("SELECT count(*) FROM payments p WHERE (p.status = 'matched') <> EXISTS (SELECT 1 FROM matches x WHERE x.payment_id = p.id)").await,
        0
    );
    // No record is left a candidate (a match names each).
    assert_eq!(
        count("SELECT count(*) FROM scheme_transactions s WHERE s.status = 'pending' AND NOT EXISTS (SELECT 1 FROM matches x WHERE x.scheme_id = s.id)").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM payments WHERE status = 'pending' AND NOT needs_match").await,
        records as i64
    );
}

/// Two daemons on one database match 3000 payments where every merchant
/// record is wanted by exactly two payments. Daemon A holds a claim on the
/// first 1000 while daemon B's engine claims and decides the other 2000
/// (it skips A's locked rows, and takes every record: records 0–999 go to
/// payments 1500–2499, records 1000–1499 to one of their two payments in
/// its own batch); A then commits choices that are all taken, and both
/// engines finish side by side. Every record and every payment ends in at
/// most one match, and each record goes to one of its own two payments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_engines_never_put_a_transaction_in_two_matches() {
    const RECORDS: usize = 1500;
    let w = competing_payments(RECORDS).await;
    let other = w.second_context().await;

    let held = w
        .store()
        .claim_match_batch(1000)
        .await
        .unwrap()
        .expect("A claims 1000");
    assert_eq!(held.len(), 1000);
    let mut b = MatchStats::default();
    engine::match_pending(&other, &mut b).await.unwrap();
    assert_eq!(
        (b.decided.matched, b.decided.lost, b.decided.errors),
        (RECORDS as u64, 500, 0),
        "{b:?}"
    );
    let verdicts = decide(&w.ctx, &held).await;
    let a = held.commit(verdicts).await.unwrap();
    assert_eq!((a.matched, a.lost), (0, 1000), "{a:?}");

    // The losers are claimed again by whichever engine comes first, and
    // find nothing left.
    let (a, b) = tokio::join!(
        engine::run_until_idle(&w.ctx),
        engine::run_until_idle(&other)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.decided.errors + b.decided.errors, 0, "{a:?} {b:?}");
    assert_eq!(a.decided.matched + b.decided.matched, 0, "{a:?} {b:?}");
    assert_eq!(a.claimed + b.claimed, 1000, "{a:?} {b:?}");

    assert_one_match_each(&w, RECORDS).await;
    other.store.close().await;
}

/// One engine with four matching workers over 6000 competing payments
/// (3 full batches): after the first full batch the workers claim disjoint
/// batches at once, collide on records, and the result is the same as with
/// two daemons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_workers_never_put_a_transaction_in_two_matches() {
    const RECORDS: usize = 3000;
    let w = competing_payments(RECORDS).await;
    let mut stats = MatchStats::default();
    engine::match_pending_with(&w.ctx, &mut stats, 4)
        .await
        .unwrap();
    assert_eq!(stats.decided.errors, 0, "{stats:?}");
    assert_eq!(stats.decided.matched, RECORDS as u64, "{stats:?}");
    // A payment whose choice another worker's batch took first was claimed
    // once more (and found nothing left); every other payment once.
    assert_eq!(
        stats.claimed,
        2 * RECORDS as u64 + stats.decided.lost,
        "{stats:?}"
    );
    assert!(stats.batches >= 3, "{stats:?}");
    assert_one_match_each(&w, RECORDS).await;
}

/// The transaction cache through the pipeline: staging keeps the
/// transactions that claims will read (every pending payment's and every
/// pending merchant record's), each match drops both of its transactions,
/// and what is left at the end is exactly the transactions of the payments
/// still pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transaction_cache_fills_at_staging_and_empties_with_the_matches() {
    const RECORDS: usize = 40;
    let w = competing_payments(RECORDS).await;
    let cache = w.store().transaction_cache();
    let pool = w.store().pool().clone();
    let ids = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    };
    let staged = [
        ids("SELECT transaction_id FROM payments WHERE status = 'pending'").await,
        ids("SELECT transaction_id FROM scheme_transactions WHERE status = 'pending'").await,
    ]
    .concat();
    assert_eq!(staged.len(), 3 * RECORDS);
    assert_eq!(cache.len(), staged.len(), "{cache:?}");
    for id in &staged {
        assert!(
            cache.get(*id).is_some(),
            "transaction {id} was staged, not cached"
        );
    }

    let stats = w.run().await;
    assert_eq!(stats.decided.matched, RECORDS as u64, "{stats:?}");
    assert_one_match_each(&w, RECORDS).await;
    let pending = ids("SELECT transaction_id FROM payments WHERE status = 'pending'").await;
    assert_eq!(pending.len(), RECORDS);
    assert_eq!(cache.len(), pending.len(), "{cache:?}");
    for id in &pending {
        assert!(
            cache.get(*id).is_some(),
            "pending payment's transaction {id} left the cache"
        );
    }
    let matched = [
        ids("SELECT p.transaction_id FROM matches x JOIN payments p ON p.id = x.payment_id").await,
        ids("SELECT s.transaction_id FROM matches x JOIN scheme_transactions s ON s.id = x.scheme_id")
            .await,
    ]
    .concat();
    assert_eq!(matched.len(), 2 * RECORDS);
    for id in &matched {
        assert!(
            cache.get(*id).is_none(),
            "matched transaction {id} is still cached"
        );
    }
}

/// A transaction cache too small for the backlog evicts while staging, and
/// claims read what it no longer holds from the database: the outcome is
/// the same as with room for everything (and with the cache off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_reads_what_a_full_transaction_cache_evicted() {
    const RECORDS: usize = 300;
    for bytes in [48 << 10, 0] {
        let w = World::start_with(StoreOptions {
            transaction_cache_bytes: bytes,
            ..StoreOptions::default()
        })
        .await;
        let w = competing_payments_in(w, RECORDS).await;
        let cache = w.store().transaction_cache();
        assert!(
            cache.len() < 3 * RECORDS / 2,
            "{bytes} bytes: {} of {} staged transactions cached",
            cache.len(),
            3 * RECORDS
        );
        let stats = w.run().await;
        assert_eq!(
            stats.decided.matched, RECORDS as u64,
            "{bytes} bytes: {stats:?}"
        );
        assert_one_match_each(&w, RECORDS).await;
        assert_eq!(
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM payments WHERE status = 'pending'")
                .fetch_one(w.store().pool())
                .await
                .unwrap(),
            RECORDS as i64
        );
    }
}

/// One purchase of 24.50 at 18:42:10 UTC (2024-03-09: London is on UTC),
/// in the feed of `provider` (an auth: Visa with auth code 731904,
/// Mastercard and Amex without one), paid with card 374245/512345/454321…
/// at `mid`.
fn pair_payment(provider: &str, mid: &str) -> (&'static str, Vec<u8>) {
    let line = match provider {
        "visa" => json!({
            "ExternalUserId": "tok-pair",
            "MessageElementsCollection": [
                {"Key": "Transaction.VipTransactionId", "Value": "PAIR-VISA-1"},
                {"Key": "Transaction.TimeStampYYMMDD", "Value": "2024-03-09T18:42:10"},
                {"Key": "Transaction.TransactionAmount", "Value": "24.50"},
                {"Key": "Transaction.MerchantCardAcceptorId", "Value": mid},
                {"Key": "Transaction.VisaStoreId", "Value": ""},
                {"Key": "Transaction.VisaMerchantId", "Value": ""},
                {"Key": "Transaction.AuthCode", "Value": "731904"},
                {"Key": "Transaction.CurrencyCodeNumeric", "Value": "826"},
            ],
        }),
        "mastercard" => json!({
            "third_party_id": "PAIR-MC-1", "time": "2024-03-09 18:42:10", "amount": "24.50",
            "currency_code": "GBP", "payment_card_token": "tok-pair", "mid": mid,
        }),
        // MST (UTC−07:00): 18:42:10 UTC.
        "amex" => json!({
            "transaction_id": "PAIR-AMEX-1", "offer_id": "0", "transaction_time": "2024-03-09 11:42:10",
            "transaction_amount": 24.5, "transaction_currency": "UKL", "cm_alias": "tok-pair",
            "merchant_number": mid, "approval_code": "004512",
        }),
        other => panic!("no feed for {other}"),
    };
    let source = match provider {
        "visa" => "visa-auth",
        "mastercard" => "mastercard-auth",
        _ => "amex-auth",
    };
    (source, format!("{line}\n").into_bytes())
}

/// Two merchant-side rows of 24.50 in `merchant`'s feed format, card
/// `provider`, at `mid` (or its location `location`): `PAIR-R` at
/// `right` and `PAIR-D` at `decoy` (`HH:MM:SS` on 2024-03-09, London = UTC),
/// with auth codes `right_code` and `decoy_code`.
fn pair_records(
    merchant: &str,
    provider: &str,
    mid: &str,
    location: &str,
    (right, right_code): (&str, &str),
    (decoy, decoy_code): (&str, &str),
) -> Vec<u8> {
    let (first_six, last_four) = match provider {
        "visa" => ("454321", "4821"),
        "mastercard" => ("512345", "0077"),
        _ => ("374245", "1007"),
    };
    let rows = [("PAIR-R", right, right_code), ("PAIR-D", decoy, decoy_code)];
    let csv = |header: &str, row: &dyn Fn(&str, &str, &str) -> String| {
        let mut out = format!("{header}\n");
        for (id, time, code) in rows {
            out.push_str(&row(id, time, code));
            out.push('\n');
        }
        out.into_bytes()
    };
    match merchant {
        "iceland" => {
            let scheme = match provider {
                "visa" => "Visa",
                "mastercard" => "MasterCard Debit",
                _ => "Amex",
            };
            csv(
                "TransactionCardFirst6,TransactionCardLast4,TransactionCardExpiry,TransactionCardSchemeId,TransactionCardScheme,TransactionStore_Id,TransactionTimestamp,TransactionAmountValue,TransactionAmountUnit,TransactionCashbackValue,TransactionCashbackUnit,TransactionId,TransactionAuthCode",
                &|id, time, code| {
                    format!(
                        "{first_six},{last_four},11/26,3,{scheme},{mid},2024-03-09 {time},24.50,GBP,.00,GBP,{id},{code}"
                    )
                },
            )
        }
        "wasabi" => {
            let card_type = match provider {
                "visa" => "Visa",
                "mastercard" => "Mastercard",
                _ => "American Express",
            };
            csv(WASABI_HEADER.trim_end(), &|id, time, code| {
                format!(
                    "W012,1,1,3,24.50,{first_six}******{last_four},{card_type},{code},1,09/03/2024,{time},{mid},{id}"
                )
            })
        }
        "itsu" => csv(
            "transaction_id,payment_card_type,payment_card_first_six,payment_card_last_four,amount,currency_code,auth_code,date,merchant_identifier,retailer_location_id,transaction_data,customer_id",
            &|id, time, code| {
                format!(
                    "{id},{provider},{first_six},{last_four},24.50,GBP,{code},2024-03-09T{time}+00:00,,{location},,"
                )
            },
        ),
        // The provider from the first six (3: amex, 5: mastercard).
        "tgi-fridays" => csv(
            "transaction_id,payment_card_type,payment_card_first_six,payment_card_last_four,amount,gratuity_amount,currency_code,auth_code,date,merchant_identifier,retailer_location_id",
            &|id, time, code| {
                format!(
                    "{id},Credit,{first_six},{last_four},24.50,0.00,GBP,{code},2024-03-09 {time},{mid},{location}"
                )
            },
        ),
        // The provider from the name map (no first six).
        "stonegate" => {
            let card_type = match provider {
                "visa" => "VS",
                "mastercard" => "MC",
                _ => "AMEX",
            };
            let mut out = String::new();
            for (id, time, code) in rows {
                out.push_str(
                    &json!({
                        "transaction_id": id, "payment_card_type": card_type,
                        "payment_card_first_six": "", "payment_card_last_four": last_four,
                        "amount": 24.5, "currency_code": "GBP", "auth_code": code,
                        "date": format!("2024-03-09T{time}+00:00"), "merchant_identifier": "SG-MERCH-12",
                        "retailer_location_id": location, "metadata": {"AccountID": "ACC-PAIR"},
                    })
                    .to_string(),
                );
                out.push('\n');
            }
            out.into_bytes()
        }
        "costa" => serde_json::to_vec(
            &rows
                .iter()
                .map(|(id, time, code)| {
                    json!({
                        "transaction_id": id, "payment_card_type": provider,
                        "payment_card_first_six": first_six, "payment_card_last_four": last_four,
                        "amount": 24.5, "currency_code": "GBP", "auth_code": code,
                        "date": format!("2024-03-09T{time}+00:00"), "merchant_identifier": mid,
                        "retailer_location_id": location, "metadata": {}, "items_ordered": "{}",
                    })
                })
                .collect::<Vec<_>>(),
        )
        .unwrap(),
        other => panic!("no feed for {other}"),
    }
}

/// The merchant × provider pairs the other scenarios leave out, each from
/// its feed files through the pipeline: one payment, two records of its
/// amount, and the merchant's primary rule for that provider
/// (matching-rules.md) takes the right one — the record with the payment's
/// auth code (Visa, which has one), or the one inside the merchant's time
/// window (Mastercard and Amex auths carry no auth code and no card digits:
/// the window is the only condition). Each decoy would pass every other
/// test, so a rule that did not apply would leave the payment ambiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_merchant_matches_every_provider_by_its_primary_rule() {
    // (merchant source, provider, right record's time and code, decoy's
    // time and code, the reason the plugin gives).
    let cases: &[(&str, &str, (&str, &str), (&str, &str), &str)] = &[
        (
            "iceland",
            "visa",
            ("18:42:30", "731904"),
            ("18:42:40", "555555"),
            "visa: auth-code → 1 candidate",
        ),
        (
            "iceland",
            "amex",
            ("18:42:50", ""),
            ("18:44:30", ""),
            "amex: first-six-last-four(n/a: payment lacks first six or last four) + time-window(60s) → 1 candidate",
        ),
        (
            "wasabi",
            "mastercard",
            ("18:44:00", ""),
            ("18:52:30", ""),
            "mastercard: auth-code(no code: time-window(180s)) → 1 candidate",
        ),
        (
            "wasabi",
            "amex",
            ("18:44:00", ""),
            ("18:52:30", ""),
            "amex: time-window(180s) + first-six-last-four(n/a: no payment first six) → 1 candidate",
        ),
        (
            "costa",
            "mastercard",
            ("18:42:50", ""),
            ("18:44:30", ""),
            "mastercard: auth-code(no code: time-window(60s)) → 1 candidate",
        ),
        (
            "costa",
            "amex",
            ("18:42:50", ""),
            ("18:44:30", ""),
            "amex: time-window(60s) + first-six-last-four(n/a: no payment first six) → 1 candidate",
        ),
        (
            "stonegate",
            "mastercard",
            ("18:44:00", ""),
            ("18:52:30", ""),
            "mastercard: auth-code(no code: time-window(180s)) → 1 candidate",
        ),
        (
            "stonegate",
            "amex",
            ("18:44:00", ""),
            ("18:52:30", ""),
            "amex: time-window(180s) + last-four(n/a: no payment last four) → 1 candidate",
        ),
        (
            "tgi-fridays",
            "mastercard",
            ("18:44:00", ""),
            ("18:52:30", ""),
            "mastercard: auth-code(no code: time-window(180s)) → 1 candidate",
        ),
        (
            "tgi-fridays",
            "amex",
            ("18:44:00", ""),
            ("18:52:30", ""),
            "amex: time-window(180s) + first-six-last-four(n/a: no payment first six) → 1 candidate",
        ),
        (
            "itsu",
            "mastercard",
            ("18:44:00", ""),
            ("18:52:30", ""),
            "mastercard: auth-code(no code: time-window(180s)) → 1 candidate",
        ),
    ];
    let mut failures = Vec::new();
    for &(source, provider, right, decoy, reason) in cases {
        let slug = MERCHANT_SOURCES
            .iter()
            .find(|(name, _)| *name == source)
            .unwrap()
            .1;
        let w = World::start().await;
        w.merchant(slug, match_mode()).await;
        let (mid, location) = (format!("PAIR-{provider}-MID"), "PAIR-LOC");
        w.mids(&[(&mid, provider, slug, Some(location))]).await;
        let (payment_source, payment) = pair_payment(provider, &mid);
        w.import_bytes(payment_source, "payment", payment).await;
        let records = pair_records(source, provider, &mid, location, right, decoy);
        w.import_bytes(source, "records", records).await;
        let stats = w.run().await;

        // The chosen record, told from the decoy by its time.
        let chosen: Vec<(DateTime<Utc>, String, String, Option<i16>)> = sqlx::query_as(
            "SELECT t.occurred_at, x.reason, p.provider, x.confidence FROM matches x \
             JOIN payments p ON p.id = x.payment_id \
             JOIN scheme_transactions s ON s.id = x.scheme_id \
             JOIN transactions t ON t.id = s.transaction_id",
        )
        .fetch_all(w.store().pool())
        .await
        .unwrap();
        let instant =
            |time: &str| -> DateTime<Utc> { format!("2024-03-09T{time}Z").parse().unwrap() };
        let got: Vec<_> = chosen
            .into_iter()
            .map(|(at, why, p, confidence)| {
                let record = if at == instant(right.0) {
                    "right"
                } else if at == instant(decoy.0) {
                    "decoy"
                } else {
                    "another"
                };
                (record, why, p, confidence)
            })
            .collect();
        let want = vec![("right", reason.to_owned(), provider.to_owned(), Some(100))];
        if got != want {
            failures.push(format!(
                "{source} × {provider}: got {got:?}, want {want:?} ({stats:?})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Percent tolerance (basis points of the payment amount) and a merchant
/// that matches registered cards only: payments wait as `unregistered` until
/// their card is in the registry, then match; 0.1 % of 24.50 lets a 24.52
/// record in (at a lower confidence: review), 0.1 % of 10.00 does not let
/// 10.03 in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_tolerance_and_registered_cards_only() {
    let w = World::start().await;
    w.merchant(
        "costa",
        SettingsPatch {
            tolerance_bp: Some(10),
            match_unregistered_cards: Some(false),
            ..Default::default()
        },
    )
    .await;
    w.mids(&[("COSTA-MID-7781", "visa", "costa", None)]).await;
    w.import("visa-auth", "review/visa-auth.ndjson").await;
    w.import("costa", "review/costa.json").await;
    let stats = w.run().await;
    assert_eq!(stats.claimed, 0, "{stats:?}");
    let p1 = w.tx("visa-auth", "UkVWLVZJU0EtMDAx").await;
    let p2 = w.tx("visa-auth", "UkVWLVZJU0EtMDAy").await;
    assert_eq!(w.payment(p1).await.status, "unregistered");
    assert_eq!(w.payment(p2).await.status, "unregistered");

    w.cards(&[("tok-costa-1", "454321", "4821")]).await;
    let stats = w.run().await;
    assert_eq!(stats.reidentified.cards_registered, 2, "{stats:?}");
    assert_eq!(
        w.pairs("costa").await,
        [pair(
            "matched",
            "visa-auth:UkVWLVZJU0EtMDAy",
            Some("costa:COSTA-TX-R-22")
        )]
    );
    let m = w.explain(p2).await.matched.unwrap();
    assert_eq!((m.confidence, m.candidates), (Some(100), Some(1)));
    let open = w
        .store()
        .list_reviews(Some("open"), None, None)
        .await
        .unwrap()
        .items;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].payment_transaction_id, p1);
    assert_eq!(
        open[0].merchant_transaction_id,
        w.tx("costa", "COSTA-TX-R-11").await
    );
    assert_eq!((open[0].confidence, open[0].candidates), (60, 2));
}

/// The feeds of `purchases` Costa purchases on one registered Visa card:
/// the Visa auth file (NDJSON), the settlement file of the same purchases
/// (each settles 0.50 more than its auth: a tip) and Costa's file with one
/// record per purchase at the settled amount.
fn costa_feeds(purchases: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (mut auths, mut settlements, mut records) = (String::new(), Vec::new(), Vec::new());
    for i in 0..purchases {
        let id = format!("COSTA-PAR-{i:04}");
        let time = format!(
            "2024-03-09T{:02}:{:02}:{:02}",
            8 + i / 3600,
            (i / 60) % 60,
            i % 60
        );
        let code = format!("{:06}", 300_000 + i);
        // The auth is 0.50 less than what settles (a tip).
        let (auth_minor, settled_minor) = (1000 + i as i64, 1050 + i as i64);
        auths.push_str(&visa_auth(&id, &time, auth_minor, &code).to_string());
        auths.push('\n');
        settlements.push(visa_settlement(&id, &time, settled_minor, &code));
        records.push(costa_record(
            &format!("COSTA-REC-{i:04}"),
            &time,
            settled_minor,
            &code,
        ));
    }
    (
        auths.into_bytes(),
        serde_json::to_vec(&settlements).unwrap(),
        serde_json::to_vec(&records).unwrap(),
    )
}

/// A Visa VOP auth message at Costa's MID on card `tok-costa-1` (`time` in
/// UTC); an empty `code` is a purchase without one.
fn visa_auth(id: &str, time: &str, minor: i64, code: &str) -> Value {
    visa_vop(
        id,
        "Transaction.TimeStampYYMMDD",
        time,
        "Transaction.TransactionAmount",
        minor,
        code,
    )
}

/// The settlement message of [`visa_auth`]'s purchase.
fn visa_settlement(id: &str, time: &str, minor: i64, code: &str) -> Value {
    visa_vop(
        id,
        "Transaction.MerchantDateTimeGMT",
        time,
        "Transaction.SettlementAmount",
        minor,
        code,
    )
}

/// A Visa VOP message: an auth and a settlement differ only in their time
/// and amount keys.
fn visa_vop(
    id: &str,
    time_key: &str,
    time: &str,
    amount_key: &str,
    minor: i64,
    code: &str,
) -> Value {
    let element = |k: &str, v: &str| json!({ "Key": k, "Value": v });
    json!({
        "ExternalUserId": "tok-costa-1",
        "MessageElementsCollection": [
            element("Transaction.VipTransactionId", id),
            element(time_key, time),
            element(amount_key, &format!("{}.{:02}", minor / 100, minor % 100)),
            element("Transaction.MerchantCardAcceptorId", "COSTA-MID-7781"),
            element("Transaction.VisaStoreId", ""),
            element("Transaction.VisaMerchantId", ""),
            element("Transaction.AuthCode", code),
            element("Transaction.CurrencyCodeNumeric", "826"),
        ],
    })
}

/// A Costa record on the card of `tok-costa-1` at Costa's MID.
fn costa_record(id: &str, time: &str, minor: i64, code: &str) -> Value {
    json!({
        "transaction_id": id,
        "payment_card_type": "visa",
        "payment_card_first_six": "454321",
        "payment_card_last_four": "4821",
        "amount": serde_json::Number::from_f64(minor as f64 / 100.0).unwrap(),
        "currency_code": "GBP",
        "auth_code": code,
        "date": format!("{time}+00:00"),
        "merchant_identifier": "COSTA-MID-7781",
        "retailer_location_id": "CST-0042",
        "metadata": {},
        "items_ordered": "{}",
    })
}

/// Costa with its MID and the card of [`costa_feeds`].
async fn costa_world() -> World {
    let w = World::start().await;
    w.merchant("costa", match_mode()).await;
    w.mids(&[("COSTA-MID-7781", "visa", "costa", None)]).await;
    w.cards(&[("tok-costa-1", "454321", "4821")]).await;
    w
}

/// Two daemons stage and match a Visa auth file, the settlement file of
/// the same purchases and Costa's file at once: the auth file is staged
/// before its settlements whichever daemon takes which, so every purchase
/// is one payment carrying its settled amount, and every payment is matched
/// to the record of that amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_stage_in_import_order_collapse_and_match() {
    const PURCHASES: usize = 400;
    let w = costa_world().await;
    let (auths, settlements, records) = costa_feeds(PURCHASES);
    w.import_bytes("visa-auth", "auths.ndjson", auths).await;
    w.import_bytes("visa-settlement", "settlements.json", settlements)
        .await;
    w.import_bytes("costa", "costa.json", records).await;

    let other = w.second_context().await;
    let (a, b) = tokio::join!(
        engine::run_until_idle(&w.ctx),
        engine::run_until_idle(&other)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.imports_staged + b.imports_staged, 3, "{a:?} {b:?}");
    assert_eq!(
        (
            a.staged.payments_created + b.staged.payments_created,
            a.staged.payments_settled + b.staged.payments_settled,
            a.staged.legs_ignored + b.staged.legs_ignored,
            a.staged.scheme_pending + b.staged.scheme_pending,
        ),
        (PURCHASES as u64, PURCHASES as u64, 0, PURCHASES as u64),
        "{a:?} {b:?}"
    );
    assert_eq!(a.decided.errors + b.decided.errors, 0, "{a:?} {b:?}");

    let count = |sql| w.count(sql);
    assert_eq!(
        count("SELECT count(*) FROM payments").await,
        PURCHASES as i64
    );
    assert_eq!(
        count("SELECT count(*) FROM payment_legs WHERE action = 'settled'").await,
        PURCHASES as i64
    );
    // Every payment is matched, to the record with its own number, at the
    // settled amount.
    assert_eq!(
        count(
            "SELECT count(*) FROM matches x \
             JOIN payments p ON p.id = x.payment_id JOIN transactions pt ON pt.id = p.transaction_id \
             JOIN scheme_transactions s ON s.id = x.scheme_id JOIN transactions st ON st.id = s.transaction_id \
             WHERE x.kind = 'matched' AND pt.kind = 'settlement' AND p.amount_minor = s.amount_minor \
               AND substr(pt.external_id, 11) = substr(st.external_id, 11)"
        )
        .await,
        PURCHASES as i64
    );
    assert_eq!(
        count("SELECT count(*) FROM payments WHERE status <> 'matched' OR needs_match").await,
        0
    );
    other.store.close().await;
}

/// Payment-side and merchant-side staging run side by side, and matching
/// runs beside payment-side staging. Here another daemon is staging a
/// payment file (its lock is held): Costa's file is staged meanwhile and
/// the Visa auths wait; once the auths are staged (below their records'
/// amounts: no match yet), matching claims them while payment-side staging
/// is held up again; the settlements then collapse onto the auths and every
/// purchase matches its record at the settled amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_staging_and_matching_run_beside_payment_staging() {
    const PURCHASES: usize = 50;
    let w = costa_world().await;
    let (auths, settlements, records) = costa_feeds(PURCHASES);
    let auth_import = w.import_bytes("visa-auth", "auths.ndjson", auths).await;
    let record_import = w.import_bytes("costa", "costa.json", records).await;
    let sides = |import: i64| w.of_import::<Vec<String>>("sides", import);
    assert_eq!(sides(auth_import).await, ["payment"]);
    assert_eq!(sides(record_import).await, ["merchant"]);
    let staged = |import: i64| w.of_import::<bool>("staged_at IS NOT NULL", import);
    let hold_payment_staging = || w.hold_lock(accord::store::matching::PAYMENT_STAGING_LOCK);

    let held = hold_payment_staging().await;
    let stager = w.spawn_stager().await;
    // The merchant-side stager does not wait for the payment side's lock.
    let mut waited = 0;
    while !staged(record_import).await {
        waited += 1;
        assert!(waited < 600, "Costa's file was not staged within a minute");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!staged(auth_import).await);
    assert_eq!(w.count("SELECT count(*) FROM payments").await, 0);
    assert_eq!(
        w.count("SELECT count(*) FROM scheme_transactions WHERE status = 'pending'")
            .await,
        PURCHASES as i64
    );
    held.rollback().await.unwrap();
    let stats = stager.await.unwrap().unwrap();
    assert_eq!(
        (stats.imports_staged, stats.staged.payments_created),
        (2, PURCHASES as u64),
        "{stats:?}"
    );

    // Claims do not wait for payment-side staging.
    let held = hold_payment_staging().await;
    let mut stats = MatchStats::default();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        engine::match_pending(&w.ctx, &mut stats),
    )
    .await
    .expect("matching waited for payment-side staging")
    .unwrap();
    assert_eq!(
        (
            stats.claimed,
            stats.decided.matched,
            stats.decided.unmatched
        ),
        (PURCHASES as u64, 0, PURCHASES as u64),
        "{stats:?}"
    );
    held.rollback().await.unwrap();

    w.import_bytes("visa-settlement", "settlements.json", settlements)
        .await;
    let stats = w.run().await;
    assert_eq!(
        (stats.staged.payments_settled, stats.decided.matched),
        (PURCHASES as u64, PURCHASES as u64),
        "{stats:?}"
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM matches x JOIN payments p ON p.id = x.payment_id \
             JOIN scheme_transactions s ON s.id = x.scheme_id \
             WHERE x.kind = 'matched' AND p.amount_minor = s.amount_minor"
        )
        .await,
        PURCHASES as i64
    );
}

/// A payment left ambiguous is decided once another payment takes one of
/// its candidates. Costa × Visa: a purchase without an auth code (time
/// window 60 s) sees two records on the same card 20 s and 10 s away, and
/// no fallback separates them: no match. A later purchase whose auth code
/// is on the first record takes it; the first payment is tried again in the
/// same run and matches the record that is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_payment_is_retried_when_another_payment_takes_a_candidate() {
    let w = costa_world().await;
    let records = vec![
        costa_record("COSTA-R1", "2024-03-09T08:00:10", 1000, "111111"),
        costa_record("COSTA-R2", "2024-03-09T08:00:40", 1000, "999999"),
    ];
    w.import_bytes("costa", "costa.json", serde_json::to_vec(&records).unwrap())
        .await;
    // Staged before the purchases arrive: staged in the purchase's own run
    // (the two sides are staged side by side), they may come after the
    // purchase's first attempt, and then flag it for a second one.
    w.run().await;
    // One purchase of 10.00 at `time`, imported and run.
    let world = &w;
    let purchase = |id: &'static str, time: &'static str, code: &'static str| {
        let auth = visa_auth(id, time, 1000, code).to_string().into_bytes();
        async move {
            world
                .import_bytes("visa-auth", &format!("{id}.ndjson"), auth)
                .await;
            world.run().await.decided
        }
    };
    let decided = purchase("COSTA-P2", "2024-03-09T08:00:30", "").await;
    assert_eq!((decided.matched, decided.unmatched), (0, 1), "{decided:?}");
    let p2 = w.payment(w.tx("visa-auth", "COSTA-P2").await).await;
    assert_eq!(
        (p2.status.as_str(), p2.last_candidates, p2.attempts),
        ("pending", Some(2), 1),
        "{p2:?}"
    );

    let decided = purchase("COSTA-P1", "2024-03-09T08:00:00", "111111").await;
    assert_eq!((decided.matched, decided.reflagged), (2, 1), "{decided:?}");
    assert_eq!(
        w.pairs("costa").await,
        [
            pair("matched", "visa-auth:COSTA-P1", Some("costa:COSTA-R1")),
            pair("matched", "visa-auth:COSTA-P2", Some("costa:COSTA-R2")),
        ]
    );
    let p2 = w.payment(w.tx("visa-auth", "COSTA-P2").await).await;
    assert_eq!((p2.attempts, p2.last_candidates), (2, Some(1)), "{p2:?}");
}

/// An import parsed before imports recorded their sides (migration 0005)
/// is staged as if it held both: by the payment-side stager, which then
/// also takes the merchant side's lock. While that lock is held (a
/// merchant file being staged elsewhere), neither import is staged; then
/// both are, and the purchases match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_of_unknown_sides_is_staged_under_both_locks() {
    const PURCHASES: usize = 20;
    let w = costa_world().await;
    let (_, settlements, records) = costa_feeds(PURCHASES);
    let settlement_import = w
        .import_bytes("visa-settlement", "settlements.json", settlements)
        .await;
    let record_import = w.import_bytes("costa", "costa.json", records).await;
    sqlx::query("UPDATE imports SET sides = NULL")
        .execute(w.store().pool())
        .await
        .unwrap();

    let held = w
        .hold_lock(accord::store::matching::SCHEME_STAGING_LOCK)
        .await;
    let stager = w.spawn_stager().await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for import in [settlement_import, record_import] {
        assert!(
            !w.of_import::<bool>("staged_at IS NOT NULL", import).await,
            "import {import} was staged without the merchant side's lock"
        );
    }
    held.rollback().await.unwrap();
    let stats = stager.await.unwrap().unwrap();
    assert_eq!(
        (
            stats.imports_staged,
            stats.staged.payments_created,
            stats.staged.scheme_pending
        ),
        (2, PURCHASES as u64, PURCHASES as u64),
        "{stats:?}"
    );
    let stats = w.run().await;
    assert_eq!(stats.decided.matched, PURCHASES as u64, "{stats:?}");
}

/// The race that merchant-side staging's lock closes: a claim must not
/// decide with a snapshot that misses records being staged (its payments
/// would be decided "no candidates" while the staging's flags skip them as
/// already flagged). Here merchant-side staging is under way (waiting for
/// the lock, held by the test, then staging) when a claim comes: the claim
/// waits behind it and then sees the records, so every payment is matched
/// at its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_waits_for_merchant_side_staging_under_way_and_sees_its_records() {
    const PURCHASES: usize = 30;
    let w = costa_world().await;
    let (_, settlements, records) = costa_feeds(PURCHASES);
    w.import_bytes("visa-settlement", "settlements.json", settlements)
        .await;
    let mut staged = MatchStats::default();
    engine::stage_pending(&w.ctx, &mut staged).await.unwrap();
    assert_eq!(staged.staged.payments_created, PURCHASES as u64);
    w.import_bytes("costa", "costa.json", records).await;
    let waiting =
        || w.count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted");
    let until_waiting = |n: i64, what: &'static str| async move {
        let mut polls = 0;
        while waiting().await < n {
            polls += 1;
            assert!(
                polls < 600,
                "{what} did not queue for the lock within a minute"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };

    let held = w
        .hold_lock(accord::store::matching::SCHEME_STAGING_LOCK)
        .await;
    let stager = w.spawn_stager().await;
    until_waiting(1, "merchant-side staging").await;
    let matcher = tokio::spawn({
        let ctx = w.second_context().await;
        async move {
            let mut stats = MatchStats::default();
            let result = engine::match_pending(&ctx, &mut stats).await;
            ctx.store.close().await;
            result.map(|()| stats)
        }
    });
    until_waiting(2, "the claim").await;
    assert_eq!(
        w.count("SELECT count(*) FROM payments WHERE attempts > 0")
            .await,
        0
    );
    held.rollback().await.unwrap();

    let staging = stager.await.unwrap().unwrap();
    assert_eq!(
        staging.staged.scheme_pending, PURCHASES as u64,
        "{staging:?}"
    );
    let stats = matcher.await.unwrap().unwrap();
    assert_eq!(
        (
            stats.claimed,
            stats.decided.matched,
            stats.decided.unmatched
        ),
        (PURCHASES as u64, PURCHASES as u64, 0),
        "{stats:?}"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM payments WHERE status = 'matched' AND attempts = 1")
            .await,
        PURCHASES as i64
    );
}

/// An Amex auth staged before its MID was onboarded is identified later as
/// a spot merchant's and dropped (payment-feeds.md §2.3): it gives up its
/// settlement key, so the settlement that comes next creates the payment
/// (spotted) instead of being recorded against the dropped auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amex_auth_dropped_at_re_identification_leaves_its_purchase_to_the_settlement() {
    let w = World::start().await;
    w.merchant("the-works", mode(MerchantMode::Spot)).await;
    w.import("amex-auth", "spot/amex-auth.ndjson").await;
    w.run().await;
    let auth = w.tx("amex-auth", "QU1YLVNZTlRILTAwMDM").await;
    assert_eq!(w.payment(auth).await.status, "unidentified");

    w.mids(&[("9449001234", "amex", "the-works", None)]).await;
    let stats = w.run().await;
    assert_eq!(stats.reidentified.payments_identified, 1, "{stats:?}");
    let dropped = w.payment(auth).await;
    assert_eq!(
        (dropped.status.as_str(), dropped.settlement_key.as_deref()),
        ("dropped", None)
    );

    w.import("amex-settlement", "spot/amex-settlement.json")
        .await;
    w.run().await;
    let settled = w
        .payment(w.tx("amex-settlement", "QU1YLVNZTlRILTAwMDM").await)
        .await;
    assert_ne!(settled.id, dropped.id);
    assert_eq!(settled.status, "spotted");
    assert_eq!(
        w.pairs("the-works").await,
        [pair("spotted", "amex-settlement:QU1YLVNZTlRILTAwMDM", None)]
    );
}
