//! Write accord plugins — parsers, matchers, routers — as plain Rust types.
//!
//! accord runs every merchant-, PSP- and scheme-specific piece of logic as a
//! sandboxed WebAssembly component behind the WIT contract in `wit/`. This
//! crate is the only place that contract is bound on the guest side: a plugin
//! author implements one trait ([`Parser`], [`Matcher`] or [`Router`]) on a
//! plain type, calls one macro, and builds with
//! `cargo build --release --target wasm32-wasip2`. No wit-bindgen knowledge is
//! needed, and the same code is unit-testable natively with `cargo test`.
//!
//! # A complete parser
//!
//! A parser for a semicolon-separated file `id;amount;currency;date` with a
//! header row, that rejects rows it cannot read and keeps going:
//!
//! ```
//! use accord_plugin_sdk::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! pub struct Config {
//!     /// Zone for the naive dates in the file.
//!     #[serde(default = "london")]
//!     zone: String,
//! }
//! fn london() -> String { "Europe/London".into() }
//!
//! pub struct Semicolons {
//!     zone: String,
//!     lines: LineSplitter,
//! }
//!
//! impl Semicolons {
//!     fn line(&self, line: Line<'_>, out: &mut Batch) {
//!         if line.number == 1 || line.bytes.is_empty() {
//!             return; // header, blank line
//!         }
//!         match self.transaction(&line) {
//!             Ok(tx) => out.accept(line.number, tx),
//!             Err(e) => out.reject(e.reject(&line)),
//!         }
//!     }
//!
//!     fn transaction(&self, line: &Line<'_>) -> Result<Transaction, FieldError> {
//!         let f: Vec<&str> = line.text()?.split(';').collect();
//!         let [id, amount, currency, date] = f[..] else {
//!             return Err(FieldError::reason("expected 4 fields"));
//!         };
//!         let money = money::parse_major(amount, currency).map_err(|e| e.on("amount"))?;
//!         let at = time::parse_local(date, "%Y-%m-%d %H:%M:%S", &self.zone)
//!             .map_err(|e| e.on("date"))?;
//!         Ok(Transaction::new(id, Side::Merchant, Kind::Sale, money, at))
//!     }
//! }
//!
//! impl Parser for Semicolons {
//!     type Config = Config;
//!     fn open(config: Config) -> Result<Self, PluginError> {
//!         time::zone(&config.zone).map_err(PluginError::invalid_config)?;
//!         Ok(Semicolons { zone: config.zone, lines: LineSplitter::new() })
//!     }
//!     fn push(&mut self, chunk: &[u8], out: &mut Batch) -> Result<(), PluginError> {
//!         let mut lines = std::mem::take(&mut self.lines);
//!         lines.push(chunk, |line| self.line(line, out));
//!         self.lines = lines;
//!         Ok(())
//!     }
//!     fn finish(&mut self, out: &mut Batch) -> Result<(), PluginError> {
//!         let mut lines = std::mem::take(&mut self.lines);
//!         lines.finish(|line| self.line(line, out));
//!         Ok(())
//!     }
//! }
//!
//! // In the plugin crate (crate-type = ["cdylib", "rlib"]):
//! // accord_plugin_sdk::export_parser!(Semicolons);
//!
//! // Natively testable, no wasm runtime:
//! let batch = accord_plugin_sdk::testing::run_parser::<Semicolons>(
//!     r#"{"zone": "Europe/London"}"#,
//!     b"id;amount;currency;date\nA1;24.50;GBP;2024-03-09 18:42:10\nA2;x;GBP;2024-03-09 18:43:00\n",
//!     7, // chunk size: lines straddle chunk borders
//! ).unwrap();
//! assert_eq!(batch.transactions.len(), 1);
//! assert_eq!(batch.transactions[0].row, Some(2));
//! assert_eq!(batch.transactions[0].transaction.amount.minor_units, 2450);
//! assert_eq!(batch.rejects[0].row, Some(3));
//! assert_eq!(batch.rejects[0].field.as_deref(), Some("amount"));
//! ```
//!
//! Then `accord plugin check target/wasm32-wasip2/release/my_plugin.wasm`
//! verifies the component, and dropping it with its manifest into the daemon's
//! plugins directory activates it (see the repository README).
//!
//! # What the sandbox allows
//!
//! Plugins are pure functions of their input and config. The host grants no
//! filesystem, network, environment or clock; a component that imports them is
//! refused at load, naming the import. Logging goes through [`log`]. A panic
//! fails only the call that hit it; its message reaches the host's log.

// Lets the `export_*!` macros and the generated bindings name this crate as
// `::accord_plugin_sdk` from inside it too.
extern crate self as accord_plugin_sdk;

pub mod country;
pub mod csv;
pub mod fixed;
pub mod iban;
pub mod json;
pub mod lines;
pub mod log;
pub mod money;
pub mod testing;
pub mod time;

mod error;
mod transaction;
pub use transaction::non_empty;

pub use error::FieldError;
pub use lines::{Line, LineSplitter};

/// The version of the WIT contract this SDK implements. The export macros
/// write it into a custom section so the host can read it before instantiating.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// The generated bindings; plugin authors never name these.
#[doc(hidden)]
pub mod bindings {
    pub mod parser {
        wit_bindgen::generate!({
            path: "../wit/v0.1.0",
            world: "accord:plugins/parser-plugin@0.1.0",
            pub_export_macro: true,
            export_macro_name: "export_parser_world",
            default_bindings_module: "::accord_plugin_sdk::bindings::parser",
            runtime_path: "::accord_plugin_sdk::__private::wit_bindgen::rt",
            additional_derives: [PartialEq],
            generate_all,
        });
    }
    pub mod matcher {
        wit_bindgen::generate!({
            path: "../wit/v0.1.0",
            world: "accord:plugins/matcher-plugin@0.1.0",
            pub_export_macro: true,
            export_macro_name: "export_matcher_world",
            default_bindings_module: "::accord_plugin_sdk::bindings::matcher",
            runtime_path: "::accord_plugin_sdk::__private::wit_bindgen::rt",
            additional_derives: [PartialEq],
            with: {
                "accord:types/types@0.1.0": crate::bindings::parser::accord::types::types,
                "accord:host/log@0.1.0": crate::bindings::parser::accord::host::log,
            },
        });
    }
    pub mod router {
        wit_bindgen::generate!({
            path: "../wit/v0.1.0",
            world: "accord:plugins/router-plugin@0.1.0",
            pub_export_macro: true,
            export_macro_name: "export_router_world",
            default_bindings_module: "::accord_plugin_sdk::bindings::router",
            runtime_path: "::accord_plugin_sdk::__private::wit_bindgen::rt",
            additional_derives: [PartialEq],
            with: {
                "accord:types/types@0.1.0": crate::bindings::parser::accord::types::types,
                "accord:host/log@0.1.0": crate::bindings::parser::accord::host::log,
            },
        });
    }
}

pub use bindings::matcher::exports::accord::matcher::matcher::{Cardholder, Decision, Group};
pub use bindings::parser::accord::types::types::{
    ErrorCode, IdentifierKind, Kind, MerchantIdentifier, Money, PluginError, Reject, Side,
    Timestamp, Transaction,
};
pub use bindings::parser::exports::accord::parser::parser::{Batch, Parsed};
pub use bindings::router::exports::accord::router::router::{Item, MatchKind, Matched, Route};

/// Everything a plugin usually needs, in one `use`.
pub mod prelude {
    pub use crate::{
        Batch, Cardholder, Decision, ErrorCode, FieldError, Group, IdentifierKind, Item, Kind,
        Line, LineSplitter, MatchKind, Matched, Matcher, MerchantIdentifier, Money, Parsed, Parser,
        PluginError, Reject, Route, Router, Side, Timestamp, Transaction, country, csv, fixed,
        iban, log, money, non_empty, time,
    };
}

/// A streaming parser: one value per import, fed the input chunk by chunk.
///
/// `push` and `finish` append what they completed to `out`; rows that cannot
/// be read become [`Reject`]s and parsing goes on. Return an error only when
/// the input as a whole is unusable (the host then fails the import).
pub trait Parser: Sized + 'static {
    /// The source's parser config, deserialised from JSON.
    type Config: serde::de::DeserializeOwned;
    fn open(config: Self::Config) -> Result<Self, PluginError>;
    fn push(&mut self, chunk: &[u8], out: &mut Batch) -> Result<(), PluginError>;
    fn finish(&mut self, out: &mut Batch) -> Result<(), PluginError>;
}

/// A matcher: for each group (one payment, its candidate merchant-side
/// transactions, and what is known of the cardholder), choose one candidate
/// by index, or none.
pub trait Matcher: Sized + 'static {
    /// The merchant's matcher config, deserialised from JSON.
    type Config: serde::de::DeserializeOwned;
    fn open(config: Self::Config) -> Result<Self, PluginError>;
    fn decide(&mut self, group: &Group) -> Decision;
}

/// A router: for each transaction or match, zero or more routes.
pub trait Router: Sized + 'static {
    /// The router's config, deserialised from JSON.
    type Config: serde::de::DeserializeOwned;
    fn open(config: Self::Config) -> Result<Self, PluginError>;
    fn route(&mut self, item: &Item) -> Result<Vec<Route>, PluginError>;
}

impl PluginError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        PluginError {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_config(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidConfig, message.to_string())
    }
    pub fn malformed(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::MalformedInput, message.to_string())
    }
    pub fn unsupported(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Unsupported, message.to_string())
    }
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Internal, message.to_string())
    }
}

impl Batch {
    pub fn new() -> Self {
        Batch {
            transactions: Vec::new(),
            rejects: Vec::new(),
        }
    }
    /// Add a transaction read from input row `row` (1-based; use the record
    /// number for formats without rows).
    pub fn accept(&mut self, row: u64, transaction: Transaction) {
        self.transactions.push(Parsed {
            row: Some(row),
            transaction,
        });
    }
    pub fn reject(&mut self, reject: Reject) {
        self.rejects.push(reject);
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Decision {
    /// Choose candidate `index`.
    pub fn chosen(index: usize, reason: impl Into<String>, confidence: u8) -> Self {
        Decision {
            chosen: Some(index as u32),
            reason: reason.into(),
            confidence: confidence.min(100),
        }
    }
    /// No candidate is the purchase.
    pub fn none(reason: impl Into<String>) -> Self {
        Decision {
            chosen: None,
            reason: reason.into(),
            confidence: 0,
        }
    }
}

/// Parse a plugin's JSON config into its typed form.
pub fn parse_config<C: serde::de::DeserializeOwned>(config: &str) -> Result<C, PluginError> {
    let text = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    serde_json::from_str(text).map_err(|e| PluginError::invalid_config(format!("config: {e}")))
}

/// Glue between the plugin traits and the generated bindings. Public only so
/// the export macros can reach it.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use crate::bindings::matcher::exports::accord::matcher::matcher as m;
    use crate::bindings::parser::exports::accord::parser::parser as p;
    use crate::bindings::router::exports::accord::router::router as r;
    use crate::{Batch, Decision, Group, Item, PluginError, Route, parse_config};
    use std::cell::RefCell;
    use std::marker::PhantomData;

    pub struct ParserExport<T>(PhantomData<T>);
    pub struct ParserSession<T>(RefCell<T>);

    impl<T: crate::Parser> p::Guest for ParserExport<T> {
        type Session = ParserSession<T>;
    }

    impl<T: crate::Parser> p::GuestSession for ParserSession<T> {
        fn open(config: String) -> Result<p::Session, PluginError> {
            let parser = T::open(parse_config(&config)?)?;
            Ok(p::Session::new(ParserSession(RefCell::new(parser))))
        }
        fn push(&self, chunk: Vec<u8>) -> Result<Batch, PluginError> {
            let mut out = Batch::new();
            self.0.borrow_mut().push(&chunk, &mut out)?;
            Ok(out)
        }
        fn finish(&self) -> Result<Batch, PluginError> {
            let mut out = Batch::new();
            self.0.borrow_mut().finish(&mut out)?;
            Ok(out)
        }
    }

    pub struct MatcherExport<T>(PhantomData<T>);
    pub struct MatcherSession<T>(RefCell<T>);

    impl<T: crate::Matcher> m::Guest for MatcherExport<T> {
        type Session = MatcherSession<T>;
    }

    impl<T: crate::Matcher> m::GuestSession for MatcherSession<T> {
        fn open(config: String) -> Result<m::Session, PluginError> {
            let matcher = T::open(parse_config(&config)?)?;
            Ok(m::Session::new(MatcherSession(RefCell::new(matcher))))
        }
        fn decide(&self, groups: Vec<Group>) -> Result<Vec<Decision>, PluginError> {
            let mut matcher = self.0.borrow_mut();
            Ok(groups.iter().map(|g| matcher.decide(g)).collect())
        }
    }

    pub struct RouterExport<T>(PhantomData<T>);
    pub struct RouterSession<T>(RefCell<T>);

    impl<T: crate::Router> r::Guest for RouterExport<T> {
        type Session = RouterSession<T>;
    }

    impl<T: crate::Router> r::GuestSession for RouterSession<T> {
        fn open(config: String) -> Result<r::Session, PluginError> {
            let router = T::open(parse_config(&config)?)?;
            Ok(r::Session::new(RouterSession(RefCell::new(router))))
        }
        fn route(&self, items: Vec<Item>) -> Result<Vec<Vec<Route>>, PluginError> {
            let mut router = self.0.borrow_mut();
            items.iter().map(|i| router.route(i)).collect()
        }
    }

    /// Contents of the `accord-contract` custom section: kind and contract version.
    pub const fn contract_section<const N: usize>(text: &str) -> [u8; N] {
        let bytes = text.as_bytes();
        let mut out = [0u8; N];
        let mut i = 0;
        while i < N {
            out[i] = bytes[i];
            i += 1;
        }
        out
    }
}

/// Export a [`Parser`] implementation as this crate's component.
///
/// ```ignore
/// accord_plugin_sdk::export_parser!(MyParser);
/// ```
#[macro_export]
macro_rules! export_parser {
    ($ty:ty) => {
        #[doc(hidden)]
        type __AccordParserExport = $crate::__private::ParserExport<$ty>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::parser::export_parser_world!(__AccordParserExport);
        $crate::__accord_contract_section!("parser");
    };
}

/// Export a [`Matcher`] implementation as this crate's component.
#[macro_export]
macro_rules! export_matcher {
    ($ty:ty) => {
        #[doc(hidden)]
        type __AccordMatcherExport = $crate::__private::MatcherExport<$ty>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::matcher::export_matcher_world!(__AccordMatcherExport);
        $crate::__accord_contract_section!("matcher");
    };
}

/// Export a [`Router`] implementation as this crate's component.
#[macro_export]
macro_rules! export_router {
    ($ty:ty) => {
        #[doc(hidden)]
        type __AccordRouterExport = $crate::__private::RouterExport<$ty>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::router::export_router_world!(__AccordRouterExport);
        $crate::__accord_contract_section!("router");
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __accord_contract_section {
    ($kind:literal) => {
        // Read by the host before it instantiates anything: "<kind>@<version>".
        #[cfg(target_arch = "wasm32")]
        #[used]
        #[unsafe(link_section = "accord-contract")]
        static __ACCORD_CONTRACT: [u8; { concat!($kind, "@0.1.0").len() }] =
            $crate::__private::contract_section(concat!($kind, "@0.1.0"));
    };
}
