//! accord: a payment-operations daemon.
//!
//! Data arrives by directory drop and HTTP, is parsed by sandboxed
//! WebAssembly plugins behind the WIT contract in `wit/`, and every stage is
//! persisted to PostgreSQL. The pipeline reads top to bottom:
//! ingest → parse → identify → match → route → deliver, with the ledger beside it.

pub mod api;
pub mod cli;
pub mod config;
pub mod domain;
pub mod ingest;
pub mod pipeline;
pub mod plugins;
pub mod store;
pub mod telemetry;
