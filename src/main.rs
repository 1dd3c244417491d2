use std::process::ExitCode;

use clap::Parser;

/// Collapses a multi-line message (clap's usage errors, errors from dependencies) to one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn main() -> ExitCode {
    bertcls::device::tune_cpu_runtime();
    let cli = match bertcls::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let text = e.render().to_string();
            let message = text.split("Usage:").next().unwrap_or(&text);
            let message = one_line(message.trim_start_matches("error:"));
            eprintln!("error: {message} (see bertcls --help)");
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match bertcls::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            // As a shell reports a process ended by that signal.
            match e.downcast_ref::<bertcls::train::Interrupted>() {
                Some(i) => ExitCode::from((128 + i.signal) as u8),
                None => ExitCode::FAILURE,
            }
        }
    }
}
