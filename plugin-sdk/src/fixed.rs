//! Fixed-width records: fields cut out of a line by position.
//!
//! Scheme files such as Mastercard's TGX2 place each field at a documented
//! column and pad it with spaces. Offsets here are 0-based and widths count
//! characters, not bytes, so a stray non-ASCII character does not shift
//! every later field; lines shorter than a field's end yield `""` (or what
//! part of the field is there) instead of an error, as Harmonia reads them.

/// The field `width` characters long starting at character `start`
/// (0-based) of `line`, with surrounding whitespace (including a trailing
/// `\r`) trimmed. Past the end of a short line it is `""`.
pub fn field(line: &str, start: usize, width: usize) -> &str {
    let bytes = line.as_bytes();
    let end = start.saturating_add(width);
    let ascii_end = end.min(bytes.len());
    // Byte offsets equal character offsets while everything before the
    // field's end is ASCII, which is the normal case.
    if bytes[..ascii_end].is_ascii() {
        return line
            .get(start.min(ascii_end)..ascii_end)
            .unwrap_or("")
            .trim();
    }
    let mut chars = line
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(line.len()));
    let Some(from) = chars.nth(start) else {
        return "";
    };
    let to = if width == 0 {
        Some(from)
    } else {
        chars.nth(width - 1)
    };
    line[from..to.unwrap_or(line.len())].trim()
}

/// A named field position, so a layout reads as one table of constants and
/// rejects can name the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    pub name: &'static str,
    /// 0-based character offset (documentation often counts from 1).
    pub start: usize,
    /// Width in characters.
    pub width: usize,
}

impl FieldSpec {
    pub const fn new(name: &'static str, start: usize, width: usize) -> Self {
        FieldSpec { name, start, width }
    }

    /// This field of `line`, trimmed; see [`field`].
    pub fn get<'a>(&self, line: &'a str) -> &'a str {
        field(line, self.start, self.width)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    // Mastercard TGX2 detail record, payment-feeds.md §3.2.
    const RECORD_TYPE: FieldSpec = FieldSpec::new("record_type", 0, 1);
    const TOKEN: FieldSpec = FieldSpec::new("token", 21, 30);
    const DATE: FieldSpec = FieldSpec::new("date", 102, 8);
    const MID: FieldSpec = FieldSpec::new("mid", 451, 15);
    const LOCATION_ID: FieldSpec = FieldSpec::new("location_id", 500, 12);
    const AGGREGATE_MID: FieldSpec = FieldSpec::new("aggregate_merchant_id", 512, 6);
    const AMOUNT: FieldSpec = FieldSpec::new("amount", 518, 12);
    const TIME: FieldSpec = FieldSpec::new("time", 563, 4);
    const AUTH_CODE: FieldSpec = FieldSpec::new("auth_code", 567, 6);
    const TRANSACTION_ID: FieldSpec = FieldSpec::new("transaction_id", 761, 9);

    const SYNTHETIC: [(FieldSpec, &str); 10] = [
        (RECORD_TYPE, "D"),
        (TOKEN, "mc-token-synth-001"),
        (DATE, "20240309"),
        (MID, "MCMID0000012345"),
        (LOCATION_ID, "LOC000000777"),
        (AGGREGATE_MID, "AGG042"),
        (AMOUNT, "000000002450"),
        (TIME, "1842"),
        (AUTH_CODE, "731904"),
        (TRANSACTION_ID, "A1B2C3D4E"),
    ];

    /// Values left-justified into their widths, spaces elsewhere.
    fn detail_line(fields: &[(FieldSpec, &str)], len: usize) -> String {
        let mut line = vec![' '; len];
        for (spec, value) in fields {
            assert!(
                value.chars().count() <= spec.width,
                "{} too wide",
                spec.name
            );
            for (i, c) in value.chars().enumerate() {
                line[spec.start + i] = c;
            }
        }
        line.into_iter().collect()
    }

    #[test]
    fn fixture_is_the_documented_tgx2_line() {
        let line = detail_line(&SYNTHETIC, 770);
        assert_eq!(line.len(), 770);
        assert_eq!(
            hex::encode(Sha256::digest(line.as_bytes())),
            "a5fa3898ff5b939dea87b34fd4cc8518ae3a4357432e8b21df3485713a5dc0d4"
        );
    }

    #[test]
    fn reads_every_tgx2_field() {
        let line = detail_line(&SYNTHETIC, 770);
        for (spec, want) in SYNTHETIC {
            assert_eq!(spec.get(&line), want, "{}", spec.name);
        }
        // With a CRLF ending (split on \n only) nothing changes.
        let crlf = format!("{line}\r");
        assert_eq!(TRANSACTION_ID.get(&crlf), "A1B2C3D4E");
        // Longer lines are tolerated.
        let longer = format!("{line}{}", "Z".repeat(80));
        assert_eq!(TRANSACTION_ID.get(&longer), "A1B2C3D4E");
    }

    #[test]
    fn short_lines_yield_empty_or_partial_fields() {
        let line = detail_line(&SYNTHETIC, 770);
        let short = &line[..530];
        assert_eq!(AMOUNT.get(short), "000000002450");
        assert_eq!(TIME.get(short), "");
        assert_eq!(TRANSACTION_ID.get(short), "");
        assert_eq!(AMOUNT.get(&line[..524]), "000000");
        assert_eq!(field("", 0, 5), "");
        assert_eq!(field("abc", 3, 1), "");
        assert_eq!(field("abc", usize::MAX, usize::MAX), "");
        assert_eq!(field("abc", 1, usize::MAX), "bc");
        assert_eq!(field("abc", 1, 0), "");
    }

    #[test]
    fn trims_padding() {
        assert_eq!(field("  ab  cd  ", 0, 10), "ab  cd");
        assert_eq!(field("x\t42 \r", 1, 10), "42");
        assert_eq!(field("12345", 1, 3), "234");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        // 'é' and '€' are multi-byte: later fields must not shift.
        let line = "Dé€  CAFÉ  42";
        assert_eq!(field(line, 0, 1), "D");
        assert_eq!(field(line, 1, 1), "é");
        assert_eq!(field(line, 2, 1), "€");
        assert_eq!(field(line, 3, 8), "CAFÉ");
        assert_eq!(field(line, 11, 2), "42");
        assert_eq!(field(line, 11, 50), "42");
        assert_eq!(field(line, 13, 2), "");
        assert_eq!(field(line, 12, 0), "");
        // Non-ASCII only after the field: still the ASCII fast path, same answer.
        assert_eq!(field("ab cd é", 0, 2), "ab");
        let mut fields = SYNTHETIC;
        fields[1].1 = "tökén-ñ";
        let line = detail_line(&fields, 770);
        assert_eq!(line.chars().count(), 770);
        for (spec, want) in fields {
            assert_eq!(spec.get(&line), want, "{}", spec.name);
        }
    }
}
