//! The JSON feeds: Stonegate and Costa (merchant-feeds.md §5–§6).

use accord_plugin_sdk::prelude::*;
use serde_json::{Map, Value};

use crate::{Counts, Merchant, Row, Rules, amount, cards, python, sale, sha256_joined};
use accord_plugin_sdk::json::{Message, object, optional, required, required_non_empty};

pub(crate) fn message(rules: &Rules, counts: &mut Counts, m: Message<'_>, out: &mut Batch) {
    let Message {
        record,
        offset,
        raw,
        value,
    } = m;
    let result = value.and_then(|v| match rules.merchant {
        Merchant::Stonegate => stonegate(rules, &v),
        Merchant::Costa => costa(rules, &v),
        _ => Err(FieldError::reason("CSV feed routed to the JSON reader")),
    });
    counts.add(
        record,
        result,
        |e| e.reject_at(Some(record), offset, raw),
        out,
    );
}

/// `date`: a plain ISO-8601 string, or the typed envelope Harmonia's AMQP
/// library decodes into a datetime (reference Recommendation: accept both).
fn date_text(m: &Map<String, Value>) -> Result<&str, FieldError> {
    const KEY: &str = "date";
    match m.get(KEY) {
        None | Some(Value::Null) => Err(FieldError::new(KEY, "missing required key")),
        Some(Value::String(s)) => Ok(s),
        Some(Value::Object(o)) if o.get("__type__").and_then(Value::as_str) == Some("datetime") => {
            o.get("__value__")
                .and_then(Value::as_str)
                .ok_or_else(|| FieldError::new(KEY, "datetime envelope without a string __value__"))
        }
        Some(_) => Err(FieldError::new(
            KEY,
            "expected an ISO-8601 string or {\"__type__\": \"datetime\", \"__value__\": ...}",
        )),
    }
}

/// Stonegate (§5).
fn stonegate(rules: &Rules, v: &Value) -> Result<Row, FieldError> {
    let m = object(v)?;
    let card_type = required(m, "payment_card_type")?;
    let first_six = optional(m, "payment_card_first_six")?;
    let Some(provider) = cards::resolve(first_six.as_deref(), &card_type) else {
        return Ok(Row::Skip("unknown_card_type"));
    };
    let transaction_id = required(m, "transaction_id")?;
    let amount_value = m.get("amount").unwrap_or(&Value::Null);
    let amount_text = required(m, "amount")?;
    // What Python's str() writes for the decoded value: the id hashes it.
    let amount_str = python::str_of(amount_value)
        .ok_or_else(|| FieldError::new("amount", "not a string or number"))?;
    let money = amount(
        &amount_text,
        "amount",
        &required(m, "currency_code")?,
        "currency_code",
    )?;
    let auth_code = required(m, "auth_code")?;
    let at = rules
        .london
        .parse_instant(date_text(m)?)
        .map_err(|e| e.on("date"))?;
    let account_id = match m.get("metadata") {
        Some(Value::Object(meta)) => {
            required(meta, "AccountID").map_err(|e| e.on("metadata.AccountID"))?
        }
        _ => {
            return Err(FieldError::new(
                "metadata.AccountID",
                "missing required key",
            ));
        }
    };
    let location = required(m, "retailer_location_id")?;

    // Harmonia: sha256(iso(date).auth_code.AccountID.str(amount).transaction_id),
    // iso = Python isoformat of the zone-aware date.
    let external_id = sha256_joined(&[
        &time::format_iso(&at),
        &auth_code,
        &account_id,
        &amount_str,
        &transaction_id,
    ]);
    // The host expands the store id to the MIDs registered at the location.
    let mut tx = sale(external_id, provider, money, at)
        .with_merchant_id(location.trim(), IdentifierKind::Store)
        .with_extra("account_id", account_id.as_ref())
        // Exported back to Stonegate.
        .with_extra("transaction_id", transaction_id.as_ref());
    tx.card_first_six = first_six.and_then(non_empty);
    tx.card_last_four = optional(m, "payment_card_last_four")?.and_then(non_empty);
    tx.auth_code = non_empty(&auth_code);
    Ok(Row::Keep(tx))
}

/// Costa (§6).
fn costa(rules: &Rules, v: &Value) -> Result<Row, FieldError> {
    let m = object(v)?;
    let external_id = required_non_empty(m, "transaction_id")?;
    let card_type = required(m, "payment_card_type")?;
    // Harmonia stores any value as the provider; the reference recommends
    // refusing what is not a known scheme.
    let provider = cards::costa_card_type(&card_type).ok_or_else(|| {
        FieldError::new(
            "payment_card_type",
            format!("unknown card type {card_type:?} (expected visa, mastercard or amex)"),
        )
    })?;
    let money = amount(
        &required(m, "amount")?,
        "amount",
        &required(m, "currency_code")?,
        "currency_code",
    )?;
    let at = rules
        .utc
        .parse_instant(date_text(m)?)
        .map_err(|e| e.on("date"))?;
    let mut tx = sale(external_id.as_ref(), provider, money, at).with_merchant_id(
        required(m, "merchant_identifier")?.trim(),
        IdentifierKind::Primary,
    );
    tx.card_first_six = optional(m, "payment_card_first_six")?.and_then(non_empty);
    tx.card_last_four = optional(m, "payment_card_last_four")?.and_then(non_empty);
    tx.auth_code = optional(m, "auth_code")?.and_then(non_empty);
    // Sent back to Costa as the export payload: kept as JSON text.
    if let Some(meta) = m.get("metadata").filter(|v| !v.is_null()) {
        tx = tx.with_extra("metadata", meta.to_string());
    }
    // A string holding JSON: kept verbatim.
    match m.get("items_ordered") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => tx = tx.with_extra("items_ordered", s.as_str()),
        Some(other) => tx = tx.with_extra("items_ordered", other.to_string()),
    }
    Ok(Row::Keep(tx))
}
