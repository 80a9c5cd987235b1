//! The CSV feeds: Iceland, Wasabi, Itsu, TGI Fridays (merchant-feeds.md
//! §1–§4). Skip rules run before any conversion (Itsu converts the amount of
//! every row first, as Harmonia does), so a skipped row is never a reject.

use accord_plugin_sdk::csv::{CsvRecord, Header};
use accord_plugin_sdk::prelude::*;

use crate::{Counts, Merchant, Row, Rules, amount, cards, id, sale, sha256_joined};

/// Columns a feed reads, each required in the header.
fn needed(merchant: Merchant) -> &'static [&'static str] {
    match merchant {
        Merchant::IcelandBonusCard => &[
            "TransactionCardFirst6",
            "TransactionCardLast4",
            "TransactionCardSchemeId",
            "TransactionCardScheme",
            "TransactionStore_Id",
            "TransactionTimestamp",
            "TransactionAmountValue",
            "TransactionAmountUnit",
            "TransactionCashbackValue",
            "TransactionId",
            "TransactionAuthCode",
        ],
        Merchant::WasabiClub => &[
            "Amount",
            "Card Number",
            "Card Type Name",
            "Auth_code",
            "Date",
            "Time",
            "EFT Merchant No_",
            "Receipt No_",
        ],
        Merchant::Itsu => &[
            "transaction_id",
            "payment_card_type",
            "payment_card_first_six",
            "payment_card_last_four",
            "amount",
            "currency_code",
            "auth_code",
            "date",
            "retailer_location_id",
        ],
        Merchant::TgiFridays => &[
            "transaction_id",
            "payment_card_type",
            "payment_card_first_six",
            "payment_card_last_four",
            "amount",
            "gratuity_amount",
            "currency_code",
            "auth_code",
            "date",
            "merchant_identifier",
        ],
        Merchant::Stonegate | Merchant::Costa => &[],
    }
}

/// The feed's columns, resolved once at the header.
pub struct Columns {
    names: &'static [&'static str],
    index: Vec<usize>,
}

impl Columns {
    fn resolve(header: &Header, names: &'static [&'static str]) -> Result<Columns, PluginError> {
        let index = names
            .iter()
            .map(|n| header.require(n))
            .collect::<Result<_, _>>()
            .map_err(|e| PluginError::malformed(format!("header: {e}")))?;
        Ok(Columns { names, index })
    }
}

/// One data record with its feed's columns.
struct Cells<'a, 'r> {
    rec: &'r CsvRecord<'a>,
    columns: &'r Columns,
}

impl<'a> Cells<'a, '_> {
    /// The cell of column `name` (one the feed declared as needed).
    fn get(&self, name: &str) -> Result<&'a str, FieldError> {
        let i = self
            .columns
            .names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| FieldError::new(name, "column not declared by the feed"))?;
        self.rec.str(self.columns.index[i]).map_err(|e| e.on(name))
    }
}

/// One CSV record: the header (resolves the columns; a missing one is fatal)
/// or a data row.
pub(crate) fn record(
    rules: &Rules,
    columns: &mut Option<Columns>,
    fatal: &mut Option<PluginError>,
    counts: &mut Counts,
    rec: &CsvRecord<'_>,
    out: &mut Batch,
) {
    if fatal.is_some() {
        return;
    }
    let Some(cols) = columns.as_ref() else {
        let resolved = Header::from_record(rec)
            .map_err(|e| PluginError::malformed(format!("header: {e}")))
            .and_then(|h| Columns::resolve(&h, needed(rules.merchant)));
        match resolved {
            Ok(c) => *columns = Some(c),
            Err(e) => *fatal = Some(e),
        }
        return;
    };
    let cells = Cells { rec, columns: cols };
    let result = match rules.merchant {
        Merchant::IcelandBonusCard => iceland(rules, &cells),
        Merchant::WasabiClub => wasabi(rules, &cells),
        Merchant::Itsu => itsu(rules, &cells),
        Merchant::TgiFridays => tgi_fridays(rules, &cells),
        Merchant::Stonegate | Merchant::Costa => {
            Err(FieldError::reason("JSON feed routed to the CSV reader"))
        }
    };
    counts.add(rec.row(), result, |e| rec.reject(&e), out);
}

/// Iceland (§1).
fn iceland(rules: &Rules, c: &Cells<'_, '_>) -> Result<Row, FieldError> {
    let auth_code = c.get("TransactionAuthCode")?;
    if auth_code.eq_ignore_ascii_case("decline") {
        return Ok(Row::Skip("declined"));
    }
    let Some(provider) = cards::iceland_scheme(c.get("TransactionCardScheme")?) else {
        return Ok(Row::Skip("unknown_card_scheme"));
    };
    // Unused, but Harmonia converts them: a kept row must carry numbers.
    let scheme_id = c.get("TransactionCardSchemeId")?;
    if scheme_id.trim().parse::<i64>().is_err() {
        return Err(FieldError::new(
            "TransactionCardSchemeId",
            format!("{scheme_id:?} is not an integer"),
        ));
    }
    money::parse_major_truncating(c.get("TransactionCashbackValue")?, "GBP")
        .map_err(|e| e.on("TransactionCashbackValue"))?;

    let money = amount(
        c.get("TransactionAmountValue")?,
        "TransactionAmountValue",
        c.get("TransactionAmountUnit")?,
        "TransactionAmountUnit",
    )?;
    let at = rules
        .london
        .parse_local(c.get("TransactionTimestamp")?, "%Y-%m-%d %H:%M:%S")
        .map_err(|e| e.on("TransactionTimestamp"))?;
    let external_id = id(c.get("TransactionId")?, "TransactionId")?;
    let mut tx = sale(external_id, provider, money, at).with_merchant_id(
        c.get("TransactionStore_Id")?.trim(),
        IdentifierKind::Primary,
    );
    tx.card_first_six = non_empty(c.get("TransactionCardFirst6")?);
    tx.card_last_four = non_empty(c.get("TransactionCardLast4")?);
    tx.auth_code = non_empty(auth_code);
    Ok(Row::Keep(tx))
}

/// Wasabi (§2).
fn wasabi(rules: &Rules, c: &Cells<'_, '_>) -> Result<Row, FieldError> {
    let Some(provider) = cards::wasabi_card_type(c.get("Card Type Name")?) else {
        return Ok(Row::Skip("unknown_card_type"));
    };
    let receipt = c.get("Receipt No_")?;
    if receipt == "\0" {
        return Ok(Row::Skip("nul_receipt"));
    }
    let money = amount(c.get("Amount")?, "Amount", "GBP", "Amount")?;
    let (date, time) = (c.get("Date")?, c.get("Time")?);
    let at = rules
        .london
        .parse_local(&format!("{date} {time}"), "%d/%m/%Y %H:%M:%S")
        .map_err(|e| {
            let date_ok = rules.london.parse_date(date, "%d/%m/%Y").is_ok();
            e.on(if date_ok { "Time" } else { "Date" })
        })?;
    // `Receipt No_`, not `Transaction No_`, is unique.
    let external_id = id(receipt, "Receipt No_")?;
    let mut tx = sale(external_id, provider, money, at)
        .with_merchant_id(c.get("EFT Merchant No_")?.trim(), IdentifierKind::Primary);
    // Masked PAN `454321******4821`: Python's [:6] and [-4:].
    let card: Vec<char> = c.get("Card Number")?.trim().chars().collect();
    tx.card_first_six = non_empty(card.iter().take(6).collect::<String>());
    tx.card_last_four = non_empty(
        card[card.len().saturating_sub(4)..]
            .iter()
            .collect::<String>(),
    );
    tx.auth_code = non_empty(c.get("Auth_code")?);
    Ok(Row::Keep(tx))
}

/// Itsu keeps rows of at least this many pennies.
const ITSU_MIN_MINOR: i64 = 500;

/// Itsu (§3).
fn itsu(rules: &Rules, c: &Cells<'_, '_>) -> Result<Row, FieldError> {
    // Harmonia converts the amount of every row for its threshold test, so
    // an unreadable amount fails even a row the card type would skip.
    let amount_text = c.get("amount")?;
    let minor = money::parse_major_truncating(amount_text, "GBP")
        .map_err(|e| e.on("amount"))?
        .minor_units;
    let Some(provider) = cards::itsu_card_type(c.get("payment_card_type")?) else {
        return Ok(Row::Skip("unknown_card_type"));
    };
    if minor < ITSU_MIN_MINOR {
        return Ok(Row::Skip("below_minimum_amount"));
    }
    let money = amount(
        amount_text,
        "amount",
        c.get("currency_code")?,
        "currency_code",
    )?;
    let at = rules
        .utc
        .parse_instant(c.get("date")?)
        .map_err(|e| e.on("date"))?;
    let external_id = id(c.get("transaction_id")?, "transaction_id")?;
    // The host expands the store id to the MIDs registered at the location.
    let mut tx = sale(external_id, provider, money, at)
        .with_merchant_id(c.get("retailer_location_id")?.trim(), IdentifierKind::Store);
    tx.card_first_six = non_empty(c.get("payment_card_first_six")?);
    tx.card_last_four = non_empty(c.get("payment_card_last_four")?);
    tx.auth_code = non_empty(c.get("auth_code")?);
    Ok(Row::Keep(tx))
}

/// TGI Fridays (§4).
fn tgi_fridays(rules: &Rules, c: &Cells<'_, '_>) -> Result<Row, FieldError> {
    let first_six = c.get("payment_card_first_six")?;
    let Some(provider) = cards::resolve(Some(first_six), c.get("payment_card_type")?) else {
        return Ok(Row::Skip("unknown_card_type"));
    };
    let (amount_raw, gratuity_raw) = (c.get("amount")?, c.get("gratuity_amount")?);
    let currency = c.get("currency_code")?;
    let mut money = amount(amount_raw, "amount", currency, "currency_code")?;
    let gratuity = amount(gratuity_raw, "gratuity_amount", currency, "currency_code")?;
    money.minor_units = money
        .minor_units
        .checked_add(gratuity.minor_units)
        .ok_or_else(|| FieldError::new("gratuity_amount", "amount + gratuity overflows"))?;
    let date = c.get("date")?;
    let at = rules.london.parse_instant(date).map_err(|e| e.on("date"))?;
    let mid = c.get("merchant_identifier")?;
    // Harmonia's id: the raw CSV strings, exactly as written.
    let external_id = sha256_joined(&[
        date,
        mid,
        amount_raw,
        c.get("transaction_id")?,
        gratuity_raw,
    ]);
    let mut tx = sale(external_id, provider, money, at)
        .with_merchant_id(mid.trim(), IdentifierKind::Primary)
        // The export awards points on (and dedupes by) the pre-gratuity amount.
        .with_extra("amount", amount_raw);
    tx.card_first_six = non_empty(first_six);
    tx.card_last_four = non_empty(c.get("payment_card_last_four")?);
    tx.auth_code = non_empty(c.get("auth_code")?);
    Ok(Row::Keep(tx))
}
