//! The model's Markdown as Telegram's HTML.
//!
//! Models answer in Markdown; Telegram shows `**` and `#` as they are unless a message names a
//! parse mode. We read the reply with a CommonMark parser into runs of text, each with the
//! styles it is in, and write each message as HTML from those runs: what the model wrote as
//! HTML, and every `<`, `>` and `&`, is escaped, so the only markup Telegram sees is ours.
//! Long replies are cut on the visible text, as plain text is, and a style that spans a cut
//! is closed before it and opened again after it, so no part holds a broken entity.

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

use super::split::split_ranges;

/// A style Telegram's HTML can show.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Style {
    Bold,
    Italic,
    Strike,
    Code,
    /// A code block, with its language if the model named one.
    Pre(Option<String>),
    Link(String),
    Quote,
}

impl Style {
    fn open(&self, html: &mut String) {
        match self {
            Style::Bold => html.push_str("<b>"),
            Style::Italic => html.push_str("<i>"),
            Style::Strike => html.push_str("<s>"),
            Style::Code => html.push_str("<code>"),
            Style::Pre(None) => html.push_str("<pre>"),
            Style::Pre(Some(language)) => {
                html.push_str("<pre><code class=\"language-");
                escape_into(html, language);
                html.push_str("\">");
            }
            Style::Link(url) => {
                html.push_str("<a href=\"");
                escape_into(html, url);
                html.push_str("\">");
            }
            Style::Quote => html.push_str("<blockquote>"),
        }
    }

    fn close(&self, html: &mut String) {
        html.push_str(match self {
            Style::Bold => "</b>",
            Style::Italic => "</i>",
            Style::Strike => "</s>",
            Style::Code => "</code>",
            Style::Pre(None) => "</pre>",
            Style::Pre(Some(_)) => "</code></pre>",
            Style::Link(_) => "</a>",
            Style::Quote => "</blockquote>",
        })
    }
}

/// Text in the styles it is in, outermost first.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    start: usize,
    styles: Vec<Style>,
}

/// A reply as the person will see it: its visible text, and where each style starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Formatted {
    text: String,
    runs: Vec<Run>,
}

/// One Telegram message of a reply: the HTML to send, and the same text without markup for
/// when Telegram refuses the markup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub html: String,
    pub plain: String,
}

impl Formatted {
    /// The visible text.
    pub fn plain(&self) -> &str {
        &self.text
    }

    /// The messages to send, each at most `limit` UTF-16 code units of visible text.
    pub fn parts(&self, limit: usize) -> Vec<Part> {
        split_ranges(&self.text, limit)
            .into_iter()
            .map(|range| Part { html: self.html(range.start, range.end), plain: self.text[range].to_string() })
            .collect()
    }

    /// The HTML of the visible text from byte `from` to byte `to`.
    fn html(&self, from: usize, to: usize) -> String {
        let mut html = String::new();
        let mut open: &[Style] = &[];
        for (index, run) in self.runs.iter().enumerate() {
            let end = self.runs.get(index + 1).map_or(self.text.len(), |next| next.start);
            let (start, end) = (run.start.max(from), end.min(to));
            if start >= end {
                continue;
            }
            let common = open.iter().zip(&run.styles).take_while(|(a, b)| a == b).count();
            open[common..].iter().rev().for_each(|style| style.close(&mut html));
            run.styles[common..].iter().for_each(|style| style.open(&mut html));
            open = &run.styles;
            escape_into(&mut html, &self.text[start..end]);
        }
        open.iter().rev().for_each(|style| style.close(&mut html));
        html
    }
}

/// Read the model's Markdown.
pub fn from_markdown(markdown: &str) -> Formatted {
    let options = Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES | Options::ENABLE_TASKLISTS;
    let mut writer = Writer::default();
    for event in Parser::new_ext(markdown, options) {
        writer.event(event);
    }
    writer.out
}

/// Lists being written: the next number of each ordered one, `None` for bullets.
#[derive(Default)]
struct Writer {
    out: Formatted,
    styles: Vec<Style>,
    lists: Vec<Option<u64>>,
    /// Line breaks owed before the next text (blocks are separated by a blank line).
    breaks: usize,
    /// The styles of the last text written, for the breaks that follow it.
    last: Vec<Style>,
    /// A table's cells of the current row, written as one line.
    cells: Vec<String>,
    in_cell: Option<String>,
}

impl Writer {
    fn event(&mut self, event: Event) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) => self.text(&text),
            Event::Code(code) => {
                self.styles.push(Style::Code);
                self.text(&code);
                self.styles.pop();
            }
            Event::InlineMath(math) | Event::DisplayMath(math) => self.text(&math),
            // The model's own HTML is shown as it wrote it.
            Event::Html(html) | Event::InlineHtml(html) => self.text(&html),
            Event::FootnoteReference(name) => self.text(&format!("[{name}]")),
            Event::SoftBreak | Event::HardBreak => self.text("\n"),
            Event::Rule => {
                self.block();
                self.text("———");
                self.block();
            }
            Event::TaskListMarker(done) => self.text(if done { "☑ " } else { "☐ " }),
        }
    }

    fn start(&mut self, tag: Tag) {
        match tag {
            Tag::Paragraph | Tag::HtmlBlock | Tag::Table(_) | Tag::FootnoteDefinition(_) => self.block(),
            Tag::Heading { .. } => {
                self.block();
                self.styles.push(Style::Bold);
            }
            Tag::BlockQuote(_) => {
                self.block();
                self.styles.push(Style::Quote);
            }
            Tag::CodeBlock(kind) => {
                self.block();
                let language = match kind {
                    CodeBlockKind::Fenced(info) => info.split_whitespace().next().map(str::to_string),
                    CodeBlockKind::Indented => None,
                };
                self.styles.push(Style::Pre(language.filter(|l| !l.is_empty())));
            }
            Tag::List(first) => {
                if self.lists.is_empty() {
                    self.block();
                }
                self.lists.push(first);
            }
            Tag::Item => {
                self.line();
                let depth = self.lists.len().saturating_sub(1);
                let marker = match self.lists.last_mut() {
                    Some(Some(number)) => {
                        *number += 1;
                        format!("{}. ", *number - 1)
                    }
                    _ => "• ".to_string(),
                };
                self.text(&format!("{}{marker}", "  ".repeat(depth)));
            }
            Tag::Emphasis => self.styles.push(Style::Italic),
            Tag::Strong => self.styles.push(Style::Bold),
            Tag::Strikethrough => self.styles.push(Style::Strike),
            Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                // Only addresses a person can open; anything else stays plain text.
                let url = dest_url.to_string();
                let openable = ["https://", "http://", "mailto:", "tg://"].iter().any(|p| url.starts_with(p));
                self.styles.push(if openable { Style::Link(url) } else { Style::Italic });
            }
            Tag::TableHead | Tag::TableRow => self.cells.clear(),
            Tag::TableCell => self.in_cell = Some(String::new()),
            Tag::Superscript
            | Tag::Subscript
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::MetadataBlock(_) => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph | TagEnd::HtmlBlock | TagEnd::FootnoteDefinition => self.block(),
            TagEnd::Heading(_) => {
                self.styles.pop();
                self.block();
            }
            TagEnd::BlockQuote(_) | TagEnd::CodeBlock => {
                self.styles.pop();
                self.block();
            }
            TagEnd::List(_) => {
                self.lists.pop();
                if self.lists.is_empty() {
                    self.block();
                }
            }
            TagEnd::Emphasis | TagEnd::Strong | TagEnd::Strikethrough | TagEnd::Link | TagEnd::Image => {
                self.styles.pop();
            }
            TagEnd::TableCell => {
                let cell = self.in_cell.take().unwrap_or_default();
                self.cells.push(cell.trim().to_string());
            }
            TagEnd::TableHead | TagEnd::TableRow => {
                let row = std::mem::take(&mut self.cells).join(" | ");
                self.line();
                self.text(&row);
            }
            TagEnd::Table => self.block(),
            TagEnd::Item
            | TagEnd::Superscript
            | TagEnd::Subscript
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
            | TagEnd::MetadataBlock(_) => {}
        }
    }

    /// A blank line before whatever comes next (none at the start).
    fn block(&mut self) {
        self.breaks = 2;
    }

    /// A line break before whatever comes next (none at the start).
    fn line(&mut self) {
        self.breaks = self.breaks.max(1);
    }

    fn text(&mut self, text: &str) {
        if let Some(cell) = &mut self.in_cell {
            cell.push_str(text);
            return;
        }
        // A code block's text ends with its last line's newline; the block's end separates.
        let text = match self.styles.last() {
            Some(Style::Pre(_)) => text.trim_end_matches('\n'),
            _ => text,
        };
        if text.is_empty() {
            return;
        }
        if !self.out.text.is_empty() && self.breaks > 0 {
            // Breaks belong to the quotes enclosing both sides: a block opens on its own text,
            // and no inline style runs on from one block into the next.
            let common = self.last.iter().zip(&self.styles).take_while(|(a, b)| a == b && **a == Style::Quote).count();
            let styles = self.styles[..common].to_vec();
            self.push("\n".repeat(self.breaks).as_str(), styles);
        }
        self.breaks = 0;
        self.push(text, self.styles.clone());
        self.last = self.styles.clone();
    }

    fn push(&mut self, text: &str, styles: Vec<Style>) {
        if self.out.runs.last().is_none_or(|run| run.styles != styles) {
            self.out.runs.push(Run { start: self.out.text.len(), styles });
        }
        self.out.text.push_str(text);
    }
}

/// Escape text for Telegram's HTML (and for its attribute values).
fn escape_into(html: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '&' => html.push_str("&amp;"),
            '"' => html.push_str("&quot;"),
            c => html.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(markdown: &str) -> String {
        let parts = from_markdown(markdown).parts(4096);
        assert!(parts.len() <= 1, "{parts:?}");
        parts.into_iter().next().map(|p| p.html).unwrap_or_default()
    }

    #[test]
    fn inline_styles_become_telegram_tags() {
        assert_eq!(html("**bold** and *italic* and ~~gone~~"), "<b>bold</b> and <i>italic</i> and <s>gone</s>");
        assert_eq!(html("run `ls -l` now"), "run <code>ls -l</code> now");
        assert_eq!(html("***both***"), "<i><b>both</b></i>");
    }

    #[test]
    fn everything_else_is_escaped() {
        assert_eq!(html("a < b && c > d"), "a &lt; b &amp;&amp; c &gt; d");
        assert_eq!(
            html("<b>not ours</b> <script>x</script>"),
            "&lt;b&gt;not ours&lt;/b&gt; &lt;script&gt;x&lt;/script&gt;"
        );
        assert_eq!(html("`<tag>`"), "<code>&lt;tag&gt;</code>");
        assert_eq!(
            html("[x](https://e.test/?a=1&b=\"2\")"),
            "<a href=\"https://e.test/?a=1&amp;b=&quot;2&quot;\">x</a>"
        );
    }

    #[test]
    fn only_openable_links_are_links() {
        assert_eq!(html("[site](https://example.test/a)"), "<a href=\"https://example.test/a\">site</a>");
        assert_eq!(html("[run](javascript:alert(1))"), "<i>run</i>");
        assert_eq!(html("[file](files/notes.txt)"), "<i>file</i>");
    }

    #[test]
    fn blocks_are_separated_by_a_blank_line_and_headings_are_bold() {
        assert_eq!(html("# Title\n\nFirst.\n\nSecond."), "<b>Title</b>\n\nFirst.\n\nSecond.");
        assert_eq!(html("## Sub\ntext"), "<b>Sub</b>\n\ntext");
        assert_eq!(html("line one\nline two"), "line one\nline two");
        assert_eq!(html("## Tea\n\n**Milk** first"), "<b>Tea</b>\n\n<b>Milk</b> first");
        assert_eq!(html("**a**\n\n**b**"), "<b>a</b>\n\n<b>b</b>");
    }

    #[test]
    fn lists_get_markers_and_nesting_is_indented() {
        assert_eq!(html("- one\n- two\n  - deeper"), "• one\n• two\n  • deeper");
        assert_eq!(html("3. c\n4. d"), "3. c\n4. d");
        assert_eq!(html("- [x] done\n- [ ] todo"), "• ☑ done\n• ☐ todo");
        assert_eq!(html("Intro:\n\n- a\n\nAfter."), "Intro:\n\n• a\n\nAfter.");
    }

    #[test]
    fn code_blocks_are_pre_with_their_language() {
        assert_eq!(
            html("Run:\n\n```rust\nfn main() {}\nlet x = a < b;\n```\n\nDone."),
            "Run:\n\n<pre><code class=\"language-rust\">fn main() {}\nlet x = a &lt; b;</code></pre>\n\nDone."
        );
        assert_eq!(html("    indented"), "<pre>indented</pre>");
    }

    #[test]
    fn quotes_and_tables() {
        assert_eq!(html("> quoted\n> more\n\nafter"), "<blockquote>quoted\nmore</blockquote>\n\nafter");
        assert_eq!(html("| a | b |\n|---|---|\n| 1 | 2 |"), "a | b\n1 | 2");
    }

    #[test]
    fn plain_text_is_unchanged() {
        let text = "Hello! It's 5 o'clock: time for tea.";
        assert_eq!(html(text), text);
        assert_eq!(from_markdown(text).plain(), text);
        assert!(from_markdown("").parts(4096).is_empty());
    }

    #[test]
    fn a_style_across_a_cut_is_closed_and_opened_again() {
        let markdown = format!("**{} {}**", "a".repeat(30), "b".repeat(30));
        let parts = from_markdown(&markdown).parts(40);
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert_eq!(parts[0].html, format!("<b>{}</b>", "a".repeat(30)));
        assert_eq!(parts[1].html, format!("<b>{}</b>", "b".repeat(30)));
        assert_eq!(parts[1].plain, "b".repeat(30));

        let code = (0..30).map(|i| format!("line {i}")).collect::<Vec<_>>().join("\n");
        let parts = from_markdown(&format!("```sh\n{code}\n```")).parts(100);
        assert!(parts.len() > 1);
        for part in &parts {
            assert!(part.html.starts_with("<pre><code class=\"language-sh\">"), "{part:?}");
            assert!(part.html.ends_with("</code></pre>"), "{part:?}");
            assert!(part.plain.chars().map(char::len_utf16).sum::<usize>() <= 100);
        }
        let joined: Vec<String> = parts.iter().map(|p| p.plain.clone()).collect();
        assert_eq!(joined.join("\n"), code);
    }

    #[test]
    fn every_part_is_well_formed_whatever_the_input() {
        let samples = [
            "**a *b `c` d* e** [l **m**](https://x.test) > q",
            "> - item **bold\n> continues** here\n\n```\ncode\n```",
            "*unclosed **mixed ~~strike",
            "<b>&amp; </i> ]] (( ** __",
        ];
        for sample in samples {
            for limit in [5, 13, 40, 4096] {
                for part in from_markdown(sample).parts(limit) {
                    assert_well_nested(&part.html);
                }
            }
        }
    }

    /// Every tag we write is closed in order.
    fn assert_well_nested(html: &str) {
        let mut stack = Vec::new();
        let mut rest = html;
        while let Some(at) = rest.find('<') {
            let end = rest[at..].find('>').expect("a tag ends") + at;
            let tag = &rest[at + 1..end];
            let name = tag.trim_start_matches('/').split([' ', '>']).next().unwrap().to_string();
            if tag.starts_with('/') {
                assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "{html}");
            } else {
                stack.push(name);
            }
            rest = &rest[end + 1..];
        }
        assert!(stack.is_empty(), "{html}");
    }
}
