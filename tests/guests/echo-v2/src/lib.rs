//! Echo parser, version 2 of two (hot-load tests).
pub const VERSION: &str = "2";
pub const TRIGGER: &str = "never";

#[path = "../../echo.rs"]
mod echo;

pub fn hostile() {
    unreachable!()
}
