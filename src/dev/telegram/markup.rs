//! Entity parsing for `parse_mode`, reduced to what a client can get wrong: it yields the text
//! the user sees (markup removed) or Telegram's "can't parse entities" reason. Modelled on
//! TDLib's parsers, whose error sentences the Bot API passes through; entity lists are not kept.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseMode {
    MarkdownV2,
    Html,
    /// Telegram's legacy Markdown.
    Markdown,
}

impl ParseMode {
    /// Telegram matches parse modes case-insensitively; an empty one means plain text.
    pub fn from_param(value: &str) -> Result<Option<Self>, UnsupportedParseMode> {
        match value.to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "markdownv2" => Ok(Some(Self::MarkdownV2)),
            "html" => Ok(Some(Self::Html)),
            "markdown" => Ok(Some(Self::Markdown)),
            _ => Err(UnsupportedParseMode),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported parse_mode")]
pub struct UnsupportedParseMode;

/// Why entities could not be parsed (the text after "can't parse entities: ").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MarkupError(String);

/// The text as the user would see it.
pub fn render(text: &str, mode: Option<ParseMode>) -> Result<String, MarkupError> {
    match mode {
        None => Ok(text.to_owned()),
        Some(ParseMode::MarkdownV2) => markdown_v2(text),
        Some(ParseMode::Html) => html(text),
        Some(ParseMode::Markdown) => markdown(text),
    }
}

const V2_RESERVED: &str = "_*[]()~`>#+-=|{}.!";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Spoiler,
    Code,
    Pre,
    TextUrl,
    CustomEmoji,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

fn reserved(c: char) -> MarkupError {
    MarkupError(format!("Character '{c}' is reserved and must be escaped with the preceding '\\'"))
}

/// Telegram lets `\` escape any character with code 1..=126.
fn escapable(c: Option<char>) -> bool {
    c.is_some_and(|c| ('\u{1}'..='\u{7e}').contains(&c))
}

fn markdown_v2(text: &str) -> Result<String, MarkupError> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let mut out = String::with_capacity(text.len());
    // Open entities: kind and byte offset of the opening mark.
    let mut open: Vec<(Entity, usize)> = Vec::new();
    let mut i = 0;
    while let Some(&(byte, c)) = chars.get(i) {
        if c == '\\' && escapable(at(i + 1)) {
            out.extend(at(i + 1));
            i += 2;
            continue;
        }
        let in_code = matches!(open.last(), Some((Entity::Code | Entity::Pre, _)));
        let is_reserved = if in_code { c == '`' } else { V2_RESERVED.contains(c) };
        if !is_reserved {
            out.push(c);
            i += 1;
            continue;
        }
        // `>` opening a line is a block quote mark, not text.
        if c == '>' && !in_code && (i == 0 || at(i - 1) == Some('\n')) {
            i += 1;
            continue;
        }
        let closes = open.last().is_some_and(|&(entity, _)| match entity {
            Entity::Bold => c == '*',
            Entity::Italic => c == '_' && at(i + 1) != Some('_'),
            Entity::Underline => c == '_' && at(i + 1) == Some('_'),
            Entity::Strikethrough => c == '~',
            Entity::Spoiler => c == '|' && at(i + 1) == Some('|'),
            Entity::Code => c == '`',
            Entity::Pre => c == '`' && at(i + 1) == Some('`') && at(i + 2) == Some('`'),
            Entity::TextUrl | Entity::CustomEmoji => c == ']',
        });
        if let Some(&(entity, _)) = open.last().filter(|_| closes) {
            open.pop();
            i += match entity {
                Entity::Underline | Entity::Spoiler => 2,
                Entity::Pre => 3,
                _ => 1,
            };
            if matches!(entity, Entity::TextUrl | Entity::CustomEmoji) && at(i) == Some('(') {
                i = skip_url(&chars, i + 1)?;
            }
            continue;
        }
        let entity = match c {
            '_' if at(i + 1) == Some('_') => {
                i += 2;
                Entity::Underline
            }
            '|' if at(i + 1) == Some('|') => {
                i += 2;
                Entity::Spoiler
            }
            '!' if at(i + 1) == Some('[') => {
                i += 2;
                Entity::CustomEmoji
            }
            '`' if at(i + 1) == Some('`') && at(i + 2) == Some('`') => {
                i = skip_pre_header(&chars, i + 3);
                Entity::Pre
            }
            '_' | '*' | '~' | '[' | '`' => {
                i += 1;
                match c {
                    '_' => Entity::Italic,
                    '*' => Entity::Bold,
                    '~' => Entity::Strikethrough,
                    '[' => Entity::TextUrl,
                    _ => Entity::Code,
                }
            }
            _ => return Err(reserved(c)),
        };
        open.push((entity, byte));
    }
    match open.last() {
        Some((entity, byte)) => Err(MarkupError(format!("Can't find end of {entity} entity at byte offset {byte}"))),
        None => Ok(out),
    }
}

/// After "```": an optional language up to whitespace, then one line break, are not text.
fn skip_pre_header(chars: &[(usize, char)], start: usize) -> usize {
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let mut end = start;
    while at(end).is_some_and(|c| !c.is_whitespace() && c != '`') {
        end += 1;
    }
    let mut i = if end != start && at(end).is_some_and(|c| c != '`') { end } else { start };
    match (at(i), at(i + 1)) {
        (Some(a @ ('\n' | '\r')), Some(b @ ('\n' | '\r'))) if a != b => i += 2,
        (Some('\n' | '\r'), _) => i += 1,
        _ => {}
    }
    i
}

/// Skip a link's "(url)" starting just inside the parenthesis; `)` and `\` must be escaped.
fn skip_url(chars: &[(usize, char)], start: usize) -> Result<usize, MarkupError> {
    let mut i = start;
    loop {
        match chars.get(i) {
            None => {
                let byte =
                    chars.get(start).map_or_else(|| chars.last().map_or(0, |&(b, c)| b + c.len_utf8()), |&(b, _)| b);
                return Err(MarkupError(format!("Can't find end of a URL at byte offset {byte}")));
            }
            Some((_, ')')) => return Ok(i + 1),
            Some((_, '\\')) if escapable(chars.get(i + 1).map(|&(_, c)| c)) => i += 2,
            Some(_) => i += 1,
        }
    }
}

/// Legacy Markdown: `*bold*`, `_italic_`, `` `code` ``, ```` ```pre``` ````, `[text](url)`.
fn markdown(text: &str) -> Result<String, MarkupError> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let unclosed = |byte: usize| MarkupError(format!("Can't find end of the entity starting at byte offset {byte}"));
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(&(byte, c)) = chars.get(i) {
        if c == '\\' && at(i + 1).is_some_and(|n| "_*`[".contains(n)) {
            out.extend(at(i + 1));
            i += 2;
            continue;
        }
        let (end_mark, skip) = match c {
            '`' if at(i + 1) == Some('`') && at(i + 2) == Some('`') => ("```", 3),
            '_' | '*' | '`' => (
                if c == '_' {
                    "_"
                } else if c == '*' {
                    "*"
                } else {
                    "`"
                },
                1,
            ),
            '[' => ("]", 1),
            _ => {
                out.push(c);
                i += 1;
                continue;
            }
        };
        let start = i + skip;
        let end = find_seq(&chars, start, end_mark).ok_or_else(|| unclosed(byte))?;
        out.extend(chars[start..end].iter().map(|&(_, c)| c));
        i = end + end_mark.chars().count();
        if c == '[' && at(i) == Some('(') {
            i = find_seq(&chars, i + 1, ")").ok_or_else(|| unclosed(byte))? + 1;
        }
    }
    Ok(out)
}

fn find_seq(chars: &[(usize, char)], from: usize, seq: &str) -> Option<usize> {
    let seq: Vec<char> = seq.chars().collect();
    (from..chars.len()).find(|&i| seq.iter().enumerate().all(|(k, s)| chars.get(i + k).is_some_and(|&(_, c)| c == *s)))
}

const HTML_TAGS: &[&str] = &[
    "a",
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "tg-emoji",
    "code",
    "pre",
    "blockquote",
];

/// HTML: only Telegram's tags, balanced; `&lt;`-style and numeric entities decoded.
fn html(text: &str) -> Result<String, MarkupError> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut open: Vec<String> = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if rest.starts_with('&')
            && let Some((decoded, len)) = html_entity(rest)
        {
            out.push(decoded);
            i += len;
            continue;
        }
        if !rest.starts_with('<') {
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            i += c.len_utf8().max(1);
            continue;
        }
        let tag_start = i;
        let Some(close) = tag_end(bytes, i + 1) else {
            return Err(MarkupError(format!("Unclosed start tag at byte offset {tag_start}")));
        };
        let inner = &text[i + 1..close];
        i = close + 1;
        if let Some(name) = inner.strip_prefix('/') {
            let name = name.trim().to_ascii_lowercase();
            match open.pop() {
                None => return Err(MarkupError(format!("Unexpected end tag at byte offset {tag_start}"))),
                Some(expected) if !name.is_empty() && name != expected => {
                    return Err(MarkupError(format!(
                        "Unmatched end tag at byte offset {tag_start}, expected \"</{expected}>\", found \"</{name}>\""
                    )));
                }
                Some(_) => {}
            }
            continue;
        }
        let name_len = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).unwrap_or(inner.len());
        let name = inner[..name_len].to_ascii_lowercase();
        if !HTML_TAGS.contains(&name.as_str()) {
            return Err(MarkupError(format!("Unsupported start tag \"{name}\" at byte offset {tag_start}")));
        }
        if name == "span" && !inner[name_len..].contains("tg-spoiler") {
            return Err(MarkupError(format!("Tag \"span\" must have class \"tg-spoiler\" at byte offset {tag_start}")));
        }
        open.push(name);
    }
    match open.last() {
        Some(name) => Err(MarkupError(format!("Can't find end tag corresponding to start tag \"{name}\""))),
        None => Ok(out),
    }
}

/// Index of the `>` closing a tag opened just before `from`, skipping quoted attribute values.
fn tag_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate().skip(from) {
        match (quote, b) {
            (None, b'>') => return Some(i),
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), b) if b == q => quote = None,
            _ => {}
        }
    }
    None
}

/// Decode an HTML entity at the start of `s`; unknown ones stay literal text, as in Telegram.
fn html_entity(s: &str) -> Option<(char, usize)> {
    let end = s.find(';').filter(|&e| e <= 10)?;
    let name = &s[1..end];
    let c = match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        _ => {
            let code = match name.strip_prefix('#')? {
                hex if hex.starts_with(['x', 'X']) => u32::from_str_radix(&hex[1..], 16).ok()?,
                dec => dec.parse().ok()?,
            };
            char::from_u32(code)?
        }
    };
    Some((c, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(text: &str) -> Result<String, String> {
        render(text, Some(ParseMode::MarkdownV2)).map_err(|e| e.to_string())
    }

    #[test]
    fn parse_modes_are_case_insensitive() {
        assert_eq!(ParseMode::from_param("markdownv2"), Ok(Some(ParseMode::MarkdownV2)));
        assert_eq!(ParseMode::from_param("HTML"), Ok(Some(ParseMode::Html)));
        assert_eq!(ParseMode::from_param(""), Ok(None));
        assert_eq!(ParseMode::from_param("Textile"), Err(UnsupportedParseMode));
    }

    #[test]
    fn v2_rejects_each_unescaped_reserved_character() {
        for c in ['.', '!', '-', '+', '=', '#', '(', ')', '{', '}', '>', ']'] {
            let text = format!("a{c}b");
            let want = format!("Character '{c}' is reserved and must be escaped with the preceding '\\'");
            assert_eq!(v2(&text), Err(want), "{text}");
            assert_eq!(v2(&format!("a\\{c}b")), Ok(format!("a{c}b")));
        }
    }

    #[test]
    fn v2_entities_render_as_their_text() {
        assert_eq!(v2("*bold* _it_ __under__ ~gone~ ||secret||"), Ok("bold it under gone secret".into()));
        assert_eq!(v2("*bold _nested_ bold*"), Ok("bold nested bold".into()));
        assert_eq!(v2("[link](http://x/a\\)b) and [text]"), Ok("link and text".into()));
        assert_eq!(v2("`a.b!c`"), Ok("a.b!c".into()));
        assert_eq!(v2("```rust\nlet x = 1;\n```"), Ok("let x = 1;\n".into()));
        assert_eq!(v2("```\nplain.\n```"), Ok("plain.\n".into()));
        assert_eq!(v2(">quoted\n>lines"), Ok("quoted\nlines".into()));
        assert_eq!(v2("snow ☃\\."), Ok("snow ☃.".into()));
    }

    #[test]
    fn v2_reports_unclosed_entities() {
        assert_eq!(v2("x *bold"), Err("Can't find end of Bold entity at byte offset 2".into()));
        assert_eq!(v2("`code"), Err("Can't find end of Code entity at byte offset 0".into()));
        assert_eq!(v2("[a](http://x"), Err("Can't find end of a URL at byte offset 4".into()));
        // Inside code only ` is special, so an unmatched one there still fails.
        assert!(v2("``` a ` b").is_err());
    }

    #[test]
    fn html_tags_are_checked_and_entities_decoded() {
        let h = |t: &str| render(t, Some(ParseMode::Html)).map_err(|e| e.to_string());
        assert_eq!(h("<b>x</b> &lt;y&gt; &amp; &#65;&#x42; &nbsp"), Ok("x <y> & AB &nbsp".into()));
        assert_eq!(h("<a href=\"http://x/?a>b\">l</a>"), Ok("l".into()));
        assert_eq!(h("<span class=\"tg-spoiler\">s</span>"), Ok("s".into()));
        assert_eq!(h("<br>"), Err("Unsupported start tag \"br\" at byte offset 0".into()));
        assert_eq!(h("<b>x"), Err("Can't find end tag corresponding to start tag \"b\"".into()));
        assert_eq!(h("x</b>"), Err("Unexpected end tag at byte offset 1".into()));
        assert_eq!(
            h("<b><i>x</b>"),
            Err("Unmatched end tag at byte offset 7, expected \"</i>\", found \"</b>\"".into())
        );
        assert_eq!(h("a < b"), Err("Unclosed start tag at byte offset 2".into()));
    }

    #[test]
    fn legacy_markdown() {
        let m = |t: &str| render(t, Some(ParseMode::Markdown)).map_err(|e| e.to_string());
        assert_eq!(m("*b* _i_ `c` ```p``` [t](u) a.b!"), Ok("b i c p t a.b!".into()));
        assert_eq!(m("snake\\_case"), Ok("snake_case".into()));
        assert_eq!(m("x *b"), Err("Can't find end of the entity starting at byte offset 2".into()));
    }
}
