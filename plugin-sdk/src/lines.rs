//! Splitting a chunked byte stream into lines.
//!
//! Parsers receive their input in chunks of arbitrary size; a line may start
//! in one chunk and end in the next. [`LineSplitter`] keeps the partial tail,
//! numbers lines from 1 and knows each line's byte offset in the whole input.

use crate::FieldError;

/// One line of input, without its `\n` (a trailing `\r` is kept in `bytes`
/// and stripped by [`Line::text`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// 1-based line number in the whole input.
    pub number: u64,
    /// Byte offset of the line's first byte in the whole input.
    pub offset: u64,
    pub bytes: &'a [u8],
}

impl<'a> Line<'a> {
    /// The line as UTF-8, without a trailing `\r`.
    pub fn text(&self) -> Result<&'a str, FieldError> {
        let b = self.bytes.strip_suffix(b"\r").unwrap_or(self.bytes);
        std::str::from_utf8(b).map_err(|e| {
            FieldError::reason(format!(
                "invalid UTF-8 at byte {} of the line",
                e.valid_up_to()
            ))
        })
    }
}

/// Carries partial lines across chunks.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    next_number: u64,
    /// Offset of the first byte of `partial` (or of the next line).
    offset: u64,
}

impl LineSplitter {
    pub fn new() -> Self {
        LineSplitter {
            partial: Vec::new(),
            next_number: 1,
            offset: 0,
        }
    }

    /// Lines seen so far.
    pub fn lines_seen(&self) -> u64 {
        self.next_number.saturating_sub(1)
    }

    /// Feed a chunk; `each` gets every line completed by it.
    pub fn push(&mut self, chunk: &[u8], mut each: impl FnMut(Line<'_>)) {
        if self.next_number == 0 {
            self.next_number = 1;
        }
        let mut rest = chunk;
        if !self.partial.is_empty() {
            match memchr(rest) {
                None => {
                    self.partial.extend_from_slice(rest);
                    return;
                }
                Some(i) => {
                    self.partial.extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                    let partial = std::mem::take(&mut self.partial);
                    self.emit(&partial, &mut each);
                    self.partial = partial;
                    self.partial.clear();
                }
            }
        }
        while let Some(i) = memchr(rest) {
            self.emit(&rest[..i], &mut each);
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    /// End of input: `each` gets the last line if it had no `\n`.
    pub fn finish(&mut self, mut each: impl FnMut(Line<'_>)) {
        if self.next_number == 0 {
            self.next_number = 1;
        }
        if !self.partial.is_empty() {
            let partial = std::mem::take(&mut self.partial);
            let number = self.next_number;
            each(Line {
                number,
                offset: self.offset,
                bytes: &partial,
            });
            self.next_number += 1;
            self.offset += partial.len() as u64;
        }
    }

    fn emit(&mut self, bytes: &[u8], each: &mut impl FnMut(Line<'_>)) {
        each(Line {
            number: self.next_number,
            offset: self.offset,
            bytes,
        });
        self.next_number += 1;
        self.offset += bytes.len() as u64 + 1;
    }
}

fn memchr(haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8], chunk: usize) -> Vec<(u64, u64, String)> {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            s.push(c, |l| {
                out.push((l.number, l.offset, l.text().unwrap().to_string()))
            });
        }
        s.finish(|l| out.push((l.number, l.offset, l.text().unwrap().to_string())));
        out
    }

    #[test]
    fn same_lines_whatever_the_chunk_size() {
        let input = b"alpha\r\nbeta\n\ngamma";
        let want = vec![
            (1, 0, "alpha".to_string()),
            (2, 7, "beta".to_string()),
            (3, 12, String::new()),
            (4, 13, "gamma".to_string()),
        ];
        for chunk in 1..=input.len() {
            assert_eq!(split(input, chunk), want, "chunk size {chunk}");
        }
    }

    #[test]
    fn trailing_newline_makes_no_empty_last_line() {
        assert_eq!(
            split(b"a\nb\n", 3),
            vec![(1, 0, "a".into()), (2, 2, "b".into())]
        );
    }

    #[test]
    fn invalid_utf8_is_a_field_error_not_a_panic() {
        let l = Line {
            number: 1,
            offset: 0,
            bytes: b"ok\xff",
        };
        assert!(
            l.text()
                .unwrap_err()
                .reason
                .contains("invalid UTF-8 at byte 2")
        );
    }
}
