//! Reads /etc/passwd when a line says `read`: must be refused at load (wasi:filesystem).
pub const VERSION: &str = "1";
pub const TRIGGER: &str = "read";

#[path = "../../echo.rs"]
mod echo;

pub fn hostile() {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    std::hint::black_box(text);
}
