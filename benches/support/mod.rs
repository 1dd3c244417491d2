//! What the benchmarks share: running the bertcls binary and reading its JSON summaries.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Runs a command, failing with its standard error if it fails; returns standard output.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last line of `text` that is a JSON object: a command's `--json` summary.
pub fn json_of(text: &str) -> Result<Value> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON output")?;
    serde_json::from_str(line).context("cannot parse the JSON summary")
}

/// The Python of the reference environment (torch + transformers), created by
/// scripts/reference/setup.sh the first time (about 2 minutes).
pub fn reference_python(repo: &Path) -> Result<String> {
    let python = run(Command::new("bash").arg(repo.join("scripts/reference/setup.sh")))?;
    Ok(python.trim().to_string())
}
