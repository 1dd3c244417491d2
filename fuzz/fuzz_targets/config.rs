//! Any text as a training config, with any `KEY=VALUE` override: parsed and checked, or an
//! error, never a panic.
#![no_main]

use std::path::Path;

use bertcls::config::{TrainConfig, parse_override};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (config, overrides) = text.split_once("\n#--set\n").unwrap_or((text, ""));
    let overrides: Vec<_> = overrides.lines().filter_map(|l| parse_override(l).ok()).collect();
    let _ = TrainConfig::from_toml(config, Path::new("fuzz.toml"), &overrides);
});
