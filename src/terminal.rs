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

#[cfg(test)]
mod tests {
    use super::*;

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
