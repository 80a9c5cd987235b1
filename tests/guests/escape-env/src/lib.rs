//! Reads $HOME when a line says `env`: the sandbox links an empty environment, so the call sees no variables.
pub const VERSION: &str = "1";
pub const TRIGGER: &str = "env";

#[path = "../../echo.rs"]
mod echo;

pub fn hostile() {
    // Whatever the environment holds ends up in the output, where the test
    // can see it: the sandbox must hand over nothing.
    let seen: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    if !seen.is_empty() {
        panic!("environment leaked into the sandbox: {seen:?}");
    }
}
