//! Card-scheme resolution: the exact per-feed maps, and the first-six prefix
//! then name-substring rule shared by TGI Fridays and Stonegate
//! (merchant-feeds.md §0.2).

pub const VISA: &str = "visa";
pub const MASTERCARD: &str = "mastercard";
pub const AMEX: &str = "amex";

/// Iceland's `TransactionCardScheme`, exact and case-sensitive.
pub fn iceland_scheme(name: &str) -> Option<&'static str> {
    match name {
        "Amex" => Some(AMEX),
        "Visa" | "Visa Debit" | "Electron" | "Visa CPC" => Some(VISA),
        "MasterCard/MasterCard One"
        | "Maestro"
        | "EDC/Maestro (INT) / Laser"
        | "MasterCard Debit"
        | "Mastercard One" => Some(MASTERCARD),
        _ => None,
    }
}

/// Wasabi's `Card Type Name`, exact and case-sensitive. The Visa entry
/// without a closing parenthesis is as the feed writes it.
pub fn wasabi_card_type(name: &str) -> Option<&'static str> {
    match name {
        "American Express" => Some(AMEX),
        "Visa" | "Visa Debit" | "Visa (Purchasing Card)" | "Visa (Enhanced Management Info" => {
            Some(VISA)
        }
        "Mastercard" | "Maestro" | "Debit Mastercard" | "Compliments Card" => Some(MASTERCARD),
        _ => None,
    }
}

/// Itsu's `payment_card_type` is used as-is, but only these literals.
pub fn itsu_card_type(name: &str) -> Option<&'static str> {
    match name {
        "visa" => Some(VISA),
        "amex" => Some(AMEX),
        "mastercard" => Some(MASTERCARD),
        _ => None,
    }
}

/// Costa's card types: Harmonia stores any value; we keep only these
/// (reference Recommendation).
pub fn costa_card_type(name: &str) -> Option<&'static str> {
    itsu_card_type(name)
}

/// Name-map groups, tried in this order; the first substring hit wins.
const NAME_MAP: [(&str, &[&str]); 3] = [
    (VISA, &["visa", "vs"]),
    (
        MASTERCARD,
        &[
            "mastercard",
            "mcard",
            "mc",
            "master card",
            "master",
            "maestro",
        ],
    ),
    (
        AMEX,
        &["american express", "amex", "americanexpress", "am ex"],
    ),
];

/// §0.2: a first six of exactly six characters decides by its first digit
/// (4 visa; 2, 5 mastercard; 3 amex); otherwise the card-type name is
/// searched case-insensitively for the name map's substrings. `None`: the
/// row is dropped.
pub fn resolve(first_six: Option<&str>, card_type: &str) -> Option<&'static str> {
    if let Some(f) = first_six
        && f.chars().count() == 6
    {
        match f.chars().next() {
            Some('4') => return Some(VISA),
            Some('2' | '5') => return Some(MASTERCARD),
            Some('3') => return Some(AMEX),
            _ => {}
        }
    }
    let name = card_type.to_lowercase();
    NAME_MAP
        .iter()
        .find(|(_, needles)| needles.iter().any(|n| name.contains(n)))
        .map(|(provider, _)| *provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_map_examples_from_the_reference() {
        assert_eq!(resolve(None, "VISACREDIT"), Some(VISA));
        assert_eq!(resolve(None, "EDC/Maestro"), Some(MASTERCARD));
        assert_eq!(resolve(None, "americanexpress"), Some(AMEX));
        assert_eq!(resolve(None, "american experience"), None);
        assert_eq!(resolve(None, "AX"), None);
        assert_eq!(resolve(None, "VS"), Some(VISA));
        assert_eq!(resolve(None, "MC"), Some(MASTERCARD));
        assert_eq!(resolve(None, "Master Card"), Some(MASTERCARD));
        assert_eq!(resolve(None, "AM EX"), Some(AMEX));
        assert_eq!(resolve(None, ""), None);
        assert_eq!(resolve(None, "Gift Card"), None);
        assert_eq!(resolve(None, "Credit"), None);
    }

    #[test]
    fn visa_group_is_tried_first() {
        // Contains both "vs" and "mc": the visa group wins.
        assert_eq!(resolve(None, "mc/vs"), Some(VISA));
    }

    #[test]
    fn first_six_prefix_only_when_six_characters() {
        assert_eq!(resolve(Some("454321"), "Credit"), Some(VISA));
        assert_eq!(resolve(Some("512345"), "Credit"), Some(MASTERCARD));
        assert_eq!(resolve(Some("222100"), "Credit"), Some(MASTERCARD));
        assert_eq!(resolve(Some("374245"), "Credit"), Some(AMEX));
        // Prefix beats the name.
        assert_eq!(resolve(Some("454321"), "Mastercard"), Some(VISA));
        // Other first digits, or not six characters: the name decides.
        assert_eq!(resolve(Some("601100"), "Visa"), Some(VISA));
        assert_eq!(resolve(Some("601100"), "Discover"), None);
        assert_eq!(resolve(Some("45432"), "Amex"), Some(AMEX));
        assert_eq!(resolve(Some("4543210"), "Gift Card"), None);
        assert_eq!(resolve(Some(""), "Gift Card"), None);
    }

    #[test]
    fn exact_maps_are_case_sensitive() {
        assert_eq!(iceland_scheme("Visa Debit"), Some(VISA));
        assert_eq!(
            iceland_scheme("EDC/Maestro (INT) / Laser"),
            Some(MASTERCARD)
        );
        assert_eq!(iceland_scheme("Mastercard One"), Some(MASTERCARD));
        assert_eq!(iceland_scheme("Amex"), Some(AMEX));
        assert_eq!(iceland_scheme("visa"), None);
        assert_eq!(iceland_scheme("AMEX"), None);
        assert_eq!(
            wasabi_card_type("Visa (Enhanced Management Info"),
            Some(VISA)
        );
        assert_eq!(wasabi_card_type("Visa (Enhanced Management Info)"), None);
        assert_eq!(wasabi_card_type("Compliments Card"), Some(MASTERCARD));
        assert_eq!(wasabi_card_type("American Express"), Some(AMEX));
        assert_eq!(wasabi_card_type("Discover"), None);
        assert_eq!(itsu_card_type("visa"), Some(VISA));
        assert_eq!(itsu_card_type("Visa"), None);
        assert_eq!(costa_card_type("mastercard"), Some(MASTERCARD));
        assert_eq!(costa_card_type("discover"), None);
    }
}
