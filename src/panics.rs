//! Panics inside third-party code that runs on untrusted input (a tokenizer.json's regular
//! expressions hitting the regex engine's backtracking limit, which `onig` reports by
//! panicking) become ordinary errors: one line, no "panicked at" on standard error.
//!
//! The process-wide panic hook stays as it was except while such a call is in flight; the
//! count of calls in flight is global rather than per thread because `tokenizers` encodes
//! batches on rayon's pool, where the panic happens on a worker and rayon hands it back to
//! the caller.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

static CONTAINED: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();

/// Runs `f`; a panic inside it is returned as an error holding the panic's message.
pub fn contain<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CONTAINED.load(Ordering::SeqCst) == 0 {
                previous(info);
            }
        }));
    });
    CONTAINED.fetch_add(1, Ordering::SeqCst);
    let result = catch_unwind(AssertUnwindSafe(f));
    CONTAINED.fetch_sub(1, Ordering::SeqCst);
    result.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("unknown failure");
        Err(anyhow::anyhow!("{message}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_a_value_passes_through() {
        let e =
            contain::<()>(|| panic!("regex search error: retry-limit-in-match over")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "regex search error: retry-limit-in-match over"
        );
        assert_eq!(contain(|| Ok(7)).unwrap(), 7);
    }
}
