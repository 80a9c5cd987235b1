//! Streaming CSV over arbitrary chunks.
//!
//! Parsers get their input in chunks that may split a record, a quoted
//! field or a CRLF anywhere. [`CsvStream`] runs `csv-core`'s state machine
//! over each chunk and hands out each completed record as a borrowed
//! [`CsvRecord`] (quoted fields may hold delimiters, `""` quotes and line
//! breaks; records end with LF, CRLF or CR). Records are numbered from 1 (the
//! header is record 1) and know the byte offset of their first byte in the
//! whole input, so rejects point at the right place. Blank lines are skipped
//! and not counted.
//!
//! Nothing is allocated per record or per field: field bytes and field ends
//! live in two buffers that are reused, grown only for an unusually long
//! record. [`Header`] maps column names to indexes once per file.

use crate::{FieldError, Reject};
use csv_core::{ReadRecordResult, Reader, ReaderBuilder};

const INITIAL_FIELD_BYTES: usize = 4 * 1024;
const INITIAL_FIELDS: usize = 64;

/// Incremental CSV reader: feed chunks with [`push`](CsvStream::push), then
/// call [`finish`](CsvStream::finish) once at end of input.
#[derive(Debug)]
pub struct CsvStream {
    reader: Reader,
    delimiter: u8,
    /// Unescaped bytes of the fields of the record being read.
    fields: Vec<u8>,
    /// End (in `fields`) of each field of the record being read.
    ends: Vec<usize>,
    /// Bytes of `fields` / entries of `ends` in use.
    out_len: usize,
    ends_len: usize,
    /// Bytes of input consumed so far.
    consumed: u64,
    /// Whether a record has started (its first byte has been seen).
    in_record: bool,
    /// Offset of the first byte of the current record.
    record_start: u64,
    /// Records emitted so far.
    rows: u64,
}

impl Default for CsvStream {
    /// Comma-separated.
    fn default() -> Self {
        CsvStream::new(b',')
    }
}

impl CsvStream {
    /// A reader for `delimiter`-separated values (`b','`, `b';'`, `b'\t'`,
    /// `b'|'`), with `"` quoting and `""` as an escaped quote.
    pub fn new(delimiter: u8) -> Self {
        CsvStream {
            reader: ReaderBuilder::new().delimiter(delimiter).build(),
            delimiter,
            fields: vec![0; INITIAL_FIELD_BYTES],
            ends: vec![0; INITIAL_FIELDS],
            out_len: 0,
            ends_len: 0,
            consumed: 0,
            in_record: false,
            record_start: 0,
            rows: 0,
        }
    }

    /// Records emitted so far (the number of the last one).
    pub fn rows_seen(&self) -> u64 {
        self.rows
    }

    /// Feed a chunk; `each` gets every record completed by it.
    pub fn push(&mut self, chunk: &[u8], mut each: impl FnMut(&CsvRecord<'_>)) {
        let mut input = chunk;
        loop {
            if !self.in_record {
                // Line breaks between records (the LF of a CRLF, blank lines)
                // are consumed here so the next record's offset is exact.
                let skip = input
                    .iter()
                    .position(|&b| b != b'\n' && b != b'\r')
                    .unwrap_or(input.len());
                self.consumed += skip as u64;
                input = &input[skip..];
                if input.is_empty() {
                    return;
                }
                self.in_record = true;
                self.record_start = self.consumed;
            }
            let (res, nin, nout, nend) = self.reader.read_record(
                input,
                &mut self.fields[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            input = &input[nin..];
            self.consumed += nin as u64;
            self.out_len += nout;
            self.ends_len += nend;
            match res {
                ReadRecordResult::InputEmpty => return,
                ReadRecordResult::OutputFull => {
                    let n = self.fields.len() * 2;
                    self.fields.resize(n, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                ReadRecordResult::Record => self.emit(&mut each),
                ReadRecordResult::End => return,
            }
        }
    }

    /// End of input: `each` gets the last record if it had no line break.
    /// The stream is then reset and can read a new input.
    pub fn finish(&mut self, mut each: impl FnMut(&CsvRecord<'_>)) {
        while self.in_record {
            let (res, _, nout, nend) = self.reader.read_record(
                &[],
                &mut self.fields[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            self.out_len += nout;
            self.ends_len += nend;
            match res {
                ReadRecordResult::OutputFull => {
                    let n = self.fields.len() * 2;
                    self.fields.resize(n, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                ReadRecordResult::Record => self.emit(&mut each),
                ReadRecordResult::InputEmpty | ReadRecordResult::End => {
                    self.in_record = false;
                }
            }
        }
        self.reader.reset();
        self.out_len = 0;
        self.ends_len = 0;
        self.consumed = 0;
        self.rows = 0;
    }

    fn emit(&mut self, each: &mut impl FnMut(&CsvRecord<'_>)) {
        let ends = &self.ends[..self.ends_len];
        let fields = &self.fields[..self.out_len];
        self.in_record = false;
        self.out_len = 0;
        self.ends_len = 0;
        // A record with one empty field and no bytes is a blank line. (The
        // skipping in `push` means csv-core never reports one; kept as a
        // guard.)
        let raw_len = self.consumed - self.record_start;
        if ends.len() == 1 && ends[0] == 0 && raw_len == 0 {
            return;
        }
        self.rows += 1;
        each(&CsvRecord {
            fields,
            ends,
            row: self.rows,
            byte_offset: self.record_start,
            delimiter: self.delimiter,
        });
    }
}

/// One record, borrowed from the stream's buffers for the duration of the
/// callback. Copy out what must outlive it.
#[derive(Debug, Clone, Copy)]
pub struct CsvRecord<'a> {
    fields: &'a [u8],
    ends: &'a [usize],
    row: u64,
    byte_offset: u64,
    delimiter: u8,
}

impl<'a> CsvRecord<'a> {
    /// 1-based record number (the header is record 1; blank lines are not
    /// counted).
    pub fn row(&self) -> u64 {
        self.row
    }

    /// Offset in the whole input of the record's first byte.
    pub fn byte_offset(&self) -> u64 {
        self.byte_offset
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Field `i` (0-based), unquoted and unescaped.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.fields[start..end])
    }

    /// Field `i` (0-based) as UTF-8 text; a missing column or bad UTF-8 is a
    /// [`FieldError`] to name with [`FieldError::on`].
    pub fn str(&self, i: usize) -> Result<&'a str, FieldError> {
        let bytes = self.get(i).ok_or_else(|| {
            FieldError::reason(format!(
                "record has {} fields, wanted field {}",
                self.len(),
                i + 1
            ))
        })?;
        std::str::from_utf8(bytes).map_err(|e| {
            FieldError::reason(format!(
                "field {} is not valid UTF-8 (at byte {}): {:?}",
                i + 1,
                e.valid_up_to(),
                String::from_utf8_lossy(bytes)
            ))
        })
    }

    /// Iterate over the fields.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// The fields joined again with the delimiter (unquoted), to show in a
    /// reject what the record held.
    pub fn raw_excerpt(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.fields.len() + self.ends.len());
        for (i, f) in self.iter().enumerate() {
            if i > 0 {
                out.push(self.delimiter);
            }
            out.extend_from_slice(f);
        }
        out
    }

    /// The reject for this record: `err` with its row, offset and excerpt.
    pub fn reject(&self, err: &FieldError) -> Reject {
        err.reject_at(Some(self.row), Some(self.byte_offset), &self.raw_excerpt())
    }
}

/// Column names of a header record, to find fields by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    names: Vec<String>,
}

impl Header {
    /// The header from record `r`: names trimmed, a UTF-8 byte order mark
    /// on the first one removed (exported spreadsheets often start with one).
    pub fn from_record(r: &CsvRecord<'_>) -> Result<Header, FieldError> {
        let mut names = Vec::with_capacity(r.len());
        for i in 0..r.len() {
            let mut name = r
                .str(i)
                .map_err(|e| FieldError::reason(format!("header: {}", e.reason)))?;
            if i == 0 {
                name = name.strip_prefix('\u{feff}').unwrap_or(name);
            }
            names.push(name.trim().to_string());
        }
        Ok(Header { names })
    }

    /// Index of the first column called exactly `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Index of column `name`, or an error naming it and the columns the
    /// file does have — the usual way a parser checks a file at its header.
    pub fn require(&self, name: &str) -> Result<usize, FieldError> {
        self.index(name).ok_or_else(|| {
            FieldError::reason(format!(
                "missing column {name:?} (columns present: {})",
                self.names
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (row, offset, fields) of every record.
    type Rec = (u64, u64, Vec<String>);

    fn collect(out: &mut Vec<Rec>) -> impl FnMut(&CsvRecord<'_>) + '_ {
        |r| {
            let fields = (0..r.len())
                .map(|i| String::from_utf8_lossy(r.get(i).unwrap()).into_owned())
                .collect();
            out.push((r.row(), r.byte_offset(), fields))
        }
    }

    fn read_chunks(delimiter: u8, chunks: &[&[u8]]) -> Vec<Rec> {
        let mut s = CsvStream::new(delimiter);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, collect(&mut out));
        }
        s.finish(collect(&mut out));
        out
    }

    fn read(input: &[u8]) -> Vec<Rec> {
        read_chunks(b',', &[input])
    }

    fn rec(row: u64, offset: u64, fields: &[&str]) -> Rec {
        (row, offset, fields.iter().map(|s| s.to_string()).collect())
    }

    /// Same records for every split point and every chunk size.
    fn assert_chunking_invariant(delimiter: u8, input: &[u8], want: &[Rec]) {
        assert_eq!(read_chunks(delimiter, &[input]), want, "whole input");
        for k in 0..=input.len() {
            assert_eq!(
                read_chunks(delimiter, &[&input[..k], &input[k..]]),
                want,
                "split at {k}"
            );
        }
        for size in 1..=input.len().max(1) {
            let chunks: Vec<&[u8]> = input.chunks(size).collect();
            assert_eq!(read_chunks(delimiter, &chunks), want, "chunk size {size}");
        }
    }

    #[test]
    fn plain_records_with_rows_and_offsets() {
        let input = b"id,amount\nA1,24.50\nA2,3\n";
        let want = vec![
            rec(1, 0, &["id", "amount"]),
            rec(2, 10, &["A1", "24.50"]),
            rec(3, 19, &["A2", "3"]),
        ];
        assert_chunking_invariant(b',', input, &want);
    }

    #[test]
    fn quoting_crlf_blank_lines_and_no_final_newline() {
        let input = b"id,note,amount\r\n\r\n\"A,1\",\"said \"\"hi\"\"\r\nover two lines\",24.50\r\n\n\nA2,,\"\"\r\nA3,x,1";
        let want = vec![
            rec(1, 0, &["id", "note", "amount"]),
            rec(2, 18, &["A,1", "said \"hi\"\r\nover two lines", "24.50"]),
            rec(3, 63, &["A2", "", ""]),
            rec(4, 71, &["A3", "x", "1"]),
        ];
        assert_eq!(&input[18..23], b"\"A,1\"");
        assert_eq!(&input[63..65], b"A2");
        assert_eq!(&input[71..73], b"A3");
        assert_chunking_invariant(b',', input, &want);
    }

    #[test]
    fn other_delimiters() {
        let input = b"a;b;c\n1;\"2;3\";4\n";
        let want = vec![rec(1, 0, &["a", "b", "c"]), rec(2, 6, &["1", "2;3", "4"])];
        assert_chunking_invariant(b';', input, &want);
        assert_eq!(
            read_chunks(b'\t', &[b"a\tb,c\n"]),
            vec![rec(1, 0, &["a", "b,c"])]
        );
        assert_eq!(
            read_chunks(b',', &[b"a\tb,c\n"]),
            vec![rec(1, 0, &["a\tb", "c"])]
        );
    }

    #[test]
    fn blank_input_and_leading_blank_lines() {
        assert!(read(b"").is_empty());
        assert!(read(b"\n\r\n\n").is_empty());
        assert_chunking_invariant(b',', b"\n\nA,B\n", &[rec(1, 2, &["A", "B"])]);
        // A whitespace-only or quoted-empty line is a record, not a blank line.
        assert_eq!(
            read(b"a\n \n\"\"\n"),
            vec![rec(1, 0, &["a"]), rec(2, 2, &[" "]), rec(3, 4, &[""])]
        );
    }

    #[test]
    fn long_records_grow_the_buffers() {
        let big = "x".repeat(3 * INITIAL_FIELD_BYTES);
        let many = vec!["f"; 3 * INITIAL_FIELDS].join(",");
        let input = format!("{big},\"{big}\"\n{many}\nend\n");
        let out = read(input.as_bytes());
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].2, vec![big.clone(), big.clone()]);
        assert_eq!(out[1].2.len(), 3 * INITIAL_FIELDS);
        assert_eq!(out[2], rec(3, (input.len() - 4) as u64, &["end"]));
        let chunks: Vec<&[u8]> = input.as_bytes().chunks(1000).collect();
        assert_eq!(read_chunks(b',', &chunks), out);
    }

    #[test]
    fn fields_as_text_and_errors() {
        let mut s = CsvStream::default();
        let mut seen = 0;
        s.push(b"a,caf\xc3\xa9,bad\xff\n", |r| {
            seen += 1;
            assert_eq!(r.len(), 3);
            assert!(!r.is_empty());
            assert_eq!(r.str(0), Ok("a"));
            assert_eq!(r.str(1), Ok("café"));
            let e = r.str(2).unwrap_err();
            assert!(
                e.reason.contains("field 3 is not valid UTF-8 (at byte 3)"),
                "{e}"
            );
            assert_eq!(
                r.str(3).unwrap_err().reason,
                "record has 3 fields, wanted field 4"
            );
            assert_eq!(r.get(3), None);
        });
        assert_eq!(seen, 1);
    }

    #[test]
    fn rejects_carry_row_offset_and_excerpt() {
        let mut s = CsvStream::new(b';');
        let mut rejects = Vec::new();
        s.push(b"h1;h2\nA1;\"x;y\"\r\n", |r| {
            if r.row() == 2 {
                let err = r
                    .str(1)
                    .map(|_| FieldError::reason("not a number"))
                    .unwrap()
                    .on("amount");
                rejects.push(r.reject(&err));
            }
        });
        s.finish(|_| panic!("nothing left"));
        assert_eq!(rejects.len(), 1);
        let r = &rejects[0];
        assert_eq!(r.row, Some(2));
        assert_eq!(r.byte_offset, Some(6));
        assert_eq!(r.field.as_deref(), Some("amount"));
        assert_eq!(r.reason, "not a number");
        assert_eq!(r.raw, "A1;x;y");
    }

    #[test]
    fn finish_resets_for_a_new_input() {
        let mut s = CsvStream::default();
        let mut out = Vec::new();
        s.push(b"a,b\nc", collect(&mut out));
        s.finish(collect(&mut out));
        assert_eq!(s.rows_seen(), 0);
        s.push(b"d\n", collect(&mut out));
        s.finish(collect(&mut out));
        assert_eq!(
            out,
            vec![rec(1, 0, &["a", "b"]), rec(2, 4, &["c"]), rec(1, 0, &["d"])]
        );
    }

    #[test]
    fn header_maps_names_to_indexes() {
        let mut headers = Vec::new();
        let mut s = CsvStream::default();
        s.push(b"\xef\xbb\xbfid , Amount,currency\n", |r| {
            headers.push(Header::from_record(r).unwrap())
        });
        let h = &headers[0];
        assert_eq!(h.names(), ["id", "Amount", "currency"]);
        assert_eq!(h.index("id"), Some(0));
        assert_eq!(h.index("amount"), None);
        assert_eq!(h.require("currency"), Ok(2));
        let e = h.require("date").unwrap_err();
        assert_eq!(
            e.reason,
            "missing column \"date\" (columns present: \"id\", \"Amount\", \"currency\")"
        );
    }

    #[test]
    fn header_bom_is_stripped_whatever_the_chunking() {
        let input = b"\xef\xbb\xbfid,amount\n1,2\n";
        for size in 1..=input.len() {
            let mut s = CsvStream::default();
            let mut got = Vec::new();
            for c in input.chunks(size) {
                s.push(c, |r| {
                    if r.row() == 1 {
                        got.push(Header::from_record(r).unwrap().names().to_vec());
                    } else {
                        assert_eq!(r.byte_offset(), 13, "chunk size {size}");
                    }
                });
            }
            assert_eq!(
                got,
                vec![vec!["id".to_string(), "amount".to_string()]],
                "chunk size {size}"
            );
        }
    }

    #[test]
    fn header_refuses_invalid_utf8() {
        let mut s = CsvStream::default();
        let mut err = None;
        s.push(b"id,\xff\n", |r| err = Header::from_record(r).err());
        assert!(
            err.unwrap()
                .reason
                .starts_with("header: field 2 is not valid UTF-8")
        );
    }

    #[test]
    fn many_rows_are_counted_and_offset_exactly() {
        let line = b"A000001,24.50,GBP,2024-03-09 18:42:10\n";
        let n = 20_000;
        let input = line.repeat(n);
        let mut s = CsvStream::default();
        let (mut count, mut last) = (0u64, (0, 0));
        for c in input.chunks(4093) {
            s.push(c, |r| {
                count += 1;
                assert_eq!(r.len(), 4);
                last = (r.row(), r.byte_offset());
            });
        }
        s.finish(|_| count += 1);
        assert_eq!(count, n as u64);
        assert_eq!(last, (n as u64, ((n - 1) * line.len()) as u64));
    }
}
