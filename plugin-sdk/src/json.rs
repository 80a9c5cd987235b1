//! JSON message input: either one JSON array of messages (buffered until
//! `finish`, capped by `max_bytes`) or newline-delimited JSON, one message
//! per line, parsed as it streams in. The first non-blank byte decides
//! (`[` → array). Each message reaches the caller with its 1-based record
//! number, its byte offset (NDJSON only) and its raw text for rejects; a
//! message that is not valid JSON arrives as an error to reject, and only a
//! broken array fails the whole input.
//!
//! Used by the JSON feed plugins (Amex, Mastercard auth, Stonegate, Costa):
//! one reader, so the layout rules cannot drift apart between them.

use std::borrow::Cow;

use crate::{Batch, FieldError, Line, LineSplitter, PluginError, Transaction};
use serde::Deserializer as _;
use serde::de::{SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Largest JSON-array document buffered by default (NDJSON is not buffered).
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

pub fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

/// One message of the input.
pub struct Message<'a> {
    /// 1-based record number (blank NDJSON lines are not counted).
    pub record: u64,
    /// Byte offset of the message's line (NDJSON only).
    pub offset: Option<u64>,
    /// The message as written (NDJSON) or re-serialised (array), for rejects.
    pub raw: &'a [u8],
    pub value: Result<Value, FieldError>,
}

impl Message<'_> {
    /// Accept what `convert` makes of the message (`Ok(None)` drops it
    /// silently), or reject it with its record number, offset and excerpt.
    pub fn deliver(
        self,
        out: &mut Batch,
        convert: impl FnOnce(&Value) -> Result<Option<Transaction>, FieldError>,
    ) -> bool {
        let result = self.value.and_then(|v| convert(&v));
        match result {
            Ok(Some(tx)) => {
                out.accept(self.record, tx);
                true
            }
            Ok(None) => false,
            Err(e) => {
                out.reject(e.reject_at(Some(self.record), self.offset, self.raw));
                true
            }
        }
    }
}

enum Layout {
    /// Only whitespace seen so far; kept so offsets stay right.
    Undecided(Vec<u8>),
    Lines {
        lines: LineSplitter,
        records: u64,
    },
    Array(Vec<u8>),
}

/// Splits the input into JSON messages.
pub struct JsonMessages {
    layout: Layout,
    max_bytes: u64,
}

/// A parser fed by a [`JsonMessages`] it owns: `push_json` / `finish_json`
/// hand every message to the parser itself, so the plugin's `Parser::push`
/// and `finish` are one line each.
pub trait JsonFeed {
    /// The parser's reader.
    fn input(&mut self) -> &mut JsonMessages;
    /// Turn one message into a transaction or a reject (or nothing).
    fn message(&self, message: Message<'_>, out: &mut Batch);

    fn push_json(&mut self, chunk: &[u8], out: &mut Batch) -> Result<(), PluginError>
    where
        Self: Sized,
    {
        // The reader is taken out for the call so the closure can borrow the
        // parser; it is always put back, also on error.
        let mut input = std::mem::replace(self.input(), JsonMessages::new(0));
        let result = input.push(chunk, |m| self.message(m, out));
        *self.input() = input;
        result
    }

    fn finish_json(&mut self, out: &mut Batch) -> Result<(), PluginError>
    where
        Self: Sized,
    {
        let mut input = std::mem::replace(self.input(), JsonMessages::new(0));
        let result = input.finish(|m| self.message(m, out));
        *self.input() = input;
        result
    }
}

impl JsonMessages {
    pub fn new(max_bytes: u64) -> Self {
        JsonMessages {
            layout: Layout::Undecided(Vec::new()),
            max_bytes,
        }
    }

    /// Feed a chunk; `each` gets every message completed by it.
    pub fn push(
        &mut self,
        chunk: &[u8],
        mut each: impl FnMut(Message<'_>),
    ) -> Result<(), PluginError> {
        let pending: Vec<u8>;
        let chunk: &[u8] = match &mut self.layout {
            Layout::Undecided(seen) => match chunk.iter().find(|b| !b.is_ascii_whitespace()) {
                None => {
                    seen.extend_from_slice(chunk);
                    return Ok(());
                }
                Some(first) => {
                    let mut all = std::mem::take(seen);
                    all.extend_from_slice(chunk);
                    self.layout = if *first == b'[' {
                        Layout::Array(Vec::new())
                    } else {
                        Layout::Lines {
                            lines: LineSplitter::new(),
                            records: 0,
                        }
                    };
                    pending = all;
                    &pending
                }
            },
            _ => chunk,
        };
        match &mut self.layout {
            Layout::Undecided(_) => {}
            Layout::Lines { lines, records } => {
                lines.push(chunk, |line| line_message(line, records, &mut each))
            }
            Layout::Array(buf) => {
                if (buf.len() + chunk.len()) as u64 > self.max_bytes {
                    return Err(PluginError::malformed(format!(
                        "JSON array larger than max_bytes ({} bytes)",
                        self.max_bytes
                    )));
                }
                buf.extend_from_slice(chunk);
            }
        }
        Ok(())
    }

    /// End of input: `each` gets the remaining messages.
    pub fn finish(&mut self, mut each: impl FnMut(Message<'_>)) -> Result<(), PluginError> {
        match std::mem::replace(&mut self.layout, Layout::Undecided(Vec::new())) {
            Layout::Undecided(_) => Ok(()),
            Layout::Lines {
                mut lines,
                mut records,
            } => {
                lines.finish(|line| line_message(line, &mut records, &mut each));
                Ok(())
            }
            Layout::Array(buf) => {
                let mut de = serde_json::Deserializer::from_slice(&buf);
                de.deserialize_seq(EachMessage { each: &mut each })
                    .and_then(|()| de.end())
                    .map_err(|e| PluginError::malformed(format!("JSON array: {e}")))
            }
        }
    }
}

fn line_message(line: Line<'_>, records: &mut u64, each: &mut impl FnMut(Message<'_>)) {
    let value = match line.text() {
        Ok(text) if text.trim().is_empty() => return,
        Ok(text) => {
            serde_json::from_str(text).map_err(|e| FieldError::reason(format!("invalid JSON: {e}")))
        }
        Err(_) => Err(FieldError::reason("invalid UTF-8")),
    };
    *records += 1;
    each(Message {
        record: *records,
        offset: Some(line.offset),
        raw: line.bytes,
        value,
    });
}

/// Walks a JSON array one message at a time: memory holds the document and
/// one message tree, never a tree of the whole array.
struct EachMessage<'a, F> {
    each: &'a mut F,
}

impl<'de, F: FnMut(Message<'_>)> Visitor<'de> for EachMessage<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut record = 0;
        while let Some(value) = seq.next_element::<Value>()? {
            record += 1;
            let raw = value.to_string();
            (self.each)(Message {
                record,
                offset: None,
                raw: raw.as_bytes(),
                value: Ok(value),
            });
        }
        Ok(())
    }
}

/// The message as an object, or an error to reject it with.
pub fn object(value: &Value) -> Result<&Map<String, Value>, FieldError> {
    value
        .as_object()
        .ok_or_else(|| FieldError::reason("message is not a JSON object"))
}

/// A string as is; a number as the text serde_json keeps for it (integers
/// exactly, decimals as their shortest round-trip form: `24.5` → `"24.5"`),
/// so amounts never go through float arithmetic. `None` for other types.
pub fn text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// Key `key` as text: missing, `null` or not a string / number is an error
/// on that key.
pub fn required<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Cow<'a, str>, FieldError> {
    match m.get(key) {
        None => Err(FieldError::new(key, "missing required key")),
        Some(Value::Null) => Err(FieldError::new(key, "required key is null")),
        Some(v) => text(v).ok_or_else(|| FieldError::new(key, "not a string or number")),
    }
}

/// Like [`required`], and the value must not be empty (ids: an empty one
/// would collide with every other on dedupe).
pub fn required_non_empty<'a>(
    m: &'a Map<String, Value>,
    key: &str,
) -> Result<Cow<'a, str>, FieldError> {
    let v = required(m, key)?;
    if v.trim().is_empty() {
        return Err(FieldError::new(key, "empty value"));
    }
    Ok(v)
}

/// Optional key: absent and `null` are `None`; another non-text type is an
/// error on that key.
pub fn optional<'a>(
    m: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<Cow<'a, str>>, FieldError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => text(v)
            .map(Some)
            .ok_or_else(|| FieldError::new(key, "not a string or number")),
    }
}
