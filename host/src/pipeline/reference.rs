//! Onboarding reference data from files: MIDs and card-registry entries, as
//! CSV (header required) or JSON (an array of objects with the same keys).
//!
//! MID columns: `identifier,identifier_type,provider,merchant,location_id,
//! merchant_internal_id,location_name,postcode` (the first four required).
//! Card columns: `card_token,first_six,last_four,loyalty_id` (`card_token`
//! required). Column order is free; unknown columns are ignored.
//!
//! A bad row (empty identifier, unknown type, unknown provider, unknown
//! merchant, malformed card digits) is reported with its line and reason and
//! the good rows still load. Merchants are never created by an import: a row
//! naming one that does not exist is rejected — create it first with
//! `POST /v1/merchants` or `accord merchants add`. Only a file that cannot be
//! read at all (no header, a required column missing, invalid JSON) fails as
//! a whole, with [`ReferenceError::Unreadable`].
//!
//! Line numbers: for CSV the record number with the header as 1 (the file
//! line unless a quoted field spans lines or blank lines precede it); for
//! JSON the 1-based position of the object in the array.

use accord_plugin_sdk::csv::{CsvRecord, CsvStream, Header};
use serde::Serialize;

use crate::store::{Card, IdentifierType, MidImport, NewMid, RowError, Store, StoreError};

/// The file formats reference data comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    /// From a media type (`text/csv; charset=utf-8`, `application/json`).
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/csv" | "application/csv" | "text/plain" => Some(Format::Csv),
            "application/json" | "text/json" => Some(Format::Json),
            _ => None,
        }
    }

    /// From a file name's extension (`.csv`, `.json`), case-insensitive.
    pub fn from_file_name(name: &str) -> Option<Format> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The file as a whole cannot be read; nothing was loaded.
    #[error("{0}")]
    Unreadable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rows read from a file, and the rows that could not be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedRows<T> {
    pub rows: Vec<T>,
    pub rejected: Vec<RowError>,
}

/// What onboarding a MID file did.
pub type MidsReport = MidImport;

/// What onboarding a card file did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CardsReport {
    /// Entries written (new or replaced).
    pub upserted: u64,
    pub rejected: Vec<RowError>,
}

/// Parse and load a MID file (see the module docs).
pub async fn onboard_mids(
    store: &Store,
    format: Format,
    bytes: &[u8],
) -> Result<MidsReport, ReferenceError> {
    let parsed = parse_mids(format, bytes)?;
    let mut report = store.import_mids(&parsed.rows).await?;
    report.rejected.extend(parsed.rejected);
    report.rejected.sort_by_key(|r| r.line);
    Ok(report)
}

/// Parse and load a card-registry file (see the module docs).
pub async fn onboard_cards(
    store: &Store,
    format: Format,
    bytes: &[u8],
) -> Result<CardsReport, ReferenceError> {
    let parsed = parse_cards(format, bytes)?;
    let upserted = store.upsert_cards(&parsed.rows).await?;
    Ok(CardsReport {
        upserted,
        rejected: parsed.rejected,
    })
}

/// Column names and whether each is required.
const MID_COLUMNS: &[(&str, bool)] = &[
    ("identifier", true),
    ("identifier_type", true),
    ("provider", true),
    ("merchant", true),
    ("location_id", false),
    ("merchant_internal_id", false),
    ("location_name", false),
    ("postcode", false),
];

const CARD_COLUMNS: &[(&str, bool)] = &[
    ("card_token", true),
    ("first_six", false),
    ("last_four", false),
    ("loyalty_id", false),
];

/// One row's fields by column name, whatever format it came in.
trait Fields {
    /// The trimmed value, `None` when absent or blank.
    fn field(&self, name: &str) -> Result<Option<String>, String>;
}

fn required(fields: &dyn Fields, name: &str) -> Result<String, String> {
    fields.field(name)?.ok_or_else(|| format!("empty {name}"))
}

fn mid_from(line: u64, f: &dyn Fields) -> Result<NewMid, String> {
    let identifier = required(f, "identifier")?;
    let identifier_type: IdentifierType =
        required(f, "identifier_type")?.parse().map_err(|_| {
            format!(
                "unknown identifier_type `{}` (expected primary, secondary or psimi)",
                f.field("identifier_type")
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            )
        })?;
    Ok(NewMid {
        line,
        identifier,
        identifier_type,
        provider: required(f, "provider")?.to_ascii_lowercase(),
        merchant: required(f, "merchant")?,
        location_id: f.field("location_id")?,
        merchant_internal_id: f.field("merchant_internal_id")?,
        location_name: f.field("location_name")?,
        postcode: f.field("postcode")?,
    })
}

fn digits(f: &dyn Fields, name: &str, n: usize) -> Result<Option<String>, String> {
    match f.field(name)? {
        Some(v) if v.len() != n || !v.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("{name} must be {n} digits, got `{v}`"))
        }
        v => Ok(v),
    }
}

fn card_from(f: &dyn Fields) -> Result<Card, String> {
    Ok(Card {
        card_token: required(f, "card_token")?,
        first_six: digits(f, "first_six", 6)?,
        last_four: digits(f, "last_four", 4)?,
        loyalty_id: f.field("loyalty_id")?,
        updated_at: None,
    })
}

pub fn parse_mids(format: Format, bytes: &[u8]) -> Result<ParsedRows<NewMid>, ReferenceError> {
    parse(format, bytes, MID_COLUMNS, mid_from)
}

pub fn parse_cards(format: Format, bytes: &[u8]) -> Result<ParsedRows<Card>, ReferenceError> {
    parse(format, bytes, CARD_COLUMNS, |_, f| card_from(f))
}

fn parse<T>(
    format: Format,
    bytes: &[u8],
    columns: &'static [(&'static str, bool)],
    build: impl Fn(u64, &dyn Fields) -> Result<T, String>,
) -> Result<ParsedRows<T>, ReferenceError> {
    match format {
        Format::Csv => parse_csv(bytes, columns, build),
        Format::Json => parse_json(bytes, build),
    }
}

struct CsvFields<'r, 'a> {
    record: &'r CsvRecord<'a>,
    /// Column name → index in the record, for the known columns present.
    index: &'r [(&'static str, usize)],
}

impl Fields for CsvFields<'_, '_> {
    fn field(&self, name: &str) -> Result<Option<String>, String> {
        let Some(&(_, i)) = self.index.iter().find(|(n, _)| *n == name) else {
            return Ok(None);
        };
        if i >= self.record.len() {
            return Ok(None);
        }
        let v = self
            .record
            .str(i)
            .map_err(|e| format!("{name}: {}", e.reason))?;
        let v = v.trim();
        Ok((!v.is_empty()).then(|| v.to_owned()))
    }
}

fn parse_csv<T>(
    bytes: &[u8],
    columns: &'static [(&'static str, bool)],
    build: impl Fn(u64, &dyn Fields) -> Result<T, String>,
) -> Result<ParsedRows<T>, ReferenceError> {
    let mut out = ParsedRows {
        rows: Vec::new(),
        rejected: Vec::new(),
    };
    let mut header: Option<Result<Vec<(&'static str, usize)>, String>> = None;
    let mut each = |record: &CsvRecord<'_>| match &header {
        None => {
            header = Some(read_header(record, columns));
        }
        Some(Err(_)) => {}
        Some(Ok(index)) => {
            let fields = CsvFields { record, index };
            match build(record.row(), &fields) {
                Ok(row) => out.rows.push(row),
                Err(reason) => out.rejected.push(RowError {
                    line: record.row(),
                    reason,
                }),
            }
        }
    };
    let mut csv = CsvStream::default();
    csv.push(bytes, &mut each);
    csv.finish(&mut each);
    match header {
        None => Err(ReferenceError::Unreadable(
            "empty file: a header line is required".to_owned(),
        )),
        Some(Err(e)) => Err(ReferenceError::Unreadable(e)),
        Some(Ok(_)) => Ok(out),
    }
}

fn read_header(
    record: &CsvRecord<'_>,
    columns: &'static [(&'static str, bool)],
) -> Result<Vec<(&'static str, usize)>, String> {
    let header = Header::from_record(record).map_err(|e| e.reason)?;
    let mut index = Vec::new();
    for &(name, required) in columns {
        if required {
            index.push((name, header.require(name).map_err(|e| e.reason)?));
        } else if let Some(i) = header.index(name) {
            index.push((name, i));
        }
    }
    Ok(index)
}

struct JsonFields<'a>(&'a serde_json::Map<String, serde_json::Value>);

impl Fields for JsonFields<'_> {
    fn field(&self, name: &str) -> Result<Option<String>, String> {
        use serde_json::Value;
        let v = match self.0.get(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.trim().to_owned(),
            // Identifiers and location ids are often written as numbers.
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => return Err(format!("{name} must be a string, got {other}")),
        };
        Ok((!v.is_empty()).then_some(v))
    }
}

fn parse_json<T>(
    bytes: &[u8],
    build: impl Fn(u64, &dyn Fields) -> Result<T, String>,
) -> Result<ParsedRows<T>, ReferenceError> {
    let items: Vec<serde_json::Value> = serde_json::from_slice(bytes)
        .map_err(|e| ReferenceError::Unreadable(format!("not a JSON array of objects: {e}")))?;
    let mut out = ParsedRows {
        rows: Vec::with_capacity(items.len()),
        rejected: Vec::new(),
    };
    for (i, item) in items.iter().enumerate() {
        let line = i as u64 + 1;
        let result = match item.as_object() {
            Some(object) => build(line, &JsonFields(object)),
            None => Err("not a JSON object".to_owned()),
        };
        match result {
            Ok(row) => out.rows.push(row),
            Err(reason) => out.rejected.push(RowError { line, reason }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_and_rejects_by_line() {
        let csv = b"identifier,identifier_type,provider,merchant,location_id\n\
                    m1,primary,visa,shop,L1\n\
                    ,primary,visa,shop,L1\n\
                    m3,tertiary,visa,shop,\n\
                    \"m4\",PSIMI,Amex,shop,\n";
        let parsed = parse_mids(Format::Csv, csv).unwrap();
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(parsed.rows[0].line, 2);
        assert_eq!(parsed.rows[0].location_id.as_deref(), Some("L1"));
        assert_eq!(parsed.rows[1].identifier_type, IdentifierType::Psimi);
        assert_eq!(parsed.rows[1].provider, "amex");
        assert_eq!(parsed.rows[1].location_id, None);
        let lines: Vec<u64> = parsed.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, [3, 4]);
        assert!(parsed.rejected[0].reason.contains("empty identifier"));
        assert!(parsed.rejected[1].reason.contains("tertiary"));
    }

    #[test]
    fn csv_without_required_column_is_unreadable() {
        let err = parse_mids(Format::Csv, b"identifier,provider\nx,visa\n").unwrap_err();
        assert!(err.to_string().contains("identifier_type"), "{err}");
        assert!(parse_mids(Format::Csv, b"").is_err());
    }

    #[test]
    fn json_cards() {
        let json = br#"[{"card_token":"t1","first_six":"123456","last_four":4321},
                        {"card_token":"t2","last_four":"12"}, 7]"#;
        let parsed = parse_cards(Format::Json, json).unwrap();
        assert_eq!(parsed.rows.len(), 1);
        assert_eq!(parsed.rows[0].last_four.as_deref(), Some("4321"));
        assert_eq!(
            parsed.rejected.iter().map(|r| r.line).collect::<Vec<_>>(),
            [2, 3]
        );
    }

    #[test]
    fn formats() {
        assert_eq!(
            Format::from_content_type("text/csv; charset=utf-8"),
            Some(Format::Csv)
        );
        assert_eq!(Format::from_file_name("MIDS.JSON"), Some(Format::Json));
        assert_eq!(Format::from_file_name("mids"), None);
    }
}
