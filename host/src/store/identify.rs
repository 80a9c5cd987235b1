//! Identification in the host (payment-feeds.md §0.1, matching-rules.md §2):
//! which merchant a staged transaction belongs to, from the registered
//! merchant identifiers (MIDs), read once per staged import.
//!
//! Staging reads every row of an import once, identifies it here and writes
//! the result; per row in SQL, the same lookups cost a jsonb expansion and
//! an index probe per identifier (a quarter of staging's time at a million
//! rows; `accord bench match`). Re-identification of the few payments left
//! unidentified uses the same rules ([`Registry::identify`]).

use std::collections::HashMap;

use sqlx::PgConnection;

use super::Result;
use crate::domain::{IdentifierKind, Kind, Transaction};

/// A merchant's staging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantSettings {
    /// `match`, `spot` or `stream`.
    pub mode: String,
    pub match_unregistered_cards: bool,
}

#[derive(Debug, Clone, Copy)]
struct Registered {
    id: i64,
    merchant: i64,
    kind: IdentifierKind,
}

/// What identification made of a payment-side transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identified {
    /// Through the registered identifier `identifier`.
    Merchant { merchant: i64, identifier: i64 },
    /// The best type's registered identifiers name several merchants.
    Ambiguous,
    /// None of its identifiers is registered for its provider.
    Unknown,
}

impl Identified {
    pub fn merchant(self) -> Option<i64> {
        match self {
            Identified::Merchant { merchant, .. } => Some(merchant),
            _ => None,
        }
    }

    pub fn identifier(self) -> Option<i64> {
        match self {
            Identified::Merchant { identifier, .. } => Some(identifier),
            _ => None,
        }
    }

    /// Why the payment is unidentified, if it is.
    pub fn note(self) -> Option<&'static str> {
        match self {
            Identified::Merchant { .. } => None,
            Identified::Ambiguous => Some("MIDs registered to several merchants"),
            Identified::Unknown => Some("no registered MID"),
        }
    }
}

/// The reference data identification reads: registered MIDs and merchants.
#[derive(Debug, Default)]
pub struct Registry {
    /// (provider slug, identifier) → its registrations (one per type), id order.
    by_value: HashMap<(String, String), Vec<Registered>>,
    /// (merchant, location id) → the identifiers registered at that location.
    by_location: HashMap<(i64, String), Vec<String>>,
    merchants: HashMap<i64, MerchantSettings>,
    slugs: HashMap<String, i64>,
}

/// Rank of an identifier type: lower is better (primary, secondary, psimi).
fn rank(kind: IdentifierKind) -> u8 {
    match kind {
        IdentifierKind::Primary => 0,
        IdentifierKind::Secondary => 1,
        IdentifierKind::Psimi => 2,
        IdentifierKind::Store => 3,
    }
}

/// An identifier value that never identifies: blank or "0" (the feeds' "none").
fn is_blank(value: &str) -> bool {
    matches!(value.trim_matches(' '), "" | "0")
}

impl Registry {
    /// Read every registered MID and merchant (inside the staging
    /// transaction, so what is identified agrees with its snapshot).
    pub async fn load(conn: &mut PgConnection) -> Result<Registry> {
        let mut registry = Registry::default();
        let mids: Vec<(i64, i64, String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT mi.id, mi.merchant, mi.identifier, mi.identifier_type, pp.slug, mi.location_id \
             FROM merchant_identifiers mi JOIN payment_providers pp ON pp.id = mi.provider \
             ORDER BY mi.id",
        )
        .fetch_all(&mut *conn)
        .await?;
        for (id, merchant, identifier, kind, provider, location) in mids {
            let kind: IdentifierKind = kind
                .parse()
                .map_err(|e| super::read::corrupt("identifier_type", e))?;
            if let Some(location) = location {
                registry
                    .by_location
                    .entry((merchant, location))
                    .or_default()
                    .push(identifier.clone());
            }
            registry
                .by_value
                .entry((provider, identifier))
                .or_default()
                .push(Registered { id, merchant, kind });
        }
        let merchants: Vec<(i64, String, String, bool)> =
            sqlx::query_as("SELECT id, slug, mode, match_unregistered_cards FROM merchants")
                .fetch_all(&mut *conn)
                .await?;
        for (id, slug, mode, match_unregistered_cards) in merchants {
            registry.slugs.insert(slug, id);
            registry.merchants.insert(
                id,
                MerchantSettings {
                    mode,
                    match_unregistered_cards,
                },
            );
        }
        Ok(registry)
    }

    pub fn merchant(&self, id: i64) -> Option<&MerchantSettings> {
        self.merchants.get(&id)
    }

    pub fn merchant_by_slug(&self, slug: &str) -> Option<i64> {
        self.slugs.get(slug).copied()
    }

    fn registered<'a>(&'a self, provider: &str, value: &str) -> &'a [Registered] {
        self.by_value
            .get(&(provider.to_owned(), value.to_owned()))
            .map_or(&[], Vec::as_slice)
    }

    /// Identify a payment-side transaction: its provider's registered
    /// identifiers among its MIDs (each compared with its own type), best
    /// type first; within that type the first registered identifier
    /// decides, and hits on several merchants make it ambiguous.
    pub fn identify(&self, t: &Transaction) -> Identified {
        let Some(provider) = t.provider.as_deref() else {
            return Identified::Unknown;
        };
        // (rank, identifier id, merchant) of the best type seen so far.
        let mut best: Option<(u8, i64, i64)> = None;
        let mut ambiguous = false;
        for x in &t.merchant_ids {
            if is_blank(&x.value) {
                continue;
            }
            for r in self.registered(provider, &x.value) {
                if r.kind != x.kind {
                    continue;
                }
                let hit = (rank(r.kind), r.id, r.merchant);
                match best {
                    Some((b_rank, _, _)) if hit.0 > b_rank => {}
                    Some((b_rank, b_id, b_merchant)) if hit.0 == b_rank => {
                        ambiguous |= hit.2 != b_merchant;
                        if hit.1 < b_id {
                            best = Some(hit);
                        }
                    }
                    _ => {
                        best = Some(hit);
                        ambiguous = false;
                    }
                }
            }
        }
        match best {
            None => Identified::Unknown,
            Some(_) if ambiguous => Identified::Ambiguous,
            Some((_, identifier, merchant)) => Identified::Merchant {
                merchant,
                identifier,
            },
        }
    }

    /// The merchant of a merchant-side record: the source's own merchant
    /// (`source_merchant`, a slug) when it names one that exists, else the
    /// one merchant its non-store identifiers are registered to for its
    /// provider (any type); none when they name none or several.
    pub fn assign(&self, t: &Transaction, source_merchant: Option<&str>) -> Option<i64> {
        if let Some(id) = source_merchant.and_then(|slug| self.merchant_by_slug(slug)) {
            return Some(id);
        }
        let provider = t.provider.as_deref()?;
        let mut found: Option<i64> = None;
        for x in t
            .merchant_ids
            .iter()
            .filter(|x| x.kind != IdentifierKind::Store)
        {
            for r in self.registered(provider, &x.value) {
                match found {
                    Some(m) if m != r.merchant => return None,
                    _ => found = Some(r.merchant),
                }
            }
        }
        found
    }

    /// The MID strings a merchant-side record is matched on: its non-store
    /// identifiers (blank and "0" left out) and, for a store id, every
    /// identifier registered at that location of `merchant`; sorted, once each.
    pub fn record_mids(&self, t: &Transaction, merchant: Option<i64>) -> Vec<String> {
        let mut mids: Vec<String> = Vec::with_capacity(t.merchant_ids.len());
        for x in &t.merchant_ids {
            if x.kind == IdentifierKind::Store {
                if let Some(at) = merchant.and_then(|m| self.by_location.get(&(m, x.value.clone())))
                {
                    mids.extend(at.iter().cloned());
                }
            } else if !is_blank(&x.value) {
                mids.push(x.value.clone());
            }
        }
        mids.sort_unstable();
        mids.dedup();
        mids
    }
}

/// A staged payment's status, from its identification, its merchant's mode
/// and its card's registration (matching-rules.md §2, §5;
/// payment-feeds.md §2.3 for the Amex authorisations that are dropped).
pub fn payment_status(
    t: &Transaction,
    merchant: Option<&MerchantSettings>,
    card_registered: bool,
) -> &'static str {
    let Some(m) = merchant else {
        return "unidentified";
    };
    let spot_or_stream = matches!(m.mode.as_str(), "spot" | "stream");
    if t.provider.as_deref() == Some("amex") && t.kind == Kind::Authorisation && spot_or_stream {
        "dropped"
    } else if t.kind == Kind::Refund || m.mode == "stream" {
        "streamed"
    } else if m.mode == "spot" {
        "spotted"
    } else if !m.match_unregistered_cards && !card_registered {
        "unregistered"
    } else {
        "pending"
    }
}

/// A staged merchant-side record's status.
pub fn record_status(t: &Transaction, merchant: Option<i64>) -> &'static str {
    if merchant.is_none() {
        "unassigned"
    } else if t.kind == Kind::Refund || t.amount.minor_units < 0 {
        "refund"
    } else {
        "pending"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MerchantIdentifier;

    fn tx(provider: &str, ids: &[(&str, IdentifierKind)]) -> Transaction {
        let mut t = Transaction::example("x");
        t.kind = Kind::Settlement;
        t.provider = Some(provider.into());
        t.merchant_ids = ids
            .iter()
            .map(|(v, k)| MerchantIdentifier {
                value: (*v).into(),
                kind: *k,
            })
            .collect();
        t
    }

    /// (id, merchant, identifier, type, provider, location) of a registered MID.
    type Mid<'a> = (i64, i64, &'a str, IdentifierKind, &'a str, Option<&'a str>);

    fn registry(mids: &[Mid<'_>]) -> Registry {
        let mut r = Registry::default();
        for &(id, merchant, value, kind, provider, location) in mids {
            if let Some(l) = location {
                r.by_location
                    .entry((merchant, l.into()))
                    .or_default()
                    .push(value.into());
            }
            r.by_value
                .entry((provider.into(), value.into()))
                .or_default()
                .push(Registered { id, merchant, kind });
        }
        r
    }

    use IdentifierKind::{Primary, Psimi, Secondary, Store};

    #[test]
    fn the_best_identifier_type_decides() {
        let r = registry(&[
            (1, 10, "P1", Primary, "visa", None),
            (2, 20, "S1", Secondary, "visa", None),
            (3, 30, "X1", Psimi, "visa", None),
        ]);
        let t = tx("visa", &[("X1", Psimi), ("S1", Secondary)]);
        assert_eq!(
            r.identify(&t),
            Identified::Merchant {
                merchant: 20,
                identifier: 2
            }
        );
        let t = tx("visa", &[("X1", Psimi), ("S1", Secondary), ("P1", Primary)]);
        assert_eq!(r.identify(&t).merchant(), Some(10));
    }

    #[test]
    fn a_registration_counts_only_for_its_own_type_and_provider() {
        let r = registry(&[(1, 10, "M1", Primary, "visa", None)]);
        assert_eq!(
            r.identify(&tx("visa", &[("M1", Secondary)])),
            Identified::Unknown
        );
        assert_eq!(
            r.identify(&tx("amex", &[("M1", Primary)])),
            Identified::Unknown
        );
        assert_eq!(
            r.identify(&tx("visa", &[("M1", Primary)])).identifier(),
            Some(1)
        );
    }

    #[test]
    fn several_merchants_in_the_best_type_are_ambiguous_and_blank_ids_never_identify() {
        let r = registry(&[
            (1, 10, "A", Primary, "visa", None),
            (2, 20, "B", Primary, "visa", None),
            (3, 30, "0", Primary, "visa", None),
            (4, 10, "C", Secondary, "visa", None),
        ]);
        let t = tx("visa", &[("A", Primary), ("B", Primary)]);
        assert_eq!(r.identify(&t), Identified::Ambiguous);
        assert_eq!(
            Identified::Ambiguous.note(),
            Some("MIDs registered to several merchants")
        );
        // A worse type's hit does not resolve the ambiguity of a better one...
        let t = tx("visa", &[("C", Secondary), ("A", Primary), ("B", Primary)]);
        assert_eq!(r.identify(&t), Identified::Ambiguous);
        // ...and two hits of one merchant are not ambiguous: the lowest id wins.
        let r2 = registry(&[
            (5, 10, "A", Primary, "visa", None),
            (2, 10, "B", Primary, "visa", None),
        ]);
        assert_eq!(
            r2.identify(&tx("visa", &[("A", Primary), ("B", Primary)]))
                .identifier(),
            Some(2)
        );
        assert_eq!(
            r.identify(&tx("visa", &[("0", Primary)])),
            Identified::Unknown
        );
        assert_eq!(
            r.identify(&tx("visa", &[(" 0 ", Primary)])),
            Identified::Unknown
        );
    }

    #[test]
    fn merchant_side_records_are_assigned_and_store_ids_expanded() {
        let r = registry(&[
            (1, 10, "M1", Primary, "visa", Some("store-7")),
            (2, 10, "M2", Secondary, "amex", Some("store-7")),
            (3, 20, "N1", Primary, "visa", None),
        ]);
        let t = tx(
            "visa",
            &[("M1", Secondary), ("store-7", Store), ("", Primary)],
        );
        // Any type of registration counts for assignment.
        assert_eq!(r.assign(&t, None), Some(10));
        assert_eq!(r.record_mids(&t, Some(10)), vec!["M1", "M2"]);
        // Without a merchant a store id expands to nothing.
        assert_eq!(r.record_mids(&t, None), vec!["M1"]);
        let both = tx("visa", &[("M1", Primary), ("N1", Primary)]);
        assert_eq!(r.assign(&both, None), None);
        let mut named = r;
        named.slugs.insert("iceland".into(), 30);
        assert_eq!(named.assign(&both, Some("iceland")), Some(30));
        assert_eq!(named.assign(&both, Some("unknown")), None);
    }

    #[test]
    fn statuses_follow_mode_kind_and_registration() {
        let m = |mode: &str, any_card: bool| MerchantSettings {
            mode: mode.into(),
            match_unregistered_cards: any_card,
        };
        let mut t = tx("amex", &[]);
        assert_eq!(payment_status(&t, None, true), "unidentified");
        assert_eq!(
            payment_status(&t, Some(&m("match", false)), false),
            "unregistered"
        );
        assert_eq!(
            payment_status(&t, Some(&m("match", false)), true),
            "pending"
        );
        assert_eq!(payment_status(&t, Some(&m("spot", true)), true), "spotted");
        t.kind = Kind::Authorisation;
        assert_eq!(payment_status(&t, Some(&m("spot", true)), true), "dropped");
        assert_eq!(payment_status(&t, Some(&m("match", true)), true), "pending");
        t.kind = Kind::Refund;
        assert_eq!(
            payment_status(&t, Some(&m("match", true)), true),
            "streamed"
        );
        assert_eq!(record_status(&t, Some(1)), "refund");
        assert_eq!(record_status(&t, None), "unassigned");
        t.kind = Kind::Sale;
        t.amount.minor_units = -5;
        assert_eq!(record_status(&t, Some(1)), "refund");
        t.amount.minor_units = 5;
        assert_eq!(record_status(&t, Some(1)), "pending");
    }
}
