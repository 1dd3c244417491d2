//! Text shown to people on a terminal.

use std::borrow::Cow;

/// `text` with its control characters (escape sequences, bells, backspaces, line breaks) and
/// bidirectional overrides shown as Rust escapes such as `\u{1b}`: label names, texts and
/// tokens come from files other people made, and printed raw they could rewrite the
/// terminal. Files written for programs keep the exact strings.
pub fn printable(text: &str) -> Cow<'_, str> {
    let hidden =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.contains(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The one line an error is reported as: its chain of causes joined by `: `, whitespace
/// collapsed. candle appends a backtrace to its errors' messages when `RUST_BACKTRACE` is set;
/// that is left out.
pub fn error_line(error: &anyhow::Error) -> String {
    fn candle_message(e: &candle_core::Error) -> String {
        match e {
            candle_core::Error::WithBacktrace { inner, .. } => candle_message(inner),
            other => other.to_string(),
        }
    }
    let causes: Vec<String> = error
        .chain()
        .map(|cause| match cause.downcast_ref::<candle_core::Error>() {
            Some(e) => candle_message(e),
            None => cause.to_string(),
        })
        .collect();
    printable(&one_line(&causes.join(": "))).into_owned()
}

/// Collapses a multi-line message (clap's usage errors, errors from dependencies) to one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_show_control_characters_escaped() {
        let error = anyhow::anyhow!("label `\u{1b}]0;owned\u{7}` was not seen");
        assert_eq!(
            error_line(&error),
            "label `\\u{1b}]0;owned\\u{7}` was not seen"
        );
    }

    #[test]
    fn error_line_leaves_out_candle_backtraces() {
        let candle = candle_core::Error::WithBacktrace {
            inner: Box::new(candle_core::Error::Msg("no CUDA-capable device".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        let error = anyhow::Error::new(candle).context("cannot open device cuda:0");
        assert_eq!(
            error_line(&error),
            "cannot open device cuda:0: no CUDA-capable device"
        );
        let plain = anyhow::anyhow!("data/x.csv:3:\n  bad   row").context("reading");
        assert_eq!(error_line(&plain), "reading: data/x.csv:3: bad row");
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(printable("pos"), "pos");
        assert_eq!(printable("très bien 好"), "très bien 好");
        assert_eq!(
            printable("\u{1b}[31mred\u{7}\u{8}\u{9b}\u{202e}"),
            "\\u{1b}[31mred\\u{7}\\u{8}\\u{9b}\\u{202e}"
        );
        assert_eq!(printable("a\tb\nc"), "a\\tb\\nc");
    }
}
