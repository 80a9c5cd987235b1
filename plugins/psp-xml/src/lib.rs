//! XML payment files from payment service providers (psp-routing.md): one
//! `<PaymentFile>` per delivery, one `<Payment>` per standard payment.
//!
//! XML is a whole-document format, so the input is buffered until `finish`
//! (at most `max_bytes`) and then read with quick-xml. A payment that cannot
//! be turned into a transaction is a [`Reject`] naming the element or
//! attribute at fault; only a document that is not well-formed XML (or not a
//! `PaymentFile`) fails the import. The format is described in README.md.

use accord_plugin_sdk::prelude::*;
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Largest document buffered before the import is refused.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_max_bytes() -> u64 {
    256 * 1024 * 1024
}

/// MoMo's `reference_id` column is 50 characters; longer ones cannot be routed.
const REFERENCE_ID_MAX: usize = 50;

pub struct PspXmlParser {
    max_bytes: u64,
    document: Vec<u8>,
}

/// What one `<Payment>` said, before validation.
#[derive(Default)]
struct Draft {
    id: Option<String>,
    psp: Option<String>,
    reference_id: Option<String>,
    account_id: Option<String>,
    amount: Option<String>,
    currency: Option<String>,
    received: Option<String>,
    payer_iban: Option<String>,
    beneficiary_iban: Option<String>,
}

/// The child element whose text is being collected.
#[derive(Clone, Copy)]
enum Text {
    ReferenceId,
    AccountId,
    Amount,
    Received,
}

impl Draft {
    fn slot(&mut self, text: Text) -> &mut Option<String> {
        match text {
            Text::ReferenceId => &mut self.reference_id,
            Text::AccountId => &mut self.account_id,
            Text::Amount => &mut self.amount,
            Text::Received => &mut self.received,
        }
    }

    fn transaction(self, file_psp: &str) -> Result<Transaction, FieldError> {
        let id = self
            .id
            .and_then(non_empty)
            .ok_or_else(|| FieldError::new("Payment/@id", "missing"))?;
        let psp = self
            .psp
            .and_then(non_empty)
            .unwrap_or_else(|| file_psp.to_string());
        if psp.is_empty() {
            return Err(FieldError::new(
                "Payment/@psp",
                "no psp on the payment or the PaymentFile",
            ));
        }
        let reference_id = self
            .reference_id
            .and_then(non_empty)
            .ok_or_else(|| FieldError::new("ReferenceId", "missing"))?;
        if reference_id.chars().count() > REFERENCE_ID_MAX {
            return Err(FieldError::new(
                "ReferenceId",
                format!("longer than {REFERENCE_ID_MAX} characters"),
            ));
        }
        let account_id = self
            .account_id
            .and_then(non_empty)
            .ok_or_else(|| FieldError::new("AccountId", "missing"))?;
        // SaaS instance ids are database ids: positive integers.
        if !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FieldError::new(
                "AccountId",
                format!("not a numeric instance id: {account_id:?}"),
            ));
        }
        let currency = self
            .currency
            .and_then(non_empty)
            .ok_or_else(|| FieldError::new("Amount/@currency", "missing"))?;
        let amount_text = self
            .amount
            .ok_or_else(|| FieldError::new("Amount", "missing"))?;
        let amount = money::parse_major(&amount_text, &currency).map_err(|e| e.on("Amount"))?;
        let received = self
            .received
            .ok_or_else(|| FieldError::new("Received", "missing"))?;
        let occurred_at =
            time::parse_instant(received.trim(), "UTC").map_err(|e| e.on("Received"))?;
        let payer = iban(self.payer_iban, "Payer/@iban")?;
        let beneficiary = iban(self.beneficiary_iban, "Beneficiary/@iban")?;

        let mut tx = Transaction::new(id, Side::Standalone, Kind::Transfer, amount, occurred_at);
        tx.provider = Some(psp);
        tx.account_id = Some(account_id);
        tx.reference_id = Some(reference_id);
        tx.payer_account = payer;
        tx.beneficiary_account = beneficiary;
        Ok(tx)
    }
}

fn iban(value: Option<String>, field: &str) -> Result<Option<String>, FieldError> {
    match value.and_then(non_empty) {
        None => Ok(None),
        Some(v) => iban::validate(&v).map(Some).map_err(|e| e.on(field)),
    }
}

fn malformed(reader: &Reader<&[u8]>, what: impl std::fmt::Display) -> PluginError {
    PluginError::malformed(format!("XML at byte {}: {what}", reader.error_position()))
}

/// The unescaped value of attribute `name`, if present.
fn attribute(
    reader: &Reader<&[u8]>,
    e: &BytesStart<'_>,
    name: &str,
) -> Result<Option<String>, PluginError> {
    match e.try_get_attribute(name) {
        Ok(None) => Ok(None),
        Ok(Some(a)) => a
            .unescape_value()
            .map(|v| Some(v.into_owned()))
            .map_err(|err| malformed(reader, err)),
        Err(err) => Err(malformed(reader, err)),
    }
}

impl PspXmlParser {
    fn parse(&self, out: &mut Batch) -> Result<(), PluginError> {
        let mut reader = Reader::from_reader(self.document.as_slice());
        reader.config_mut().check_end_names = true;

        let mut file_psp: Option<String> = None;
        let mut depth = 0usize;
        // The open `<Payment>`: its record number, start offset and contents.
        let mut payment: Option<(u64, u64, Draft)> = None;
        let mut collecting: Option<Text> = None;
        let mut records = 0u64;

        loop {
            let start = reader.buffer_position();
            let event = reader.read_event().map_err(|e| malformed(&reader, e))?;
            match event {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    let empty = matches!(event, Event::Empty(_));
                    let name = e.local_name();
                    match (depth, name.as_ref()) {
                        (0, b"PaymentFile") => {
                            file_psp = Some(attribute(&reader, e, "psp")?.unwrap_or_default());
                        }
                        (0, other) => {
                            return Err(malformed(
                                &reader,
                                format!(
                                    "root element is <{}>, expected <PaymentFile>",
                                    String::from_utf8_lossy(other)
                                ),
                            ));
                        }
                        (1, b"Payment") => {
                            records += 1;
                            let draft = Draft {
                                id: attribute(&reader, e, "id")?,
                                psp: attribute(&reader, e, "psp")?,
                                ..Draft::default()
                            };
                            payment = Some((records, start, draft));
                        }
                        (2, child) => {
                            if let Some((_, _, draft)) = payment.as_mut() {
                                collecting = match child {
                                    b"ReferenceId" => Some(Text::ReferenceId),
                                    b"AccountId" => Some(Text::AccountId),
                                    b"Amount" => {
                                        draft.currency = attribute(&reader, e, "currency")?;
                                        Some(Text::Amount)
                                    }
                                    b"Received" => Some(Text::Received),
                                    b"Payer" => {
                                        draft.payer_iban = attribute(&reader, e, "iban")?;
                                        None
                                    }
                                    b"Beneficiary" => {
                                        draft.beneficiary_iban = attribute(&reader, e, "iban")?;
                                        None
                                    }
                                    // Unknown children are ignored so PSPs can add data.
                                    _ => None,
                                };
                                if empty {
                                    // `<ReferenceId/>` has no text to collect.
                                    collecting = None;
                                }
                            }
                        }
                        _ => {}
                    }
                    if !empty {
                        depth += 1;
                    } else if depth == 1 && name.as_ref() == b"Payment" {
                        // `<Payment/>` is a payment with nothing in it.
                        self.finish_payment(
                            payment.take(),
                            reader.buffer_position(),
                            file_psp.as_deref(),
                            out,
                        );
                    }
                }
                Event::End(ref e) => {
                    depth = depth.saturating_sub(1);
                    match depth {
                        2 => collecting = None,
                        1 if e.local_name().as_ref() == b"Payment" => {
                            self.finish_payment(
                                payment.take(),
                                reader.buffer_position(),
                                file_psp.as_deref(),
                                out,
                            );
                        }
                        _ => {}
                    }
                }
                Event::Text(ref t) => {
                    if let (Some(text), Some((_, _, draft))) = (collecting, payment.as_mut()) {
                        let s = t.xml_content().map_err(|e| malformed(&reader, e))?;
                        draft
                            .slot(text)
                            .get_or_insert_with(String::new)
                            .push_str(&s);
                    }
                }
                Event::CData(ref t) => {
                    if let (Some(text), Some((_, _, draft))) = (collecting, payment.as_mut()) {
                        let s = t.xml_content().map_err(|e| malformed(&reader, e))?;
                        draft
                            .slot(text)
                            .get_or_insert_with(String::new)
                            .push_str(&s);
                    }
                }
                Event::GeneralRef(ref r) => {
                    if let (Some(text), Some((_, _, draft))) = (collecting, payment.as_mut()) {
                        let resolved =
                            match r.resolve_char_ref().map_err(|e| malformed(&reader, e))? {
                                Some(c) => c.to_string(),
                                None => {
                                    let name = r.decode().map_err(|e| malformed(&reader, e))?;
                                    quick_xml::escape::resolve_predefined_entity(&name)
                                        .ok_or_else(|| {
                                            malformed(&reader, format!("unknown entity &{name};"))
                                        })?
                                        .to_string()
                                }
                            };
                        draft
                            .slot(text)
                            .get_or_insert_with(String::new)
                            .push_str(&resolved);
                    }
                }
                Event::Eof => {
                    if file_psp.is_none() {
                        return Err(malformed(&reader, "no <PaymentFile> element"));
                    }
                    if depth > 0 {
                        return Err(malformed(&reader, "document ends inside an open element"));
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
    }

    fn finish_payment(
        &self,
        payment: Option<(u64, u64, Draft)>,
        end: u64,
        file_psp: Option<&str>,
        out: &mut Batch,
    ) {
        let Some((record, start, draft)) = payment else {
            return;
        };
        match draft.transaction(file_psp.unwrap_or_default()) {
            Ok(tx) => out.accept(record, tx),
            Err(e) => {
                let raw = self
                    .document
                    .get(start as usize..end as usize)
                    .unwrap_or_default();
                out.reject(e.reject_at(Some(record), Some(start), raw.trim_ascii()));
            }
        }
    }
}

impl Parser for PspXmlParser {
    type Config = Config;

    fn open(config: Config) -> Result<Self, PluginError> {
        if config.max_bytes == 0 {
            return Err(PluginError::invalid_config("max_bytes must be positive"));
        }
        Ok(PspXmlParser {
            max_bytes: config.max_bytes,
            document: Vec::new(),
        })
    }

    fn push(&mut self, chunk: &[u8], _out: &mut Batch) -> Result<(), PluginError> {
        if (self.document.len() + chunk.len()) as u64 > self.max_bytes {
            return Err(PluginError::malformed(format!(
                "document larger than max_bytes ({} bytes)",
                self.max_bytes
            )));
        }
        self.document.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(&mut self, out: &mut Batch) -> Result<(), PluginError> {
        let result = self.parse(out);
        self.document = Vec::new();
        result
    }
}

accord_plugin_sdk::export_parser!(PspXmlParser);

#[cfg(test)]
mod tests {
    use super::*;
    use accord_plugin_sdk::testing::run_parser;

    const SEED: &[u8] = include_bytes!("../fixtures/seed-payments.xml");
    const CHUNKS: [usize; 4] = [1, 7, 200, 64 * 1024];

    #[test]
    fn seed_payments() {
        for chunk in CHUNKS {
            let batch = run_parser::<PspXmlParser>("{}", SEED, chunk).unwrap();
            assert_eq!(batch.transactions.len(), 4, "chunk {chunk}");

            let p = &batch.transactions[0];
            assert_eq!(p.row, Some(1));
            let tx = &p.transaction;
            assert_eq!(tx.external_id, "GWB-2018-0001");
            assert_eq!(tx.side, Side::Standalone);
            assert_eq!(tx.kind, Kind::Transfer);
            assert_eq!(tx.provider.as_deref(), Some("Gringotts Wizarding Bank"));
            assert_eq!(tx.reference_id.as_deref(), Some("mister_blond"));
            assert_eq!(tx.account_id.as_deref(), Some("1"));
            assert_eq!(tx.amount, Money::new(4200, "EUR"));
            assert_eq!(tx.occurred_at, Timestamp::new(1_532_898_275, 0, 0));
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2018-07-29T21:04:35+00:00"
            );
            assert_eq!(tx.payer_account.as_deref(), Some("DE89370400440532013000"));
            assert_eq!(
                tx.beneficiary_account.as_deref(),
                Some("GB82WEST12345698765432")
            );

            let tx = &batch.transactions[1].transaction;
            assert_eq!(tx.external_id, "IBB-77-0002");
            assert_eq!(
                tx.provider.as_deref(),
                Some("Iron Bank of Bravos"),
                "per-payment psp wins"
            );
            assert_eq!(tx.reference_id.as_deref(), Some("mister_white"));
            assert_eq!(tx.amount, Money::new(100, "EUR"));
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2018-07-29T21:04:51+00:00"
            );
            assert_eq!(tx.payer_account, None);

            let tx = &batch.transactions[2].transaction;
            assert_eq!(tx.reference_id.as_deref(), Some("mister_pink"));
            assert_eq!(tx.account_id.as_deref(), Some("2"));
            assert_eq!(tx.amount, Money::new(100_000_000, "EUR"));
            // Printed with spaces and lower case; stored in electronic form.
            assert_eq!(tx.payer_account.as_deref(), Some("DE89370400440532013000"));

            let tx = &batch.transactions[3].transaction;
            assert_eq!(tx.reference_id.as_deref(), Some("mister_orange & co"));
            assert_eq!(tx.amount, Money::new(0, "EUR"));
            // An offset in the file is kept.
            assert_eq!(
                time::format_iso(&tx.occurred_at),
                "2018-07-29T23:04:51+02:00"
            );

            assert_eq!(batch.rejects.len(), 2);
            let r = &batch.rejects[0];
            assert_eq!(r.row, Some(5));
            assert_eq!(r.field.as_deref(), Some("Beneficiary/@iban"));
            assert!(
                r.raw.starts_with("<Payment id=\"GWB-2018-0005\""),
                "{}",
                r.raw
            );
            let offset = r.byte_offset.unwrap() as usize;
            assert!(SEED[offset..].starts_with(b"<Payment id=\"GWB-2018-0005\""));
            let r = &batch.rejects[1];
            assert_eq!(r.row, Some(6));
            assert_eq!(r.field.as_deref(), Some("ReferenceId"));
            assert_eq!(r.reason, "missing");
        }
    }

    #[test]
    fn float_looking_amount_with_too_many_decimals_is_rejected() {
        let xml = br#"<PaymentFile psp="P"><Payment id="1"><ReferenceId>r</ReferenceId><AccountId>1</AccountId>
            <Amount currency="EUR">0.001</Amount><Received>2018-07-29T21:04:35Z</Received></Payment></PaymentFile>"#;
        let batch = run_parser::<PspXmlParser>("{}", xml, 16).unwrap();
        assert_eq!(batch.rejects[0].field.as_deref(), Some("Amount"));
    }

    #[test]
    fn malformed_xml_fails_with_a_position() {
        let xml = b"<PaymentFile psp=\"P\"><Payment id=\"1\"></Paymnt></PaymentFile>";
        let err = run_parser::<PspXmlParser>("{}", xml, 8).err().unwrap();
        assert_eq!(err.code, ErrorCode::MalformedInput);
        assert!(err.message.starts_with("XML at byte "), "{}", err.message);

        let err = run_parser::<PspXmlParser>("{}", b"<PaymentFile psp=\"P\"><Payment>", 8)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::MalformedInput);

        let err = run_parser::<PspXmlParser>("{}", b"<Payments/>", 8)
            .err()
            .unwrap();
        assert!(
            err.message.contains("expected <PaymentFile>"),
            "{}",
            err.message
        );

        let err = run_parser::<PspXmlParser>("{}", b"", 8).err().unwrap();
        assert_eq!(err.code, ErrorCode::MalformedInput);
    }

    #[test]
    fn document_over_max_bytes_is_refused() {
        let err = run_parser::<PspXmlParser>(r#"{"max_bytes": 100}"#, SEED, 64)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::MalformedInput);
        assert!(err.message.contains("max_bytes"));
    }

    #[test]
    fn unknown_config_key_is_invalid_config() {
        let err = run_parser::<PspXmlParser>(r#"{"max_byte": 100}"#, SEED, 64)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::InvalidConfig);
    }
}
