use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    bertcls::device::tune_cpu_runtime();
    let cli = match bertcls::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let text = e.render().to_string();
            let message = text.split("Usage:").next().unwrap_or(&text);
            let message = bertcls::cli::one_line(message.trim_start_matches("error:"));
            eprintln!("error: {message} (see bertcls --help)");
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match bertcls::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", bertcls::cli::error_line(&e));
            // As a shell reports a process ended by that signal.
            let signal = match (
                e.downcast_ref::<bertcls::train::Interrupted>(),
                e.downcast_ref::<bertcls::interrupt::Stopped>(),
            ) {
                (Some(i), _) => Some(i.signal),
                (_, Some(s)) => Some(s.signal),
                _ => None,
            };
            signal.map_or(ExitCode::FAILURE, |s| ExitCode::from((128 + s) as u8))
        }
    }
}
