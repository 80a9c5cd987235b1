//! Constructors for the canonical records.

use crate::{IdentifierKind, Kind, MerchantIdentifier, Money, Side, Timestamp, Transaction};

impl Transaction {
    /// A transaction with the required fields set and every optional one
    /// empty; set the rest with the `with_*` methods or field by field.
    pub fn new(
        external_id: impl Into<String>,
        side: Side,
        kind: Kind,
        amount: Money,
        occurred_at: Timestamp,
    ) -> Self {
        Transaction {
            external_id: external_id.into(),
            side,
            kind,
            amount,
            occurred_at,
            time_known: true,
            provider: None,
            merchant_ids: Vec::new(),
            card_first_six: None,
            card_last_four: None,
            card_token: None,
            auth_code: None,
            approval_code: None,
            settlement_key: None,
            account_id: None,
            reference_id: None,
            payer_account: None,
            beneficiary_account: None,
            extras: Vec::new(),
        }
    }

    pub fn with_merchant_id(mut self, value: impl Into<String>, kind: IdentifierKind) -> Self {
        let value = value.into();
        if !value.is_empty() {
            self.merchant_ids.push(MerchantIdentifier { value, kind });
        }
        self
    }

    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extras.push((key.into(), value.into()));
        self
    }

    /// The value of extra `key`, if set.
    pub fn extra(&self, key: &str) -> Option<&str> {
        self.extras
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `Some(s)` unless `s` is empty (or only whitespace): the canonical record
/// never carries empty strings.
pub fn non_empty(s: impl AsRef<str>) -> Option<String> {
    let s = s.as_ref().trim();
    (!s.is_empty()).then(|| s.to_string())
}

impl Money {
    pub fn new(minor_units: i64, currency: impl Into<String>) -> Self {
        Money {
            minor_units,
            currency: currency.into(),
        }
    }
}

impl Timestamp {
    /// The instant `epoch_seconds` UTC, expressed at `utc_offset_seconds`.
    pub fn new(epoch_seconds: i64, nanos: u32, utc_offset_seconds: i32) -> Self {
        Timestamp {
            epoch_seconds,
            nanos,
            utc_offset_seconds,
        }
    }
}
