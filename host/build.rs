// New migrations must rebuild the binary: `sqlx::migrate!` embeds the
// directory at compile time.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
