//! Loops forever when a line says `spin`: the epoch deadline must stop it.
pub const VERSION: &str = "1";
pub const TRIGGER: &str = "spin";

#[path = "../../echo.rs"]
mod echo;

pub fn hostile() {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
