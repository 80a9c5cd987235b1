//! Panics when a line says `panic`: only that call fails, with the message.
pub const VERSION: &str = "1";
pub const TRIGGER: &str = "panic";

#[path = "../../echo.rs"]
mod echo;

pub fn hostile() {
    panic!("guest gave up on purpose");
}
