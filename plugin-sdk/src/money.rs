//! Exact money: amounts in integer minor units of ISO 4217 currencies.
//!
//! Feeds write amounts as decimal text in major units (`"24.50"`) or as
//! zero-padded integers in minor units (`"000000002450"`). Everything here
//! turns that text into a [`Money`] without ever going through a float, and
//! refuses what it cannot represent exactly instead of rounding silently
//! (except [`parse_major_truncating`], which copies Harmonia's rule on
//! purpose).
//!
//! The parsers run once per row of every import, so they parse digits by
//! hand with checked arithmetic and do not allocate beyond the returned
//! currency string.

use crate::{FieldError, Money};
use rust_decimal::Decimal;

/// Largest exponent in ISO 4217 (CLF, UYW: 4); bounds the scaling table.
const POW10: [u64; 5] = [1, 10, 100, 1_000, 10_000];

/// The minor-unit exponent of `currency` (GBP 2, JPY 0, BHD 3, CLF 4), after
/// checking it is a real ISO 4217 alpha-3 code written in upper case.
///
/// Codes with no minor unit defined (XAU, XDR, XXX...) count as exponent 0,
/// so their amounts are whole units.
pub fn exponent(currency: &str) -> Result<u32, FieldError> {
    // The handful of codes nearly every row carries skip the table lookup.
    match currency {
        "GBP" | "EUR" | "USD" | "CHF" | "AUD" | "CAD" | "SEK" | "NOK" | "DKK" | "PLN" => {
            return Ok(2);
        }
        "JPY" => return Ok(0),
        _ => {}
    }
    let well_formed = currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
    let found = if well_formed {
        iso_currency::Currency::from_code(currency)
    } else {
        None
    };
    match found {
        Some(c) => Ok(u32::from(c.exponent().unwrap_or(0))),
        None if !well_formed && currency.len() == 3 && currency.is_ascii() => {
            Err(FieldError::reason(format!(
                "invalid currency code {currency:?}: ISO 4217 codes are three upper-case letters"
            )))
        }
        None => Err(FieldError::reason(format!(
            "unknown currency code {currency:?}"
        ))),
    }
}

/// Major-unit decimal text (`"24.50"`, `"-3"`, `"+1.5"`, `".00"`) as exact
/// minor units. More significant decimals than the currency has is an error
/// (`"10.005"` GBP), trailing zeros beyond it are fine (`"10.500"`).
/// Surrounding whitespace is ignored; thousands separators and exponent
/// notation are not accepted.
pub fn parse_major(text: &str, currency: &str) -> Result<Money, FieldError> {
    let exp = exponent(currency)?;
    let minor = major_to_minor(text, exp, false)?;
    Ok(Money {
        minor_units: minor,
        currency: currency.to_string(),
    })
}

/// Like [`parse_major`], but decimals beyond the currency's exponent are
/// truncated toward zero instead of refused: Harmonia's rule, needed to
/// reproduce its amounts (`"10.005"` → 1000, `"-10.009"` → -1000).
pub fn parse_major_truncating(text: &str, currency: &str) -> Result<Money, FieldError> {
    let exp = exponent(currency)?;
    let minor = major_to_minor(text, exp, true)?;
    Ok(Money {
        minor_units: minor,
        currency: currency.to_string(),
    })
}

/// Signed integer minor-unit text, zero padding allowed (`"000000002450"`,
/// `"-00000011199"`, `"+5"`), as fixed-width scheme files write amounts.
pub fn parse_minor(text: &str, currency: &str) -> Result<Money, FieldError> {
    exponent(currency)?;
    let t = text.trim();
    let (negative, digits) = split_sign(t.as_bytes());
    if digits.is_empty() {
        return Err(not_a_number(text, "an integer amount in minor units"));
    }
    let mut magnitude: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(not_a_number(text, "an integer amount in minor units"));
        }
        magnitude = magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| too_large(text))?;
    }
    let minor = apply_sign(negative, magnitude).ok_or_else(|| too_large(text))?;
    Ok(Money {
        minor_units: minor,
        currency: currency.to_string(),
    })
}

/// The amount in major units as an exact decimal, for arithmetic and for
/// writers that want a decimal type rather than text.
pub fn to_decimal(money: &Money) -> Result<Decimal, FieldError> {
    let exp = exponent(&money.currency)?;
    Decimal::try_new(money.minor_units, exp).map_err(|e| {
        FieldError::reason(format!(
            "cannot express {} {} as a decimal: {e}",
            money.minor_units, money.currency
        ))
    })
}

/// The amount as major-unit text with exactly the currency's decimals
/// (`2450 GBP` → `"24.50"`, `5 JPY` → `"5"`), the inverse of [`parse_major`].
pub fn format_major(money: &Money) -> Result<String, FieldError> {
    Ok(to_decimal(money)?.to_string())
}

fn split_sign(bytes: &[u8]) -> (bool, &[u8]) {
    match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    }
}

/// `magnitude` with its sign as an i64, if it fits (i64::MIN included).
fn apply_sign(negative: bool, magnitude: u64) -> Option<i64> {
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

fn not_a_number(text: &str, wanted: &str) -> FieldError {
    FieldError::reason(format!("{text:?} is not {wanted}"))
}

fn too_large(text: &str) -> FieldError {
    FieldError::reason(format!("amount {text:?} is too large to represent"))
}

/// The digit loop behind [`parse_major`] and [`parse_major_truncating`].
fn major_to_minor(text: &str, exp: u32, truncate: bool) -> Result<i64, FieldError> {
    const WANTED: &str = "a decimal amount";
    let t = text.trim();
    let (negative, rest) = split_sign(t.as_bytes());
    let exp = exp as usize;
    let overflow = || too_large(text);

    let mut magnitude: u64 = 0;
    let mut i = 0;
    while i < rest.len() && rest[i].is_ascii_digit() {
        magnitude = magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(rest[i] - b'0')))
            .ok_or_else(overflow)?;
        i += 1;
    }
    let int_digits = i;

    let mut frac_digits = 0usize; // digits consumed into `magnitude`
    let mut frac_seen = 0usize; // all digits after the point
    let mut excess_nonzero = false;
    if i < rest.len() && rest[i] == b'.' {
        i += 1;
        while i < rest.len() && rest[i].is_ascii_digit() {
            let d = rest[i] - b'0';
            if frac_digits < exp {
                magnitude = magnitude
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(u64::from(d)))
                    .ok_or_else(overflow)?;
                frac_digits += 1;
            } else if d != 0 {
                excess_nonzero = true;
            }
            frac_seen += 1;
            i += 1;
        }
    }
    if i != rest.len() || int_digits + frac_seen == 0 {
        return Err(not_a_number(text, WANTED));
    }
    if excess_nonzero && !truncate {
        return Err(FieldError::reason(format!(
            "amount {text:?} has more than {exp} decimal place{} for its currency",
            if exp == 1 { "" } else { "s" }
        )));
    }
    let scale = POW10.get(exp - frac_digits).copied().ok_or_else(overflow)?;
    magnitude = magnitude.checked_mul(scale).ok_or_else(overflow)?;
    apply_sign(negative, magnitude).ok_or_else(overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn major(text: &str, currency: &str) -> Result<i64, FieldError> {
        parse_major(text, currency).map(|m| m.minor_units)
    }

    fn truncating(text: &str, currency: &str) -> Result<i64, FieldError> {
        parse_major_truncating(text, currency).map(|m| m.minor_units)
    }

    #[test]
    fn exponents_come_from_iso_4217() {
        assert_eq!(exponent("GBP"), Ok(2));
        assert_eq!(exponent("EUR"), Ok(2));
        assert_eq!(exponent("JPY"), Ok(0));
        assert_eq!(exponent("BHD"), Ok(3));
        assert_eq!(exponent("KWD"), Ok(3));
        assert_eq!(exponent("CLF"), Ok(4));
        assert_eq!(exponent("ISK"), Ok(0));
        // No minor unit defined: whole units.
        assert_eq!(exponent("XAU"), Ok(0));
        assert_eq!(exponent("XXX"), Ok(0));
    }

    #[test]
    fn currency_codes_are_checked_exactly() {
        let e = exponent("gbp").unwrap_err();
        assert!(e.reason.contains("\"gbp\""), "{e}");
        assert!(e.reason.contains("upper-case"), "{e}");
        assert!(e.field.is_empty());
        let e = exponent("ZZZ").unwrap_err();
        assert_eq!(e.reason, "unknown currency code \"ZZZ\"");
        assert!(exponent("").is_err());
        assert!(exponent("GB").is_err());
        assert!(exponent("GBPX").is_err());
        assert!(exponent(" GBP").is_err());
        assert!(exponent("UKL").is_err()); // Amex's non-ISO code
        assert!(parse_major("1.00", "gbp").is_err());
        assert!(parse_minor("100", "Gbp").is_err());
    }

    #[test]
    fn parse_major_accepts_plain_decimals() {
        assert_eq!(
            parse_major("24.50", "GBP").unwrap(),
            Money::new(2450, "GBP")
        );
        assert_eq!(major("24.5", "GBP"), Ok(2450));
        assert_eq!(major("-3", "GBP"), Ok(-300));
        assert_eq!(major("+1.5", "GBP"), Ok(150));
        assert_eq!(major(".00", "GBP"), Ok(0));
        assert_eq!(major(".5", "GBP"), Ok(50));
        assert_eq!(major("5.", "GBP"), Ok(500));
        assert_eq!(major("  7.1 ", "GBP"), Ok(710));
        assert_eq!(major("-0.00", "GBP"), Ok(0));
        assert_eq!(major("0007.10", "GBP"), Ok(710));
        assert_eq!(major("10.500", "GBP"), Ok(1050));
        assert_eq!(major("10.5000000000000000000000", "GBP"), Ok(1050));
        assert_eq!(major("1234", "JPY"), Ok(1234));
        assert_eq!(major("1234.000", "JPY"), Ok(1234));
        assert_eq!(major("1.234", "BHD"), Ok(1234));
        assert_eq!(major("1.2345", "CLF"), Ok(12345));
        assert_eq!(major("2", "CLF"), Ok(20000));
    }

    #[test]
    fn parse_major_refuses_inexact_amounts() {
        let e = parse_major("10.005", "GBP").unwrap_err();
        assert!(e.reason.contains("\"10.005\""), "{e}");
        assert!(e.reason.contains("2 decimal places"), "{e}");
        assert!(major("1.5", "JPY").is_err());
        assert!(major("1.2341", "BHD").is_err());
        assert!(major("0.0000001", "GBP").is_err());
    }

    #[test]
    fn parse_major_refuses_what_is_not_a_plain_number() {
        for bad in [
            "", " ", ".", "-", "+", "-.", "abc", "1,000.00", "1 000", "1e3", "1.5e2", "--1", "+-1",
            "1.2.3", "0x10", "24.50GBP", "£24.50", "NaN", "inf", "1_000", "- 1",
        ] {
            let e = parse_major(bad, "GBP").unwrap_err();
            assert!(e.reason.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn parse_major_checks_overflow() {
        assert_eq!(major("92233720368547758.07", "GBP"), Ok(i64::MAX));
        assert_eq!(major("-92233720368547758.08", "GBP"), Ok(i64::MIN));
        assert!(
            major("92233720368547758.08", "GBP")
                .unwrap_err()
                .reason
                .contains("too large")
        );
        assert!(major("-92233720368547758.09", "GBP").is_err());
        assert!(major("99999999999999999999999999", "GBP").is_err());
        assert_eq!(major("9223372036854775807", "JPY"), Ok(i64::MAX));
        assert!(major("9223372036854775808", "JPY").is_err());
    }

    #[test]
    fn truncating_drops_extra_decimals_toward_zero() {
        assert_eq!(truncating("10.005", "GBP"), Ok(1000));
        assert_eq!(truncating("-10.009", "GBP"), Ok(-1000));
        assert_eq!(truncating("24.5", "GBP"), Ok(2450));
        assert_eq!(truncating("24.50", "GBP"), Ok(2450));
        assert_eq!(truncating("0.999", "GBP"), Ok(99));
        assert_eq!(truncating("-0.001", "GBP"), Ok(0));
        assert_eq!(truncating("1.99", "JPY"), Ok(1));
        assert!(truncating("1e3", "GBP").is_err());
        assert!(truncating("1.00x", "GBP").is_err());
        assert!(truncating("10.005", "gbp").is_err());
    }

    #[test]
    fn parse_minor_reads_padded_signed_integers() {
        assert_eq!(
            parse_minor("000000002450", "GBP").unwrap(),
            Money::new(2450, "GBP")
        );
        assert_eq!(
            parse_minor("-00000011199", "GBP").unwrap().minor_units,
            -11199
        );
        assert_eq!(parse_minor("+5", "GBP").unwrap().minor_units, 5);
        assert_eq!(parse_minor(" 42\r", "JPY").unwrap().minor_units, 42);
        assert_eq!(
            parse_minor("-9223372036854775808", "GBP")
                .unwrap()
                .minor_units,
            i64::MIN
        );
        assert!(
            parse_minor("9223372036854775808", "GBP")
                .unwrap_err()
                .reason
                .contains("too large")
        );
        for bad in ["", "-", "24.50", "1 2", "12a", "+-1", "0x1"] {
            let e = parse_minor(bad, "GBP").unwrap_err();
            assert!(e.reason.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn decimal_and_text_round_trip() {
        assert_eq!(
            to_decimal(&Money::new(2450, "GBP")).unwrap().to_string(),
            "24.50"
        );
        assert_eq!(format_major(&Money::new(2450, "GBP")).unwrap(), "24.50");
        assert_eq!(format_major(&Money::new(-5, "GBP")).unwrap(), "-0.05");
        assert_eq!(format_major(&Money::new(0, "GBP")).unwrap(), "0.00");
        assert_eq!(format_major(&Money::new(5, "JPY")).unwrap(), "5");
        assert_eq!(format_major(&Money::new(1234, "BHD")).unwrap(), "1.234");
        assert_eq!(
            format_major(&Money::new(i64::MIN, "GBP")).unwrap(),
            "-92233720368547758.08"
        );
        assert!(format_major(&Money::new(1, "gbp")).is_err());
        for text in ["24.50", "-0.05", "0.00", "92233720368547758.07"] {
            let m = parse_major(text, "GBP").unwrap();
            assert_eq!(format_major(&m).unwrap(), text);
        }
    }
}
