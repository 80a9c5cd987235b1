//! Structured logging into the host's tracing, inside the span of the work
//! that called the plugin. Natively (in `cargo test`) lines go to stderr.

use crate::bindings::parser::accord::host::log as host;

pub use host::Level;

pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    #[cfg(target_arch = "wasm32")]
    {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        host::log(level, message, &fields);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message} {fields:?}");
}

pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(Level::Debug, message, fields)
}
pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields)
}
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(Level::Warn, message, fields)
}
pub fn error(message: &str, fields: &[(&str, &str)]) {
    log(Level::Error, message, fields)
}
