//! The `accord` binary: parse the command line, set up tracing, run, and
//! print any error with its whole chain.

use clap::Parser as _;

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
