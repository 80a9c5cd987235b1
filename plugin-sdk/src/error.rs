//! Per-field errors that become [`Reject`]s.

use crate::{Line, Reject};

/// Longest raw excerpt kept on a reject: enough to recognise the row, bounded
/// so a file of garbage cannot make the reject list huge.
pub const RAW_EXCERPT_MAX: usize = 256;

/// Why one field of one record could not be read. Helpers return it with an
/// empty `field`; name the field with [`FieldError::on`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An error not (yet) tied to a field.
    pub fn reason(reason: impl Into<String>) -> Self {
        FieldError {
            field: String::new(),
            reason: reason.into(),
        }
    }

    /// Name the field this error is about.
    pub fn on(mut self, field: &str) -> Self {
        self.field = field.to_string();
        self
    }

    /// The reject for `line`, with its row number, offset and an excerpt.
    pub fn reject(&self, line: &Line<'_>) -> Reject {
        self.reject_at(Some(line.number), Some(line.offset), line.bytes)
    }

    /// The reject for a record at `row` / `byte_offset` whose raw input is `raw`.
    pub fn reject_at(&self, row: Option<u64>, byte_offset: Option<u64>, raw: &[u8]) -> Reject {
        Reject {
            row,
            byte_offset,
            field: (!self.field.is_empty()).then(|| self.field.clone()),
            reason: self.reason.clone(),
            raw: excerpt(raw),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for FieldError {}

/// At most [`RAW_EXCERPT_MAX`] bytes of `raw`, lossily decoded, cut on a char
/// boundary, without a trailing line break.
pub fn excerpt(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let cut = &raw[..raw.len().min(RAW_EXCERPT_MAX)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if raw.len() > RAW_EXCERPT_MAX {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_carries_row_offset_field_and_excerpt() {
        let line = Line {
            number: 3,
            offset: 40,
            bytes: b"A2;x;GBP\r\n",
        };
        let r = FieldError::reason("not a number")
            .on("amount")
            .reject(&line);
        assert_eq!(r.row, Some(3));
        assert_eq!(r.byte_offset, Some(40));
        assert_eq!(r.field.as_deref(), Some("amount"));
        assert_eq!(r.reason, "not a number");
        assert_eq!(r.raw, "A2;x;GBP");
    }

    #[test]
    fn excerpt_is_bounded_and_marks_truncation() {
        let long = vec![b'a'; 1000];
        let e = excerpt(&long);
        assert_eq!(e.chars().filter(|c| *c == 'a').count(), RAW_EXCERPT_MAX);
        assert!(e.ends_with('…'));
    }
}
