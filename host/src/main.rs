//! The `accord` binary: parse the command line, set up tracing, run, and
//! print any error with its whole chain.

use clap::Parser as _;

// Parse batches are large, short-lived vectors (thousands of records per
// chunk); glibc's malloc hands those to mmap and back on every chunk, paying
// page faults each time. mimalloc keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = accord::cli::Cli::parse();
    accord::telemetry::init(cli.verbose);
    match accord::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
