//! Connects to PostgreSQL when a line says `connect`: must be refused at load (wasi:sockets).
pub const VERSION: &str = "1";
pub const TRIGGER: &str = "connect";

#[path = "../../echo.rs"]
mod echo;

pub fn hostile() {
    let s = std::net::TcpStream::connect("127.0.0.1:5432");
    std::hint::black_box(s.is_ok());
}
