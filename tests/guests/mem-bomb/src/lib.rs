//! Allocates without bound when a line says `bomb`: the memory cap must stop it.
pub const VERSION: &str = "1";
pub const TRIGGER: &str = "bomb";

#[path = "../../echo.rs"]
mod echo;

pub fn hostile() {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 16 << 20]);
        std::hint::black_box(&hoard);
    }
}
