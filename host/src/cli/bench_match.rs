//! `accord bench match`: matching throughput and correctness, from ingested
//! to all matches committed.
//!
//! A deterministic generator invents purchases at merchants that each use
//! one of Harmonia's six built-in rule tables, and writes them as the feeds
//! accord really receives: Visa VOP settlement messages (NDJSON), Mastercard
//! TGX2 settlement lines, and one merchant-side CSV whose rows name no
//! merchant (each row's merchant is found from its MID). Every purchase has
//! exactly one true merchant-side record; some also get a *decoy* that the
//! primary filter cannot tell apart, so the fallbacks run. The generator
//! keeps the truth (which record belongs to which payment, and by which path
//! it must be decided) and the bench checks the committed matches against it.
//!
//! The three files go through the real pipeline (receive → parse in the
//! sandbox → commit); that is timed but reported apart. The figure is
//! [`run_until_idle`](crate::pipeline::matching::run_until_idle) — staging
//! (identification, collapse, scheme records, flags) and matching (claim,
//! matcher plugin, commit) — and a tracing layer splits it into those
//! phases and the SQL statements that took the time.
//!
//! Development: with `ACCORD_BENCH_MATCH_TEMPLATE=<name>` the first run
//! keeps its ingested database as template `<name>` and later runs start
//! from a copy of it (same `--payments`/`--merchants`), so an iteration
//! measures staging and matching without ingesting again. Drop the template
//! database when done.

use super::bench::with_database;
use super::plugin::{build, cli_runtime};
use anyhow::Context as _;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Harmonia's built-in merchants; bench merchant `k` uses the rules of
/// `RULE_SETS[k % 6]`.
const RULE_SETS: [&str; 6] = [
    "iceland-bonus-card",
    "wasabi-club",
    "costa",
    "itsu",
    "stonegate",
    "tgi-fridays",
];
/// Share of purchases (per mille) paid by Mastercard; the rest are Visa.
const MASTERCARD_PER_MILLE: u64 = 300;
/// Share of purchases (per mille) that get a decoy merchant-side record.
const DECOY_PER_MILLE: u64 = 100;
/// Share of purchases (per mille) without an auth code (time-window or
/// "or nothing" primaries).
const NO_CODE_PER_MILLE: u64 = 20;
/// Purchases are dated over this many days from [`FIRST_DAY`].
const DAYS: i64 = 49;
/// 2024-01-08T00:00:00Z: winter, so Europe/London (the Mastercard and
/// merchant-feed zone) is UTC and every feed agrees on the instant.
const FIRST_DAY: i64 = 1_704_672_000;
/// Purchases happen between 02:00 and 21:00 UTC, so a true record
/// (± 25 s) and a decoy (up to ± 1 h 50 min) stay on the payment's UTC
/// day, which the auth-code filter requires.
const OPEN_SECONDS: i64 = 2 * 3600;
const OPEN_HOURS: i64 = 19;
/// Prices on each merchant's menu: half the purchases pay one of them, so
/// a payment usually has several same-amount candidates at its MID.
const MENU: usize = 40;
const SEED: u64 = 0xACC0_7D5E_ED00_0001;

/// How the matcher must decide a purchase; the confidence Harmonia gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The primary filter alone (confidence 100).
    Primary,
    /// The time-window fallback T(t) (90).
    TimeWindow,
    /// A user-card fallback, UF6L4 or UL4, from the card registry (80).
    UserCard,
}

impl Path {
    const ALL: [Path; 3] = [Path::Primary, Path::TimeWindow, Path::UserCard];

    fn confidence(self) -> i16 {
        match self {
            Path::Primary => 100,
            Path::TimeWindow => 90,
            Path::UserCard => 80,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Path::Primary => "primary filter (100)",
            Path::TimeWindow => "time-window fallback (90)",
            Path::UserCard => "user-card fallback (80)",
        }
    }
}

/// splitmix64: a deterministic stream, one per purchase.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The pair hash of the checksum: FNV-1a over source, payment external id
/// and merchant external id, finished by splitmix's mixer.
fn pair_hash(source: &str, payment: &str, merchant: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for part in [
        source.as_bytes(),
        b"\0",
        payment.as_bytes(),
        b"\0",
        merchant.as_bytes(),
    ] {
        for &b in part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01B3);
        }
    }
    mix(h)
}

/// What the bench expects, from the generator.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Truth {
    pairs: u64,
    /// Wrapping sum of [`pair_hash`] over the true pairs.
    checksum: u64,
    /// Purchases per [`Path`], in [`Path::ALL`] order.
    by_path: [u64; 3],
    decoys: u64,
}

struct Generated {
    merchants: Vec<crate::store::NewMerchant>,
    mids: Vec<crate::store::NewMid>,
    cards: Vec<crate::store::Card>,
    visa: Vec<u8>,
    visa_rows: u64,
    mastercard: Vec<u8>,
    mastercard_rows: u64,
    merchant_csv: Vec<u8>,
    merchant_rows: u64,
    truth: Truth,
}

const VISA_SOURCE: &str = "visa-settlement";
const MASTERCARD_SOURCE: &str = "mastercard-settlement";
const MERCHANT_SOURCE: &str = "merchant-feed";

/// TGX2 detail field offsets (payment-feeds.md §3.2).
const TGX2_LEN: usize = 770;
const TGX2_TOKEN: usize = 21;
const TGX2_DATE: usize = 102;
const TGX2_MID: usize = 451;
const TGX2_AMOUNT: usize = 518;
const TGX2_TIME: usize = 563;
const TGX2_AUTH: usize = 567;
const TGX2_ID: usize = 761;

fn visa_mid(location: usize) -> String {
    format!("VCAID{location:07}")
}

fn mastercard_mid(location: usize) -> String {
    format!("MC{location:013}")
}

fn major(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

/// `(date, time)` of a UTC epoch second: `YYYY-MM-DD`, `HH:MM:SS`.
fn civil(epoch: i64) -> (chrono::NaiveDate, chrono::NaiveTime) {
    let dt = chrono::DateTime::from_timestamp(epoch, 0)
        .expect("bench times are in range")
        .naive_utc();
    (dt.date(), dt.time())
}

/// Generate `purchases` purchases over `merchant_count` merchants.
///
/// Invariants that make every true pair decidable, and only one way:
/// - auth codes are unique per (MID, amount, UTC day) among purchases, so
///   the auth-code filter keeps the true record and at most its decoy;
/// - a purchase without a code owns its (MID, amount) outright, so the
///   time-window and "or nothing" primaries see only its record;
/// - a decoy shares MID, amount, code and day with its purchase and differs
///   by time (more than any merchant's window: decided by T(t)) only where
///   the merchant's rules have that fallback, else by the card's last four
///   (decided by UF6L4 or UL4, every card being registered).
fn generate(purchases: usize, merchant_count: usize) -> Generated {
    use crate::store::{Card, IdentifierType, NewMerchant, NewMid, SettingsPatch};

    let mut merchants = Vec::with_capacity(merchant_count);
    let mut mids = Vec::new();
    // Per merchant: its first location and how many it has.
    let mut locations = Vec::with_capacity(merchant_count);
    let mut menus = Vec::with_capacity(merchant_count);
    let mut next_location = 0usize;
    for k in 0..merchant_count {
        let slug = format!("bench-{k:05}");
        merchants.push(NewMerchant {
            slug: slug.clone(),
            name: format!("Bench merchant {k} ({} rules)", RULE_SETS[k % 6]),
            settings: SettingsPatch {
                matcher_config: Some(serde_json::json!({ "merchant": RULE_SETS[k % 6] })),
                ..Default::default()
            },
        });
        let n = 1 + (mix(SEED ^ k as u64) % 5) as usize;
        locations.push((next_location, n));
        for location in next_location..next_location + n {
            for (provider, identifier) in [
                ("visa", visa_mid(location)),
                ("mastercard", mastercard_mid(location)),
            ] {
                mids.push(NewMid {
                    line: mids.len() as u64 + 1,
                    identifier,
                    identifier_type: IdentifierType::Primary,
                    provider: provider.into(),
                    merchant: slug.clone(),
                    location_id: Some(format!("LOC{location:07}")),
                    merchant_internal_id: None,
                    location_name: Some(format!("Bench store {location}")),
                    postcode: None,
                });
            }
        }
        next_location += n;
        let menu: Vec<i64> = (0..MENU)
            .map(|j| 150 + (mix(SEED ^ ((k as u64) << 8 | j as u64)) % 1851) as i64)
            .collect();
        menus.push(menu);
    }

    let card_count = (purchases / 4).max(100);
    const BINS: [&str; 8] = [
        "454313", "475129", "492181", "522154", "535522", "404119", "557347", "446291",
    ];
    let cards: Vec<Card> = (0..card_count)
        .map(|c| {
            let h = mix(SEED ^ 0xC0DE ^ c as u64);
            Card {
                card_token: format!("tok-{c:08}"),
                first_six: Some(BINS[(h % 8) as usize].into()),
                last_four: Some(format!("{:04}", (h >> 8) % 10_000)),
                loyalty_id: Some(format!("LOY{c:08}")),
                updated_at: None,
            }
        })
        .collect();

    let mut visa = Vec::with_capacity(purchases * 560);
    let mut mastercard = Vec::with_capacity(purchases * 250);
    let mut csv = Vec::with_capacity(purchases * 95);
    csv.extend_from_slice(b"id,scheme,mid,amount,currency,time,first_six,last_four,auth_code\n");
    mastercard
        .extend_from_slice(format!("{:<width$}\n", "H20240227020000", width = TGX2_LEN).as_bytes());
    let mut truth = Truth::default();
    let (mut visa_rows, mut mastercard_rows, mut merchant_rows) = (0u64, 0u64, 0u64);

    // (MID, amount) keys: any purchase's, and those owned by a code-less one.
    let mut used: HashSet<(u32, i64)> = HashSet::with_capacity(purchases);
    let mut owned: HashSet<(u32, i64)> = HashSet::new();
    // (MID, amount, day, code) of purchases with a code.
    let mut coded: HashSet<(u32, i64, i64, u32)> = HashSet::with_capacity(purchases);
    let mut tgx2 = vec![b' '; TGX2_LEN];

    for i in 0..purchases {
        let mut r = Rng(mix(SEED ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)));
        let k = r.below(merchant_count as u64) as usize;
        let rule = k % 6;
        // Iceland and Costa use 60 s, the others 180 s; Visa at itsu,
        // Stonegate and TGI Fridays has only UL4 as fallback (no T).
        let is_mastercard = r.below(1000) < MASTERCARD_PER_MILLE;
        let has_time_fallback = is_mastercard || rule <= 2;
        let (first_location, n_locations) = locations[k];
        let location = first_location + r.below(n_locations as u64) as usize;
        let mid_key = (location * 2 + usize::from(is_mastercard)) as u32;
        let mid = if is_mastercard {
            mastercard_mid(location)
        } else {
            visa_mid(location)
        };
        let card = &cards[r.below(card_count as u64) as usize];
        let first_six = card.first_six.as_deref().unwrap_or_default();
        let last_four = card.last_four.as_deref().unwrap_or_default();
        let day = r.below(DAYS as u64) as i64;
        let at =
            FIRST_DAY + day * 86_400 + OPEN_SECONDS + r.below((OPEN_HOURS * 3600) as u64) as i64;
        // TGX2 carries minutes only: the payment's instant is the minute.
        let paid_at = if is_mastercard { at - at % 60 } else { at };
        let u = r.below(1000);
        let decoy = u < DECOY_PER_MILLE;
        let no_code = !decoy && u < DECOY_PER_MILLE + NO_CODE_PER_MILLE;
        // A bijection on 0..10^6: unique codes up to a million purchases;
        // beyond, the `coded` set re-rolls the rare collision.
        let code = ((i as u64 % 1_000_000) * 7919 + 123_457) % 1_000_000;
        let amount = loop {
            let a = if no_code || r.below(2) == 0 {
                100 + r.below(49_900) as i64
            } else {
                menus[k][r.below(MENU as u64) as usize]
            };
            if no_code {
                if used.insert((mid_key, a)) {
                    owned.insert((mid_key, a));
                    break a;
                }
            } else if !owned.contains(&(mid_key, a)) && coded.insert((mid_key, a, day, code as u32))
            {
                used.insert((mid_key, a));
                break a;
            }
        };
        let code = if no_code {
            String::new()
        } else {
            format!("{code:06}")
        };

        // The payment.
        let (payment_source, payment_id) = if is_mastercard {
            let (date, time) = civil(paid_at);
            let id = format!("{i:09}");
            tgx2.fill(b' ');
            tgx2[0] = b'D';
            let mut put = |at: usize, s: &str| tgx2[at..at + s.len()].copy_from_slice(s.as_bytes());
            put(TGX2_TOKEN, &card.card_token);
            put(TGX2_DATE, &date.format("%Y%m%d").to_string());
            put(TGX2_MID, &mid);
            put(TGX2_AMOUNT, &format!("{amount:012}"));
            put(TGX2_TIME, &time.format("%H%M").to_string());
            put(TGX2_AUTH, &code);
            put(TGX2_ID, &id);
            mastercard.extend_from_slice(&tgx2);
            mastercard.push(b'\n');
            mastercard_rows += 1;
            (MASTERCARD_SOURCE, format!("{id}_{}", date.format("%Y%m%d")))
        } else {
            let (date, time) = civil(paid_at);
            let id = format!("VIP{i:011}");
            let auth = if no_code {
                String::new()
            } else {
                format!(r#"{{"Key":"Transaction.AuthCode","Value":"{code}"}},"#)
            };
            writeln!(
                visa,
                r#"{{"CardId":"C{i}","ExternalUserId":"{token}","MessageName":"SettlementMessage","UserDefinedFieldsCollection":[{{"Key":"TransactionType","Value":"SETTLE"}}],"MessageElementsCollection":[{{"Key":"Transaction.VipTransactionId","Value":"{id}"}},{{"Key":"Transaction.MerchantDateTimeGMT","Value":"{date}T{time}"}},{{"Key":"Transaction.SettlementAmount","Value":"{amount}"}},{{"Key":"Transaction.MerchantCardAcceptorId","Value":"{mid}"}},{{"Key":"Transaction.VisaStoreId","Value":""}},{{"Key":"Transaction.VisaMerchantId","Value":""}},{auth}{{"Key":"Transaction.PanLastFour","Value":"{last_four}"}},{{"Key":"Transaction.CurrencyCodeNumeric","Value":"826"}}]}}"#,
                token = card.card_token,
                time = time.format("%H:%M:%S"),
                amount = major(amount),
            )
            .expect("writing to a Vec");
            visa_rows += 1;
            (VISA_SOURCE, id)
        };

        // Its merchant-side record, and maybe a decoy.
        let scheme = if is_mastercard { "MasterCard" } else { "Visa" };
        let true_id = format!("S{i:09}");
        let true_at = paid_at + r.below(51) as i64 - 25;
        let row = |out: &mut Vec<u8>, id: &str, at: i64, last_four: &str| {
            let (date, time) = civil(at);
            writeln!(
                out,
                "{id},{scheme},{mid},{},GBP,{date} {},{first_six},{last_four},{code}",
                major(amount),
                time.format("%H:%M:%S")
            )
            .expect("writing to a Vec");
        };
        let path = if decoy {
            let decoy_first = r.below(2) == 0;
            let path;
            let (decoy_at, decoy_four) = if has_time_fallback && r.below(2) == 0 {
                // Same card, same amount and code, hours apart: T(t) decides.
                path = Path::TimeWindow;
                let apart = 600 + r.below(6000) as i64;
                let at = if paid_at - FIRST_DAY - day * 86_400 < 12 * 3600 {
                    paid_at + apart
                } else {
                    paid_at - apart
                };
                (at, last_four.to_owned())
            } else {
                // Another card at the same moment: only the cardholder's
                // digits from the registry decide.
                path = Path::UserCard;
                let other = (last_four.parse::<u64>().unwrap_or(0) + 1 + r.below(9998)) % 10_000;
                (paid_at + r.below(51) as i64 - 25, format!("{other:04}"))
            };
            let decoy_id = format!("D{i:09}");
            if decoy_first {
                row(&mut csv, &decoy_id, decoy_at, &decoy_four);
            }
            row(&mut csv, &true_id, true_at, last_four);
            if !decoy_first {
                row(&mut csv, &decoy_id, decoy_at, &decoy_four);
            }
            merchant_rows += 2;
            truth.decoys += 1;
            path
        } else {
            row(&mut csv, &true_id, true_at, last_four);
            merchant_rows += 1;
            Path::Primary
        };
        truth.pairs += 1;
        truth.checksum =
            truth
                .checksum
                .wrapping_add(pair_hash(payment_source, &payment_id, &true_id));
        truth.by_path[Path::ALL.iter().position(|p| *p == path).unwrap_or(0)] += 1;
    }
    mastercard.extend_from_slice(format!("{:<width$}\n", "T", width = TGX2_LEN).as_bytes());

    Generated {
        merchants,
        mids,
        cards,
        visa,
        visa_rows,
        mastercard,
        mastercard_rows,
        merchant_csv: csv,
        merchant_rows,
        truth,
    }
}

/// The merchant feed's CSV parser config: no `merchant`, so rows are
/// assigned through their MIDs.
fn merchant_csv_config() -> serde_json::Value {
    serde_json::json!({
        "side": "merchant",
        "kind": "sale",
        "date_format": "%Y-%m-%d %H:%M:%S",
        "time_zone": "Europe/London",
        "provider_map": { "Visa": "visa", "MasterCard": "mastercard" },
        "columns": {
            "external_id": "id",
            "provider": "scheme",
            "merchant_id": "mid",
            "amount": "amount",
            "currency": "currency",
            "occurred_at": "time",
            "card_first_six": "first_six",
            "card_last_four": "last_four",
            "auth_code": "auth_code"
        }
    })
}

/// The daemon settings a run uses that its options set.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// `transaction_cache_mb`
    pub cache_mb: u64,
    /// `match_workers`
    pub match_workers: usize,
}

pub fn run(
    purchases: usize,
    merchants: usize,
    database_url: Option<String>,
    keep_database: bool,
    tuning: Tuning,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(purchases > 0, "--payments must be at least 1");
    anyhow::ensure!(merchants > 0, "--merchants must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(
        purchases,
        merchants,
        database_url,
        keep_database,
        tuning,
    ))
}

async fn run_async(
    purchases: usize,
    merchant_count: usize,
    database_url: Option<String>,
    keep_database: bool,
    tuning: Tuning,
) -> anyhow::Result<ExitCode> {
    use sqlx::Connection;

    let server = database_url
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("accord_bench_match_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .context("connecting to PostgreSQL")?;
    // Development: `ACCORD_BENCH_MATCH_TEMPLATE=name` keeps the ingested
    // database as a template the first time and starts from a copy of it
    // afterwards, so a run measures staging and matching only.
    let template = std::env::var("ACCORD_BENCH_MATCH_TEMPLATE").ok();
    let reuse = match &template {
        Some(t) => {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            )
            .bind(t)
            .fetch_one(&mut admin)
            .await?
        }
        None => false,
    };
    match (&template, reuse) {
        (Some(t), true) => {
            eprintln!("starting from a copy of the ingested database {t} …");
            sqlx::query(&format!("CREATE DATABASE {db} TEMPLATE {t}"))
                .execute(&mut admin)
                .await?;
        }
        _ => {
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&mut admin)
                .await?;
        }
    }
    let url = with_database(&server, &db);
    let keep = match (&template, reuse) {
        (Some(t), false) => Some((t.clone(), db.clone(), server.clone())),
        _ => None,
    };
    let result = bench(
        purchases,
        merchant_count,
        &server,
        &url,
        reuse,
        keep,
        tuning,
    )
    .await;
    if keep_database {
        eprintln!(
            "kept the bench database: {}",
            crate::config::redact_url(&url)
        );
    } else {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
    result
}

async fn bench(
    purchases: usize,
    merchant_count: usize,
    server: &str,
    url: &str,
    reuse: bool,
    keep_as_template: Option<(String, String, String)>,
    tuning: Tuning,
) -> anyhow::Result<ExitCode> {
    let Tuning {
        cache_mb,
        match_workers,
    } = tuning;
    use crate::config::Config;
    use crate::pipeline::{Context, import_stream};
    use crate::store::{Channel, Store};

    let work = tempfile::tempdir()?;
    let plugins = work.path().join("plugins");
    eprintln!("building the parser and matcher plugins for wasm32-wasip2 …");
    build(
        &[
            PathBuf::from("plugins/visa-vop"),
            PathBuf::from("plugins/mastercard-tgx2"),
            PathBuf::from("plugins/csv"),
            PathBuf::from("plugins/harmonia"),
        ],
        &plugins,
    )?;

    let mut config = toml::Table::new();
    config.insert("database_url".into(), url.into());
    config.insert(
        "data_dir".into(),
        work.path().join("data").display().to_string().into(),
    );
    config.insert("plugins_dir".into(), plugins.display().to_string().into());
    config.insert("match_workers".into(), i64::try_from(match_workers)?.into());
    let source = |name: &str,
                  side: &str,
                  parser: &str,
                  cfg: serde_json::Value|
     -> anyhow::Result<toml::Value> {
        let mut s = toml::Table::new();
        s.insert("name".into(), name.into());
        s.insert("side".into(), side.into());
        s.insert("parser".into(), parser.into());
        s.insert("config".into(), toml::Value::try_from(cfg)?);
        Ok(s.into())
    };
    config.insert(
        "sources".into(),
        toml::Value::Array(vec![
            source(
                VISA_SOURCE,
                "payment",
                "visa-vop",
                serde_json::json!({ "feed": "settlement" }),
            )?,
            source(
                MASTERCARD_SOURCE,
                "payment",
                "mastercard-tgx2",
                serde_json::json!({ "feed": "settlement" }),
            )?,
            source(MERCHANT_SOURCE, "merchant", "csv", merchant_csv_config())?,
        ]),
    );
    let config_path = work.path().join("accord.toml");
    std::fs::write(&config_path, toml::to_string(&config)?)?;
    let config = Arc::new(Config::load(
        Some(&config_path),
        std::iter::empty::<(String, String)>(),
    )?);

    let options = crate::store::StoreOptions {
        transaction_cache_bytes: cache_mb << 20,
        ..Default::default()
    };
    let mut store = Store::connect_with(url, options.clone()).await?;
    store.migrate().await?;
    let runtime = cli_runtime(Some(plugins.clone()))?;
    let scan = runtime.rescan();
    tracing::debug!(?scan, "plugins loaded");
    let mut ctx = Context {
        store: store.clone(),
        runtime,
        config,
    };

    eprintln!("generating {purchases} purchases over {merchant_count} merchants …");
    let t = Instant::now();
    let data = generate(purchases, merchant_count);
    let generate_time = t.elapsed();

    let t = Instant::now();
    let (mids_inserted, cards) = if reuse {
        (data.mids.len() as u64, data.cards.len() as u64)
    } else {
        for m in &data.merchants {
            store.upsert_merchant(m).await?;
        }
        let mids = store.import_mids(&data.mids).await?;
        anyhow::ensure!(
            mids.rejected.is_empty(),
            "MIDs rejected: {:?}",
            &mids.rejected[..mids.rejected.len().min(5)]
        );
        (mids.inserted, store.upsert_cards(&data.cards).await?)
    };
    let setup_time = t.elapsed();

    // Ingest: payments first, the merchant feed last (the usual order: the
    // merchant's file arrives after the scheme's messages, so staging it
    // flags payments that already wait).
    let mut ingest = Vec::new();
    let files = [
        (
            VISA_SOURCE,
            "visa-settlement.ndjson",
            data.visa,
            data.visa_rows,
        ),
        (
            MASTERCARD_SOURCE,
            "mastercard-settlement.txt",
            data.mastercard,
            data.mastercard_rows,
        ),
        (
            MERCHANT_SOURCE,
            "merchant-feed.csv",
            data.merchant_csv,
            data.merchant_rows,
        ),
    ];
    for (source, name, bytes, rows) in files {
        if rows == 0 || reuse {
            continue;
        }
        eprintln!(
            "ingesting {name} ({rows} rows, {:.1} MB) …",
            bytes.len() as f64 / 1e6
        );
        let size = bytes.len();
        let body = bytes::Bytes::from(bytes);
        let chunks: Vec<_> = (0..size)
            .step_by(1 << 20)
            .map(|at| Ok::<_, std::io::Error>(body.slice(at..(at + (1 << 20)).min(size))))
            .collect();
        let t = Instant::now();
        let outcome = import_stream(
            &ctx,
            source,
            Channel::Cli,
            Some(name.into()),
            None,
            u64::MAX,
            futures::stream::iter(chunks),
        )
        .await?;
        let took = t.elapsed();
        let accepted = outcome.counts.as_ref().map(|c| c.accepted).unwrap_or(0);
        anyhow::ensure!(
            accepted == rows,
            "{name}: accord stored {accepted} of {rows} rows: {outcome:?}"
        );
        ingest.push((name, rows, size, took));
    }

    if let Some((template, db, server)) = keep_as_template {
        use sqlx::Connection as _;
        store.close().await;
        let mut admin = sqlx::PgConnection::connect(&server).await?;
        // Autovacuum visits the freshly loaded tables (for minutes) and
        // counts as another user of the source database, and so, on some
        // servers, does a connection of the closed pool that is still
        // going away: end them (the database is this run's own; autovacuum
        // comes back later on its own).
        let mut tries = 0;
        while let Err(e) = sqlx::query(&format!("CREATE DATABASE {template} TEMPLATE {db}"))
            .execute(&mut admin)
            .await
        {
            tries += 1;
            if tries == 6 {
                let others: Vec<String> = sqlx::query_scalar(
                    "SELECT backend_type || ': ' || coalesce(query, '') FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&db)
                .fetch_all(&mut admin)
                .await?;
                anyhow::bail!("keeping {db} as template {template}: {e}; connected: {others:?}");
            }
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&db)
            .execute(&mut admin)
            .await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        eprintln!("kept the ingested database as {template}");
        store = Store::connect_with(url, options).await?;
        ctx.store = store.clone();
    }

    // The figure: from ingested to all matches committed.
    eprintln!("matching …");
    let recorder = profile::Recorder::default();
    let match_start = Instant::now();
    let stats = {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let fmt_filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx::query=error"));
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(fmt_filter),
            )
            .with(recorder.clone().with_filter(profile::filter()));
        // This thread only: `block_on` polls the pass here, and the
        // pipeline's tasks and spans carry the dispatcher to their threads.
        let _guard = tracing::subscriber::set_default(subscriber);
        crate::pipeline::matching::run_until_idle(&ctx).await?
    };
    let match_time = match_start.elapsed();
    let profile = recorder.take();
    let cache_left = store.transaction_cache().len();

    // Check against the generator's truth (not timed).
    let t = Instant::now();
    let found = verify(&store).await?;
    let verify_time = t.elapsed();
    store.close().await;

    let truth = &data.truth;
    let secs = |d: Duration| d.as_secs_f64();
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "accord bench match — {purchases} purchases over {merchant_count} merchants (Harmonia rules: {}), PostgreSQL at {}",
        RULE_SETS.join(", "),
        crate::config::redact_url(server)
    );
    let _ = writeln!(
        w,
        "  generated in {:.1} s: {} Visa VOP settlements, {} Mastercard TGX2 settlements, {} merchant-feed rows ({} decoys)",
        secs(generate_time),
        data.visa_rows,
        data.mastercard_rows,
        data.merchant_rows,
        truth.decoys
    );
    let _ = writeln!(
        w,
        "  reference data: {merchant_count} merchants, {} MIDs, {cards} registered cards: {:.1} s",
        mids_inserted,
        secs(setup_time)
    );
    let _ = writeln!(
        w,
        "  ingest (receive → parse in wasm → commit; not part of the matching figure):"
    );
    for (name, rows, size, took) in &ingest {
        let _ = writeln!(
            w,
            "    {name:<28} {rows:>9} rows {:>7.1} MB {:>7.2} s {:>9.0} rows/s",
            *size as f64 / 1e6,
            secs(*took),
            *rows as f64 / secs(*took)
        );
    }
    let matched = stats.decided.matched;
    let _ = writeln!(
        w,
        "  matching (run_until_idle: ingested → all matches committed): {:.2} s",
        secs(match_time)
    );
    // Staging and matching run side by side (`stage_and_match`): their
    // extents, as seconds after the start, and the time neither covered.
    let ((s0, s1), (m0, m1)) = (
        profile.stage_extent.after(match_start),
        profile.match_extent.after(match_start),
    );
    let covered = if m0 <= s1 {
        s1.max(m1) - s0.min(m0)
    } else {
        (s1 - s0) + (m1 - m0)
    };
    let other = Duration::from_secs_f64((secs(match_time) - covered).max(0.0));
    let share = |d: Duration| 100.0 * secs(d) / secs(match_time);
    let _ = writeln!(
        w,
        "    wall time: staging {s0:.2}–{s1:.2} s (two stagers side by side), matching {m0:.2}–{m1:.2} s \
         ({} workers, first claim taken to last batch committed; side by side with staging for {:.2} s); \
         below, time summed over the stagers and over the workers",
        ctx.config.match_workers,
        (s1.min(m1) - s0.max(m0)).max(0.0)
    );
    let _ = writeln!(
        w,
        "    transaction cache: {cache_mb} MiB (`transaction_cache_mb`); {cache_left} transactions left in it at the end"
    );
    let _ = writeln!(
        w,
        "    stage (identify, collapse, scheme records, flag): {:>7.2} s {:>5.1} %  ({} imports: {} payments, {} merchant records, {} flagged)",
        secs(profile.stage),
        share(profile.stage),
        stats.imports_staged,
        stats.staged.payments_created,
        stats.staged.scheme_pending,
        stats.staged.payments_flagged
    );
    let _ = writeln!(
        w,
        "    claim (lock payments, select candidates):         {:>7.2} s {:>5.1} %  ({} batches, {} payments claimed)",
        secs(profile.claim),
        share(profile.claim),
        stats.batches,
        stats.claimed
    );
    let _ = writeln!(
        w,
        "    matcher plugin (harmonia in wasm):                {:>7.2} s {:>5.1} %",
        secs(profile.decide),
        share(profile.decide)
    );
    let _ = writeln!(
        w,
        "    commit (matches, statuses, attempts):             {:>7.2} s {:>5.1} %",
        secs(profile.commit),
        share(profile.commit)
    );
    let _ = writeln!(
        w,
        "    other (re-identify, sweep, idle checks; wall):    {:>7.2} s {:>5.1} %",
        secs(other),
        share(other)
    );
    let _ = writeln!(
        w,
        "  => {:.0} matches/s ({} matches in {:.2} s)",
        matched as f64 / secs(match_time),
        matched,
        secs(match_time)
    );
    let _ = writeln!(w, "  SQL by time (statement start, calls, total, rows):");
    let mut sql: Vec<_> = profile.sql.iter().collect();
    sql.sort_by(|a, b| b.1.secs.total_cmp(&a.1.secs));
    for ((phase, statement), s) in sql.iter().take(12) {
        let _ = writeln!(
            w,
            "    {phase:<7} {:>6} × {:>7.2} s {:>9} rows  {statement}",
            s.count, s.secs, s.rows
        );
    }

    // Correctness.
    let mut pass = true;
    let mut check = |w: &mut String, what: &str, got: String, want: String| {
        let ok = got == want;
        pass &= ok;
        let _ = writeln!(
            w,
            "    {what:<44} {got:>20}  expected {want:>20}  {}",
            if ok { "ok" } else { "MISMATCH" }
        );
    };
    let _ = writeln!(
        w,
        "  correctness (against the generator's truth; checked in {:.1} s):",
        secs(verify_time)
    );
    check(
        w,
        "matches committed",
        found.pairs.to_string(),
        truth.pairs.to_string(),
    );
    check(
        w,
        "checksum of (payment, merchant record) pairs",
        format!("{:016x}", found.checksum),
        format!("{:016x}", truth.checksum),
    );
    for (i, path) in Path::ALL.iter().enumerate() {
        check(
            w,
            &format!("decided by {}", path.label()),
            found.by_path[i].to_string(),
            truth.by_path[i].to_string(),
        );
    }
    check(
        w,
        "matches with another confidence",
        found.other_confidence.to_string(),
        "0".into(),
    );
    check(
        w,
        "reviews opened",
        stats.decided.reviews.to_string(),
        "0".into(),
    );
    check(
        w,
        "payments left without a match",
        found.payments_not_matched.to_string(),
        "0".into(),
    );
    check(
        w,
        "decoys left pending",
        found.scheme_pending.to_string(),
        truth.decoys.to_string(),
    );
    check(
        w,
        "matcher errors / lost races",
        format!("{} / {}", stats.decided.errors, stats.decided.lost),
        "0 / 0".into(),
    );
    let _ = writeln!(
        w,
        "    (engine counts: {} matched, {} reviews, {} no-match verdicts, {} errors; payments by status: {})",
        stats.decided.matched,
        stats.decided.reviews,
        stats.decided.unmatched,
        stats.decided.errors,
        found.payment_statuses
    );
    let _ = writeln!(w, "  correctness: {}", if pass { "PASS" } else { "FAIL" });
    print!("{out}");
    std::io::stdout().flush()?;
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What the database holds after the run.
#[derive(Debug, Default)]
struct Found {
    pairs: u64,
    checksum: u64,
    by_path: [u64; 3],
    other_confidence: u64,
    payments_not_matched: u64,
    scheme_pending: u64,
    payment_statuses: String,
}

/// Read every committed match with its two external ids (a bench-only
/// read straight from the tables, streamed).
async fn verify(store: &crate::store::Store) -> anyhow::Result<Found> {
    use futures::TryStreamExt as _;
    let mut found = Found::default();
    let mut rows = sqlx::query_as::<_, (String, String, String, Option<i16>)>(
        "SELECT tp.source, tp.external_id, tm.external_id, x.confidence \
         FROM matches x \
         JOIN payments p ON p.id = x.payment_id \
         JOIN transactions tp ON tp.id = p.transaction_id \
         JOIN scheme_transactions s ON s.id = x.scheme_id \
         JOIN transactions tm ON tm.id = s.transaction_id \
         WHERE x.kind = 'matched'",
    )
    .fetch(store.pool());
    while let Some((source, payment, merchant, confidence)) = rows.try_next().await? {
        found.pairs += 1;
        found.checksum = found
            .checksum
            .wrapping_add(pair_hash(&source, &payment, &merchant));
        match Path::ALL
            .iter()
            .position(|p| Some(p.confidence()) == confidence)
        {
            Some(i) => found.by_path[i] += 1,
            None => found.other_confidence += 1,
        }
    }
    drop(rows);
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM payments GROUP BY status ORDER BY status")
            .fetch_all(store.pool())
            .await?;
    found.payments_not_matched = statuses
        .iter()
        .filter(|(s, _)| s != "matched")
        .map(|(_, n)| *n as u64)
        .sum();
    found.payment_statuses = statuses
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    found.scheme_pending = sqlx::query_scalar::<_, i64>(&format!(
        "SELECT count(*) FROM scheme_transactions s WHERE {}",
        crate::store::matching::SCHEME_OPEN
    ))
    .fetch_one(store.pool())
    .await? as u64;
    Ok(found)
}

/// Where the matching pass spends its time, from the spans the pipeline
/// already has: `stage` (one per import staged) and `match` (one per batch:
/// claimed, then decided inside its `decide` span, then committed), plus
/// sqlx's per-statement timings.
mod profile {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use tracing::field::{Field, Visit};
    use tracing::{Event, Subscriber, span};
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::{Context, Layer};
    use tracing_subscriber::registry::LookupSpan;

    #[derive(Debug, Default, Clone)]
    pub struct SqlStat {
        pub count: u64,
        pub secs: f64,
        pub rows: u64,
    }

    #[derive(Debug, Default)]
    pub struct Profile {
        pub stage: Duration,
        pub claim: Duration,
        pub decide: Duration,
        pub commit: Duration,
        /// From the first span's start to the last one's end, for staging
        /// (two stagers) and for matching (the workers' batches).
        pub stage_extent: Extent,
        pub match_extent: Extent,
        /// (phase, statement start) → totals.
        pub sql: HashMap<(&'static str, String), SqlStat>,
    }

    /// Wall time covered by a phase's spans.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Extent(Option<(Instant, Instant)>);

    impl Extent {
        fn add(&mut self, start: Instant, end: Instant) {
            self.0 = Some(match self.0 {
                None => (start, end),
                Some((a, b)) => (a.min(start), b.max(end)),
            });
        }

        /// Start and end, in seconds after `t0`.
        pub fn after(&self, t0: Instant) -> (f64, f64) {
            self.0.map_or((0.0, 0.0), |(a, b)| {
                (
                    a.saturating_duration_since(t0).as_secs_f64(),
                    b.saturating_duration_since(t0).as_secs_f64(),
                )
            })
        }
    }

    struct Clock {
        stage: bool,
        created: Instant,
        decide_start: Option<Instant>,
        decide_end: Option<Instant>,
    }

    impl Clock {
        fn phase(&self) -> &'static str {
            match (self.stage, self.decide_start, self.decide_end) {
                (true, _, _) => "stage",
                (false, None, _) => "claim",
                (false, Some(_), None) => "decide",
                (false, Some(_), Some(_)) => "commit",
            }
        }
    }

    #[derive(Default)]
    struct State {
        open: HashMap<span::Id, Clock>,
        /// Open `decide` spans → their batch's `match` span.
        deciding: HashMap<span::Id, span::Id>,
        profile: Profile,
    }

    #[derive(Clone, Default)]
    pub struct Recorder(Arc<Mutex<State>>);

    impl Recorder {
        pub fn take(&self) -> Profile {
            std::mem::take(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()).profile)
        }

        fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
            f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
        }
    }

    /// The pipeline's matching spans and sqlx's statement events.
    pub fn filter() -> Targets {
        Targets::new()
            .with_target("accord::pipeline::matching", tracing::Level::INFO)
            .with_target("sqlx::query", tracing::Level::DEBUG)
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
        fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
            let now = Instant::now();
            match attrs.metadata().name() {
                // A batch's decision: its `match` span's claim is over.
                "decide" => {
                    let Some(batch) = ctx.span(id).and_then(|s| s.parent()).map(|p| p.id()) else {
                        return;
                    };
                    self.with(|s| {
                        if let Some(c) = s.open.get_mut(&batch) {
                            c.decide_start = Some(now);
                            s.deciding.insert(id.clone(), batch);
                        }
                    });
                }
                name @ ("stage" | "match") => self.with(|s| {
                    s.open.insert(
                        id.clone(),
                        Clock {
                            stage: name == "stage",
                            created: now,
                            decide_start: None,
                            decide_end: None,
                        },
                    );
                }),
                _ => {}
            }
        }

        fn on_close(&self, id: span::Id, _: Context<'_, S>) {
            let now = Instant::now();
            self.with(|s| {
                if let Some(batch) = s.deciding.remove(&id) {
                    if let Some(c) = s.open.get_mut(&batch) {
                        c.decide_end = Some(now);
                    }
                    return;
                }
                let Some(c) = s.open.remove(&id) else { return };
                let p = &mut s.profile;
                if c.stage {
                    p.stage += now - c.created;
                    p.stage_extent.add(c.created, now);
                    return;
                }
                match (c.decide_start, c.decide_end) {
                    (Some(start), Some(end)) => {
                        // Matching's extent: from the first claim taken to
                        // the last batch committed (not the claims waiting
                        // for merchant-side staging, nor a pass's last,
                        // empty claim).
                        p.match_extent.add(start, now);
                        p.claim += start - c.created;
                        p.decide += end - start;
                        p.commit += now - end;
                    }
                    // The last claim of a pass finds nothing.
                    _ => p.claim += now - c.created,
                }
            });
        }

        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            if event.metadata().target() != "sqlx::query" {
                return;
            }
            let mut v = SqlVisitor::default();
            event.record(&mut v);
            let statement = if v.statement.trim().is_empty() {
                v.summary
            } else {
                v.statement
            };
            let mut key: String = statement.split_whitespace().collect::<Vec<_>>().join(" ");
            if let Some((at, _)) = key.char_indices().nth(90) {
                key.truncate(at);
            }
            let span = ctx.event_span(event).map(|s| s.id());
            self.with(|s| {
                let phase = span
                    .and_then(|id| s.open.get(&id))
                    .map(Clock::phase)
                    .unwrap_or("other");
                let e = s.profile.sql.entry((phase, key)).or_default();
                e.count += 1;
                e.secs += v.secs;
                e.rows += v.rows;
            });
        }
    }

    #[derive(Default)]
    struct SqlVisitor {
        summary: String,
        statement: String,
        secs: f64,
        rows: u64,
    }

    impl Visit for SqlVisitor {
        fn record_str(&mut self, field: &Field, value: &str) {
            match field.name() {
                "summary" => self.summary = value.to_owned(),
                "db.statement" => self.statement = value.to_owned(),
                _ => {}
            }
        }

        fn record_f64(&mut self, field: &Field, value: f64) {
            if field.name() == "elapsed_secs" {
                self.secs = value;
            }
        }

        fn record_u64(&mut self, field: &Field, value: u64) {
            // A SELECT or an INSERT … RETURNING reports its rows as both
            // affected and returned.
            if matches!(field.name(), "rows_affected" | "rows_returned") {
                self.rows = self.rows.max(value);
            }
        }

        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_consistent() {
        let a = generate(5000, 50);
        let b = generate(5000, 50);
        assert_eq!(a.truth, b.truth);
        assert_eq!(a.truth.pairs, 5000);
        assert_eq!(a.truth.by_path.iter().sum::<u64>(), 5000);
        assert!(
            a.truth.by_path[1] > 0 && a.truth.by_path[2] > 0,
            "{:?}",
            a.truth
        );
        assert_eq!(a.visa_rows + a.mastercard_rows, 5000);
        assert_eq!(a.merchant_rows, 5000 + a.truth.decoys);
        let lines = a
            .merchant_csv
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64;
        assert_eq!(lines, a.merchant_rows + 1);
        assert!(
            a.mastercard
                .split(|b| *b == b'\n')
                .all(|l| l.is_empty() || l.len() == TGX2_LEN)
        );
    }
}
