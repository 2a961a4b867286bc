//! Characters that make text read differently from what it is: invisible marks, text-direction
//! overrides (U+202E shows `cat txt.exe` as `cat exe.txt`), spaces that are not spaces, and
//! control characters. Commands refuse them; logs show them escaped.

use std::borrow::Cow;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// A format, direction or private-use mark, or a space other than U+0020.
pub fn is_invisible(c: char) -> bool {
    match c.general_category() {
        GeneralCategory::Format | GeneralCategory::PrivateUse => true,
        GeneralCategory::SpaceSeparator => c != ' ',
        _ => false,
    }
}

/// `text` with every control or invisible character written as `\u{XXXX}`, so that a log line
/// shows what was sent, not what it displays as.
pub fn escape_invisible(text: &str) -> Cow<'_, str> {
    let hidden = |c: char| (c.is_control() && c != '\n' && c != '\t') || is_invisible(c);
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars().map(|c| if hidden(c) { format!("\\u{{{:04X}}}", c as u32) } else { c.to_string() }).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_would_mislead_a_reader() {
        assert!(matches!(escape_invisible("cat naïve 東京.txt\n"), Cow::Borrowed(_)));
        assert_eq!(escape_invisible("cat \u{202e}txt.exe"), "cat \\u{202E}txt.exe");
        assert_eq!(escape_invisible("a\u{200b}b\u{a0}c\u{1b}[2J"), "a\\u{200B}b\\u{00A0}c\\u{001B}[2J");
        for c in ['\u{2066}', '\u{feff}', '\u{ad}', '\u{3000}', '\u{e000}'] {
            assert!(is_invisible(c), "U+{:04X}", c as u32);
        }
        for c in ['a', ' ', 'é', '東', '-', '\u{2028}'] {
            assert!(!is_invisible(c), "U+{:04X}", c as u32);
        }
    }
}
