//! IBANs: validation and normalisation to the electronic format.
//!
//! Payer and beneficiary accounts arrive in print format (`GB82 WEST 1234
//! 5698 7654 32`), electronic format, or lower case. Stored values are always
//! the electronic format, so the same account compares equal whichever way a
//! feed wrote it. The checks themselves (ISO 7064 checksum, per-country BBAN
//! layout from the SWIFT registry) are `iban_validate`'s.

use crate::FieldError;
use iban::{Iban, IbanLike, ParseBaseIbanError, ParseIbanError};

/// Longest IBAN in electronic format (ISO 13616).
const MAX_LEN: usize = 34;

/// Check an IBAN written in print or electronic format, any case, and return
/// its electronic format (upper case, no spaces). The error says why it is
/// not an IBAN: bad characters or length, unknown country, wrong layout for
/// its country, or a bad checksum.
pub fn validate(text: &str) -> Result<String, FieldError> {
    let mut compact = String::with_capacity(MAX_LEN);
    for c in text.chars() {
        if c.is_whitespace() {
            continue;
        }
        if !c.is_ascii_alphanumeric() {
            return Err(FieldError::reason(format!(
                "IBAN {text:?} contains {c:?}: only letters, digits and spaces are allowed"
            )));
        }
        compact.push(c.to_ascii_uppercase());
    }
    if compact.len() < 5 || compact.len() > MAX_LEN {
        return Err(FieldError::reason(format!(
            "IBAN {text:?} has {} characters; IBANs have 5 to {MAX_LEN}",
            compact.len()
        )));
    }
    let b = compact.as_bytes();
    if !(b[0].is_ascii_alphabetic() && b[1].is_ascii_alphabetic()) {
        return Err(FieldError::reason(format!(
            "IBAN {text:?} does not start with a two-letter country code"
        )));
    }
    if !(b[2].is_ascii_digit() && b[3].is_ascii_digit()) {
        return Err(FieldError::reason(format!(
            "IBAN {text:?} does not have two check digits after its country code"
        )));
    }
    match compact.parse::<Iban>() {
        Ok(iban) => Ok(iban.electronic_str().to_string()),
        Err(ParseIbanError::InvalidBaseIban {
            source: ParseBaseIbanError::InvalidChecksum,
        }) => Err(FieldError::reason(format!(
            "IBAN {text:?} has a bad checksum"
        ))),
        Err(ParseIbanError::InvalidBaseIban {
            source: ParseBaseIbanError::InvalidFormat,
        }) => Err(FieldError::reason(format!(
            "IBAN {text:?} is not in IBAN format"
        ))),
        Err(ParseIbanError::UnknownCountry(_)) => Err(FieldError::reason(format!(
            "IBAN {text:?} has country code {:?}, which does not issue IBANs",
            &compact[..2]
        ))),
        Err(ParseIbanError::InvalidBban(_)) => Err(FieldError::reason(format!(
            "IBAN {text:?} has the wrong length or layout for country {:?} ({} characters)",
            &compact[..2],
            compact.len()
        ))),
    }
}

/// The country code of an IBAN in electronic format (as [`validate`]
/// returns), for routing by country without re-validating. `None` if it does
/// not start with two upper-case letters.
pub fn country_code(iban: &str) -> Option<&str> {
    let cc = iban.get(..2)?;
    cc.bytes().all(|b| b.is_ascii_uppercase()).then_some(cc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_print_and_electronic_formats_in_any_case() {
        for text in [
            "GB82WEST12345698765432",
            "GB82 WEST 1234 5698 7654 32",
            "gb82 west 1234 5698 7654 32",
            "  GB82WEST1234 5698765432\t",
        ] {
            assert_eq!(
                validate(text).unwrap(),
                "GB82WEST12345698765432",
                "{text:?}"
            );
        }
        assert_eq!(
            validate("DE89 3704 0044 0532 0130 00").unwrap(),
            "DE89370400440532013000"
        );
        assert_eq!(
            validate("nl91abna0417164300").unwrap(),
            "NL91ABNA0417164300"
        );
        assert_eq!(
            validate("FR14 2004 1010 0505 0001 3M02 606").unwrap(),
            "FR1420041010050500013M02606"
        );
    }

    #[test]
    fn says_why_an_iban_is_refused() {
        let reason = |t: &str| validate(t).unwrap_err().reason;
        let r = reason("GB82 WEST 1234 5698 7654 33");
        assert!(
            r.contains("checksum") && r.contains("GB82 WEST 1234 5698 7654 33"),
            "{r}"
        );
        let r = reason("GB04WEST123456987654"); // valid checksum, two characters short
        assert!(r.contains("length") && r.contains("\"GB\""), "{r}");
        let r = reason("US64SVBKUS6S3300958879");
        assert!(r.contains("\"US\"") && r.contains("does not issue"), "{r}");
        let r = reason("GB82-WEST-1234");
        assert!(r.contains("'-'"), "{r}");
        assert!(reason("").contains("0 characters"));
        assert!(reason("GB82WEST12345698765432123456789012345").contains("characters"));
        assert!(reason("1282WEST12345698765432").contains("country code"));
        assert!(reason("GBX2WEST12345698765432").contains("check digits"));
        assert!(reason("GB82WÉST12345698765432").contains("'É'"));
        assert!(validate("GB82WEST12345698765432").is_ok());
    }

    #[test]
    fn country_code_reads_the_prefix() {
        assert_eq!(country_code("GB82WEST12345698765432"), Some("GB"));
        assert_eq!(
            country_code(&validate("de89 3704 0044 0532 0130 00").unwrap()),
            Some("DE")
        );
        assert_eq!(country_code("gb82"), None);
        assert_eq!(country_code("1"), None);
        assert_eq!(country_code(""), None);
        assert_eq!(country_code("É1"), None);
    }
}
