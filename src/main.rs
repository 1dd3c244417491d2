use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    bertcls::device::tune_allocator();
    let cli = bertcls::cli::Cli::parse();
    match bertcls::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the error's sources wrote.
            let message = format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
