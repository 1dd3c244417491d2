//! Ctrl-C (SIGINT) and SIGTERM: the first one asks the work in progress to stop at the next
//! safe point (training writes a checkpoint; eval and predict stop between batches, removing
//! their temporary files); a second one ends the process at once, after removing the
//! temporary files still registered (see [`crate::atomic`]).

use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    if RECEIVED.swap(signal, Ordering::SeqCst) != 0 {
        crate::atomic::remove_registered();
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + signal) };
    }
}

/// Routes SIGINT and SIGTERM to [`requested`] from now on.
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches atomics and calls unlink and _exit, all
        // async-signal-safe.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// The signal received since [`install`], if any.
pub fn requested() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The name of a signal number, for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT (Ctrl-C)",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Work stopped by a signal before it finished; `outcome` says what was (not) written. The
/// process should exit with `128 + signal`, as a shell reports a process the signal ended.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {}: {outcome}", name(*signal))]
pub struct Stopped {
    pub signal: i32,
    pub outcome: String,
}

/// An error to stop with if a signal came; `outcome` is called only then.
pub fn check(outcome: impl FnOnce() -> String) -> Result<(), Stopped> {
    match requested() {
        Some(signal) => Err(Stopped {
            signal,
            outcome: outcome(),
        }),
        None => Ok(()),
    }
}
