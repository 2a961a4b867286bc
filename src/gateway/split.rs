//! Splitting a reply into Telegram messages.
//!
//! Telegram refuses a message longer than 4096 characters, counting as it does in UTF-16
//! code units (an emoji outside the BMP is two). We cut at the last paragraph break that
//! fits, else the last line break, else the last space, else anywhere between characters
//! (never inside one), preferring a break past the first quarter of what fits, so that a part
//! is never just a heading. Whitespace at a cut is dropped: Telegram trims it anyway.

use std::ops::Range;

/// Telegram's limit on one message's text.
pub const TELEGRAM_MAX_MESSAGE: usize = 4096;

fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// The longest prefix of `text` (in bytes) whose UTF-16 length is at most `limit`.
fn fitting_prefix(text: &str, limit: usize) -> usize {
    let mut units = 0;
    for (index, ch) in text.char_indices() {
        units += ch.len_utf16();
        if units > limit {
            return index;
        }
    }
    text.len()
}

/// Split `text` into non-empty parts of at most `limit` UTF-16 code units each.
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    split_ranges(text, limit).into_iter().map(|range| text[range].to_string()).collect()
}

/// Where `split_message` cuts: the byte ranges of `text` that make its parts.
pub fn split_ranges(text: &str, limit: usize) -> Vec<Range<usize>> {
    let limit = limit.max(1);
    let mut parts = Vec::new();
    let mut start = text.len() - text.trim_start().len();
    let end = text.trim_end().len();
    while start < end {
        let rest = &text[start..end];
        if utf16_len(rest) <= limit {
            parts.push(start..end);
            break;
        }
        // At least one character, so that a limit below one character's width still advances.
        let first = rest.chars().next().map_or(0, char::len_utf8);
        let window = &rest[..fitting_prefix(rest, limit).max(first)];
        // The strongest break past the window's first quarter; failing that, the last anywhere.
        let cut = ["\n\n", "\n", " "]
            .iter()
            .filter_map(|sep| window.rfind(sep).filter(|&at| at >= window.len() / 4))
            .chain(["\n\n", "\n", " "].iter().filter_map(|sep| window.rfind(sep).filter(|&at| at > 0)))
            .next()
            .unwrap_or(window.len());
        let head = rest[..cut].trim_end();
        if !head.is_empty() {
            parts.push(start..start + head.len());
        }
        let tail = &rest[cut..];
        start += cut + (tail.len() - tail.trim_start().len());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squash(text: &str) -> String {
        text.chars().filter(|c| !c.is_whitespace()).collect()
    }

    fn check(text: &str, limit: usize) -> Vec<String> {
        let parts = split_message(text, limit);
        for part in &parts {
            assert!(!part.is_empty());
            let single_wide_char = part.chars().count() == 1;
            assert!(utf16_len(part) <= limit || single_wide_char, "part of {} units > {limit}", utf16_len(part));
        }
        assert_eq!(squash(&parts.concat()), squash(text), "nothing lost or reordered");
        parts
    }

    #[test]
    fn short_text_is_one_message() {
        assert_eq!(check("hello", 4096), ["hello"]);
        assert!(split_message("   \n ", 4096).is_empty());
    }

    #[test]
    fn a_heading_is_not_a_part_of_its_own() {
        let list: String = (1..=60).map(|i| format!("{i}. a note of some length\n")).collect();
        let text = format!("Notes:\n\n{list}");
        let parts = split_message(&text, 400);
        assert!(parts[0].starts_with("Notes:\n\n1. a note") && parts[0].encode_utf16().count() > 300, "{parts:?}");
    }

    #[test]
    fn prefers_paragraphs_then_lines_then_spaces() {
        assert_eq!(check("aaaa\n\nbbbb\ncccc", 12), ["aaaa", "bbbb\ncccc"]);
        assert_eq!(check("aaaa\nbbbb cccc", 12), ["aaaa", "bbbb cccc"], "a line break before a later space");
        assert_eq!(check("aaaa bbbb cccc", 10), ["aaaa bbbb", "cccc"]);
        assert_eq!(check("abcdefghij", 4), ["abcd", "efgh", "ij"]);
    }

    #[test]
    fn never_cuts_inside_a_character_and_counts_utf16() {
        // Each emoji is 4 bytes and 2 UTF-16 units.
        let emoji = "😀".repeat(5);
        let parts = check(&emoji, 4);
        assert_eq!(parts, ["😀😀", "😀😀", "😀"]);
        let mixed = "é".repeat(10) + &"字".repeat(10);
        check(&mixed, 3);
    }

    #[test]
    fn ten_thousand_characters_arrive_whole() {
        let paragraph = "Lorem ipsum dolor sit amet, ünïcödé 😀 text.\n".repeat(20);
        let text = (0..12).map(|i| format!("{i}: {paragraph}")).collect::<Vec<_>>().join("\n");
        assert!(text.chars().count() > 10_000);
        let parts = check(&text, TELEGRAM_MAX_MESSAGE);
        assert!(parts.len() >= 3);
        // Cuts fall on line breaks when the text has them.
        for part in &parts {
            assert!(part.ends_with('.'), "{:?}", &part[part.len().saturating_sub(20)..]);
        }
    }

    #[test]
    fn pseudo_random_texts_keep_every_character() {
        let alphabet: Vec<char> = "ab \n😀é字\t".chars().collect();
        let mut seed = 0x2545F4914F6CDD1Du64;
        for round in 0..200 {
            let len = (round * 37) % 300;
            let text: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            check(&text, 1 + round % 17);
        }
    }
}
