//! Echo parser, version 1 of two (hot-load tests).
pub const VERSION: &str = "1";
pub const TRIGGER: &str = "never";

#[path = "../../echo.rs"]
mod echo;

pub fn hostile() {
    unreachable!()
}
