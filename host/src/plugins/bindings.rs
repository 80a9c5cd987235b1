//! The one `bindgen!` site over the contract, one module per shipped version,
//! with conversions into the host's domain types.
//!
//! A new contract version gets its own module beside `v0_1_0`; `latest`
//! names the newest so a bump is one line.

use crate::domain;
use chrono::{DateTime, FixedOffset, TimeZone};

pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "accord:plugins/host@0.1.0",
    });

    pub use self::accord::host::log;
    pub use self::accord::types::types;
    pub use self::exports::accord::matcher::matcher;
    pub use self::exports::accord::parser::parser;
    pub use self::exports::accord::router::router;
}

pub use v0_1_0 as latest;

use latest::types as t;

/// Why a guest value could not become a domain value (the plugin broke the
/// contract's documented invariants, e.g. an impossible timestamp).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

fn side(s: t::Side) -> domain::Side {
    match s {
        t::Side::Payment => domain::Side::Payment,
        t::Side::Merchant => domain::Side::Merchant,
        t::Side::Standalone => domain::Side::Standalone,
    }
}

fn side_out(s: domain::Side) -> t::Side {
    match s {
        domain::Side::Payment => t::Side::Payment,
        domain::Side::Merchant => t::Side::Merchant,
        domain::Side::Standalone => t::Side::Standalone,
    }
}

fn kind(k: t::Kind) -> domain::Kind {
    match k {
        t::Kind::Sale => domain::Kind::Sale,
        t::Kind::Refund => domain::Kind::Refund,
        t::Kind::Authorisation => domain::Kind::Authorisation,
        t::Kind::Settlement => domain::Kind::Settlement,
        t::Kind::Transfer => domain::Kind::Transfer,
    }
}

fn kind_out(k: domain::Kind) -> t::Kind {
    match k {
        domain::Kind::Sale => t::Kind::Sale,
        domain::Kind::Refund => t::Kind::Refund,
        domain::Kind::Authorisation => t::Kind::Authorisation,
        domain::Kind::Settlement => t::Kind::Settlement,
        domain::Kind::Transfer => t::Kind::Transfer,
    }
}

fn id_kind(k: t::IdentifierKind) -> domain::IdentifierKind {
    match k {
        t::IdentifierKind::Primary => domain::IdentifierKind::Primary,
        t::IdentifierKind::Secondary => domain::IdentifierKind::Secondary,
        t::IdentifierKind::Psimi => domain::IdentifierKind::Psimi,
        t::IdentifierKind::Store => domain::IdentifierKind::Store,
    }
}

fn id_kind_out(k: domain::IdentifierKind) -> t::IdentifierKind {
    match k {
        domain::IdentifierKind::Primary => t::IdentifierKind::Primary,
        domain::IdentifierKind::Secondary => t::IdentifierKind::Secondary,
        domain::IdentifierKind::Psimi => t::IdentifierKind::Psimi,
        domain::IdentifierKind::Store => t::IdentifierKind::Store,
    }
}

fn timestamp(ts: &t::Timestamp) -> Result<DateTime<FixedOffset>, ConvertError> {
    let offset = FixedOffset::east_opt(ts.utc_offset_seconds).ok_or_else(|| {
        ConvertError(format!(
            "utc-offset-seconds {} is out of range",
            ts.utc_offset_seconds
        ))
    })?;
    offset
        .timestamp_opt(ts.epoch_seconds, ts.nanos)
        .single()
        .ok_or_else(|| {
            ConvertError(format!(
                "timestamp {}s {}ns is out of range",
                ts.epoch_seconds, ts.nanos
            ))
        })
}

fn timestamp_out(dt: &DateTime<FixedOffset>) -> t::Timestamp {
    t::Timestamp {
        epoch_seconds: dt.timestamp(),
        nanos: dt.timestamp_subsec_nanos(),
        utc_offset_seconds: dt.offset().local_minus_utc(),
    }
}

/// A currency code the canonical record may carry: three ASCII upper-case
/// letters. (Whether it is a *current* ISO 4217 code is the parser's job;
/// the SDK's `money` helpers check that.)
fn currency(code: String) -> Result<String, ConvertError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code)
    } else {
        Err(ConvertError(format!(
            "currency `{code}` is not an ISO 4217 alpha-3 code"
        )))
    }
}

pub fn transaction(tx: t::Transaction) -> Result<domain::Transaction, ConvertError> {
    if tx.external_id.is_empty() {
        return Err(ConvertError("external-id is empty".into()));
    }
    Ok(domain::Transaction {
        occurred_at: timestamp(&tx.occurred_at)?,
        amount: domain::Money {
            minor_units: tx.amount.minor_units,
            currency: currency(tx.amount.currency)?,
        },
        external_id: tx.external_id,
        side: side(tx.side),
        kind: kind(tx.kind),
        time_known: tx.time_known,
        provider: tx.provider,
        merchant_ids: tx
            .merchant_ids
            .into_iter()
            .map(|m| domain::MerchantIdentifier {
                value: m.value,
                kind: id_kind(m.kind),
            })
            .collect(),
        card_first_six: tx.card_first_six,
        card_last_four: tx.card_last_four,
        card_token: tx.card_token,
        auth_code: tx.auth_code,
        approval_code: tx.approval_code,
        settlement_key: tx.settlement_key,
        account_id: tx.account_id,
        reference_id: tx.reference_id,
        payer_account: tx.payer_account,
        beneficiary_account: tx.beneficiary_account,
        extras: tx.extras,
    })
}

pub fn transaction_out(tx: &domain::Transaction) -> t::Transaction {
    t::Transaction {
        external_id: tx.external_id.clone(),
        side: side_out(tx.side),
        kind: kind_out(tx.kind),
        amount: t::Money {
            minor_units: tx.amount.minor_units,
            currency: tx.amount.currency.clone(),
        },
        occurred_at: timestamp_out(&tx.occurred_at),
        time_known: tx.time_known,
        provider: tx.provider.clone(),
        merchant_ids: tx
            .merchant_ids
            .iter()
            .map(|m| t::MerchantIdentifier {
                value: m.value.clone(),
                kind: id_kind_out(m.kind),
            })
            .collect(),
        card_first_six: tx.card_first_six.clone(),
        card_last_four: tx.card_last_four.clone(),
        card_token: tx.card_token.clone(),
        auth_code: tx.auth_code.clone(),
        approval_code: tx.approval_code.clone(),
        settlement_key: tx.settlement_key.clone(),
        account_id: tx.account_id.clone(),
        reference_id: tx.reference_id.clone(),
        payer_account: tx.payer_account.clone(),
        beneficiary_account: tx.beneficiary_account.clone(),
        extras: tx.extras.clone(),
    }
}

pub fn reject(r: t::Reject) -> domain::Reject {
    domain::Reject {
        row: r.row,
        byte_offset: r.byte_offset,
        field: r.field,
        reason: r.reason,
        raw: r.raw,
    }
}

/// A parser batch in domain terms. A transaction that breaks the contract's
/// invariants becomes a reject naming the plugin's mistake, so one bad record
/// never fails the whole import.
pub fn batch(b: latest::parser::Batch) -> domain::ParsedBatch {
    let mut out = domain::ParsedBatch {
        transactions: Vec::with_capacity(b.transactions.len()),
        rejects: b.rejects.into_iter().map(reject).collect(),
    };
    for p in b.transactions {
        let excerpt = p.transaction.external_id.clone();
        match transaction(p.transaction) {
            Ok(transaction) => out.transactions.push(domain::Parsed {
                row: p.row,
                transaction,
            }),
            Err(e) => out.rejects.push(domain::Reject {
                row: p.row,
                byte_offset: None,
                field: None,
                reason: format!("plugin produced an invalid transaction: {e}"),
                raw: excerpt,
            }),
        }
    }
    out
}

pub fn group_out(g: &domain::MatchGroup) -> latest::matcher::Group {
    latest::matcher::Group {
        payment: transaction_out(&g.payment),
        cardholder: g.cardholder.as_ref().map(|c| latest::matcher::Cardholder {
            card_token: c.card_token.clone(),
            first_six: c.first_six.clone(),
            last_four: c.last_four.clone(),
            loyalty_id: c.loyalty_id.clone(),
        }),
        candidates: g.candidates.iter().map(|t| transaction_out(t)).collect(),
    }
}

pub fn decision(
    d: latest::matcher::Decision,
    candidates: usize,
) -> Result<domain::MatchDecision, ConvertError> {
    let chosen = match d.chosen {
        Some(i) if (i as usize) < candidates => Some(i as usize),
        Some(i) => return Err(ConvertError(format!("chose candidate {i} of {candidates}"))),
        None => None,
    };
    Ok(domain::MatchDecision {
        chosen,
        reason: d.reason,
        confidence: d.confidence.min(100),
    })
}

pub fn item_out(item: &domain::RouteItem) -> latest::router::Item {
    use latest::router as r;
    match item {
        domain::RouteItem::Transaction(tx) => r::Item::Transaction(transaction_out(tx)),
        domain::RouteItem::Matched(m) => r::Item::Matched(r::Matched {
            id: m.id.clone(),
            kind: match m.kind {
                domain::MatchKind::Matched => r::MatchKind::Matched,
                domain::MatchKind::Spotted => r::MatchKind::Spotted,
                domain::MatchKind::Forced => r::MatchKind::Forced,
                domain::MatchKind::Unmatched => r::MatchKind::Unmatched,
            },
            payment: transaction_out(&m.payment),
            merchant: m.merchant.as_ref().map(transaction_out),
            merchant_slug: m.merchant_slug.clone(),
        }),
    }
}

pub fn route(r: latest::router::Route) -> Result<domain::Route, ConvertError> {
    Ok(domain::Route {
        not_before: r.not_before.as_ref().map(timestamp).transpose()?,
        destination: r.destination,
        payload: r.payload,
        content_type: r.content_type,
        idempotency_key: r.idempotency_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_their_offset() {
        let ts = t::Timestamp {
            epoch_seconds: 1_710_009_730,
            nanos: 5,
            utc_offset_seconds: -25_200,
        };
        let dt = timestamp(&ts).unwrap();
        assert_eq!(dt.to_rfc3339(), "2024-03-09T11:42:10.000000005-07:00");
        let back = timestamp_out(&dt);
        assert_eq!(
            (back.epoch_seconds, back.nanos, back.utc_offset_seconds),
            (ts.epoch_seconds, ts.nanos, ts.utc_offset_seconds)
        );
    }

    #[test]
    fn impossible_offsets_and_currencies_are_refused() {
        let ts = t::Timestamp {
            epoch_seconds: 0,
            nanos: 0,
            utc_offset_seconds: 100_000,
        };
        assert!(timestamp(&ts).is_err());
        assert!(currency("gbp".into()).is_err());
        assert!(currency("GBPX".into()).is_err());
        assert_eq!(currency("GBP".into()).unwrap(), "GBP");
    }

    #[test]
    fn out_of_range_choice_is_a_contract_breach() {
        let d = latest::matcher::Decision {
            chosen: Some(3),
            reason: "x".into(),
            confidence: 90,
        };
        assert!(decision(d, 3).is_err());
        let d = latest::matcher::Decision {
            chosen: Some(2),
            reason: "x".into(),
            confidence: 250,
        };
        assert_eq!(decision(d, 3).unwrap().confidence, 100);
    }
}
