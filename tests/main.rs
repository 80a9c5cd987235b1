//! accord's integration tests: the real runtime with real wasm components
//! built from source (once per run, see `support`), real PostgreSQL, the real
//! binary. One test binary, one module per concern.

mod support;

mod api;
mod daemon;
mod ingest;
mod matching;
mod plugin_cli;
mod plugin_runtime;
mod reference;
mod walkthrough;
