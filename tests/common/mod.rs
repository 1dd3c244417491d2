//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty folder under the test target folder.
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The bertcls binary with a private cache and no network-dependent settings from the user.
pub fn bertcls(cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bertcls"));
    cmd.env("BERTCLS_CACHE", cache)
        .env("HF_HOME", cache.join("hf"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE");
    cmd
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a run succeeded, showing its output if not.
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

/// Asserts a run failed cleanly: exit code 1, no panic, and a last stderr line of the form
/// `error: ...` containing every one of `needles`. Returns that line.
pub fn fails_with(out: Output, needles: &[&str]) -> String {
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "expected exit code 1; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let last = err.lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("error: "), "last line is not an error line: {err}");
    for needle in needles {
        assert!(last.contains(needle), "`{needle}` not in: {last}");
    }
    last
}
