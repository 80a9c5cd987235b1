//! Channels: where payloads come from, feeding the pipeline.
//!
//! - [`directory`]: each source's inbox, watched; files are taken in once
//!   complete and then moved to `archive/` or `failed/` under the data dir.
//! - HTTP lives in [`crate::api`] and calls [`crate::pipeline::import_stream`]
//!   with the request body as the stream.
//! - The CLI (`accord import`) calls the same function over a file.
//!
//! Every channel hands the pipeline a byte stream; none buffers a payload
//! whole, and each processes one item at a time per source, so work in
//! flight is bounded without unbounded queues.

pub mod directory;

pub use directory::{Disposition, Inboxes, process_file};
