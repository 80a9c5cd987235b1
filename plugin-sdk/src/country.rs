//! ISO 3166-1 country codes.
//!
//! Feeds write countries as alpha-2 (`GB`) or alpha-3 (`GBR`), in either
//! case; the canonical record stores alpha-2 so values compare equal. The
//! code list is `isocountry`'s.

use crate::FieldError;
use isocountry::CountryCode;

/// The ISO 3166-1 alpha-2 code for an alpha-2 or alpha-3 code in any case
/// (`"gbr"` → `"GB"`). Surrounding whitespace is ignored. Codes that are not
/// assigned (`"XX"`, and `"UK"`, which ISO reserves but does not assign) are
/// errors.
pub fn alpha2(code: &str) -> Result<&'static str, FieldError> {
    let c = code.trim();
    let found = match c.len() {
        2 => CountryCode::for_alpha2_caseless(c).ok(),
        3 => CountryCode::for_alpha3_caseless(c).ok(),
        _ => None,
    };
    found.map(|cc| cc.alpha2()).ok_or_else(|| {
        FieldError::reason(format!(
            "unknown country code {code:?} (expected ISO 3166-1 alpha-2 or alpha-3)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha2_and_alpha3_in_any_case() {
        assert_eq!(alpha2("GB"), Ok("GB"));
        assert_eq!(alpha2("gb"), Ok("GB"));
        assert_eq!(alpha2("gbr"), Ok("GB"));
        assert_eq!(alpha2("GBR"), Ok("GB"));
        assert_eq!(alpha2("NL"), Ok("NL"));
        assert_eq!(alpha2("nld"), Ok("NL"));
        assert_eq!(alpha2("Deu"), Ok("DE"));
        assert_eq!(alpha2("USA"), Ok("US"));
        assert_eq!(alpha2(" ie "), Ok("IE"));
    }

    #[test]
    fn unknown_codes_are_errors_naming_them() {
        for bad in ["XX", "UK", "XXX", "", "G", "GBRX", "826", "Britain"] {
            let e = alpha2(bad).unwrap_err();
            assert!(e.reason.contains(&format!("{bad:?}")), "{bad}: {e}");
            assert!(e.field.is_empty());
        }
    }
}
