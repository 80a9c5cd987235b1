//! `accord mids …`, `accord merchants …`, `accord cards …`: reference data
//! from the command line, straight against the configured database (the
//! daemon need not run).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::daemon::{Database, load_config, tokio_runtime};
use crate::pipeline::reference::{self, Format, ReferenceError};
use crate::store::{
    MerchantMode, MidFilter, NewMerchant, RowError, SettingsPatch, Store, valid_slug,
};

/// Most MIDs `accord mids list` prints.
const LIST_MAX: u32 = 1000;

/// Run `f` against the configured store (migrated first), then close it.
fn with_store<T>(
    config: Option<&Path>,
    f: impl AsyncFnOnce(&Store) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let config = load_config(config)?;
    tokio_runtime()?.block_on(async {
        let db = Database::open(&config, false).await?;
        let result = async {
            db.store.migrate().await.context("applying migrations")?;
            f(&db.store).await
        }
        .await;
        db.close().await;
        result
    })
}

fn read_file(file: &Path) -> anyhow::Result<(Format, Vec<u8>)> {
    let format = file
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(Format::from_file_name)
        .with_context(|| format!("{}: expected a .csv or .json file", file.display()))?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    Ok((format, bytes))
}

fn unreadable(file: &Path, e: ReferenceError) -> anyhow::Error {
    match e {
        ReferenceError::Unreadable(reason) => anyhow::anyhow!("{}: {reason}", file.display()),
        ReferenceError::Store(e) => anyhow::Error::new(e).context("loading into the database"),
    }
}

fn print_rejected(file: &Path, rejected: &[RowError]) {
    for r in rejected {
        eprintln!("{}:{}: {}", file.display(), r.line, r.reason);
    }
}

/// `accord mids import FILE`: non-zero exit when any line was bad (the good
/// ones are loaded all the same).
pub fn import_mids(file: PathBuf, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (format, bytes) = read_file(&file)?;
    let report = with_store(config.as_deref(), async |store| {
        reference::onboard_mids(store, format, &bytes)
            .await
            .map_err(|e| unreadable(&file, e))
    })?;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["file", "inserted", "duplicates", "rejected"]);
    table.add_row([
        file.display().to_string(),
        report.inserted.to_string(),
        report.duplicates.to_string(),
        report.rejected.len().to_string(),
    ]);
    println!("{table}");
    print_rejected(&file, &report.rejected);
    Ok(exit(&report.rejected))
}

/// `accord cards import FILE`.
pub fn import_cards(file: PathBuf, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (format, bytes) = read_file(&file)?;
    let report = with_store(config.as_deref(), async |store| {
        reference::onboard_cards(store, format, &bytes)
            .await
            .map_err(|e| unreadable(&file, e))
    })?;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["file", "upserted", "rejected"]);
    table.add_row([
        file.display().to_string(),
        report.upserted.to_string(),
        report.rejected.len().to_string(),
    ]);
    println!("{table}");
    print_rejected(&file, &report.rejected);
    Ok(exit(&report.rejected))
}

fn exit(rejected: &[RowError]) -> ExitCode {
    if rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `accord mids remove`: by identifier + type + provider, or by location.
pub fn remove_mids(
    one: Option<((String, crate::store::IdentifierType), String)>,
    location: Option<(String, String)>,
    config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let removed = match (one, location) {
        (Some(((identifier, kind), provider)), None) => {
            with_store(config.as_deref(), async |store| {
                Ok(store.offboard_mid(&identifier, kind, &provider).await?)
            })?
        }
        (None, Some((merchant, location_id))) => with_store(config.as_deref(), async |store| {
            Ok(store.offboard_location(&merchant, &location_id).await?)
        })?,
        _ => bail!("give --identifier, --type and --provider, or --merchant and --location-id"),
    };
    println!("{removed} MID(s) removed");
    Ok(ExitCode::SUCCESS)
}

/// `accord mids update ID`.
pub fn update_mid(
    id: i64,
    location_id: Option<String>,
    merchant_internal_id: Option<String>,
    config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if location_id.is_none() && merchant_internal_id.is_none() {
        bail!("nothing to change: give --location-id and/or --merchant-internal-id");
    }
    let mid = with_store(config.as_deref(), async |store| {
        Ok(store
            .update_mid(
                id,
                &crate::store::MidUpdate {
                    location_id,
                    merchant_internal_id,
                },
            )
            .await?)
    })?;
    println!(
        "MID {} ({} {} {}): location {}, internal id {}",
        mid.id,
        mid.identifier,
        mid.identifier_type,
        mid.provider,
        mid.location_id.as_deref().unwrap_or("-"),
        mid.merchant_internal_id.as_deref().unwrap_or("-")
    );
    Ok(ExitCode::SUCCESS)
}

/// `accord mids list`: newest first, at most [`LIST_MAX`].
pub fn list_mids(
    merchant: Option<String>,
    provider: Option<String>,
    config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let page = with_store(config.as_deref(), async |store| {
        Ok(store
            .list_mids(&MidFilter {
                merchant,
                provider,
                limit: Some(LIST_MAX),
                ..MidFilter::default()
            })
            .await?)
    })?;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header([
        "id",
        "identifier",
        "type",
        "provider",
        "merchant",
        "location",
        "internal id",
        "location name",
        "postcode",
    ]);
    for m in &page.items {
        table.add_row([
            m.id.to_string(),
            m.identifier.clone(),
            m.identifier_type.to_string(),
            m.provider.clone(),
            m.merchant.clone(),
            m.location_id.clone().unwrap_or_default(),
            m.merchant_internal_id.clone().unwrap_or_default(),
            m.location_name.clone().unwrap_or_default(),
            m.postcode.clone().unwrap_or_default(),
        ]);
    }
    println!("{table}");
    if page.next_cursor.is_some() {
        println!("(first {LIST_MAX} shown; filter, or page with GET /v1/mids)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `accord merchants add SLUG --name N [--mode M]`.
pub fn add_merchant(
    slug: String,
    name: String,
    mode: MerchantMode,
    match_unregistered_cards: bool,
    settings: SettingsPatch,
    config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if let Some((field, reason)) = settings.invalid() {
        bail!("--{}: {reason}", field.replace('_', "-"));
    }
    if !valid_slug(&slug) {
        bail!("slug `{slug}` must be lower-case letters, digits, `-` or `_`");
    }
    let merchant = with_store(config.as_deref(), async |store| {
        Ok(store
            .upsert_merchant(&NewMerchant {
                slug,
                name,
                settings: SettingsPatch {
                    mode: Some(mode),
                    match_unregistered_cards: Some(match_unregistered_cards),
                    ..settings
                },
            })
            .await?)
    })?;
    println!(
        "merchant {} ({}): mode {}, unregistered cards {}",
        merchant.slug,
        merchant.name,
        merchant.mode,
        if merchant.match_unregistered_cards {
            "matched"
        } else {
            "not matched"
        }
    );
    Ok(ExitCode::SUCCESS)
}
