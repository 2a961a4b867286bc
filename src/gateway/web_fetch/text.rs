//! Response bodies into text for the model. Pure: no I/O.

use std::io::{self, Read};
use std::time::Instant;

use encoding_rs::{Encoding, UTF_8};
use html2text::{Element, Handle, local_name};

/// Wrap width of the rendered HTML: wide enough that prose stays on few lines.
const WIDTH: usize = 100;

/// What to do with a body, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Html,
    Text,
    /// No media type: decided from the bytes once read.
    Unknown,
    /// Not read at all; summarised.
    Binary,
}

/// A Content-Type header, split: lowercase essence (`text/html`) and charset, if any.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContentType {
    pub essence: String,
    pub charset: Option<String>,
}

impl ContentType {
    pub fn parse(header: Option<&str>) -> Self {
        let Some(header) = header else { return Self::default() };
        let mut parts = header.split(';');
        let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let charset = parts.find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim().eq_ignore_ascii_case("charset").then(|| value.trim().trim_matches('"').to_string())
        });
        Self { essence, charset }
    }

    pub fn kind(&self) -> Kind {
        let e = self.essence.as_str();
        match e {
            "" => Kind::Unknown,
            "text/html" | "application/xhtml+xml" => Kind::Html,
            _ if e.starts_with("text/") => Kind::Text,
            "application/json"
            | "application/xml"
            | "application/javascript"
            | "application/yaml"
            | "application/x-yaml"
            | "application/toml" => Kind::Text,
            _ if e.ends_with("+json") || e.ends_with("+xml") => Kind::Text,
            _ => Kind::Binary,
        }
    }
}

/// The kind of a body that came without a media type.
pub fn sniff(body: &[u8]) -> Kind {
    let head = &body[..body.len().min(1024)];
    let start = String::from_utf8_lossy(head).trim_start().to_ascii_lowercase();
    if start.starts_with("<!doctype html") || start.starts_with("<html") {
        Kind::Html
    } else if body[..body.len().min(8192)].contains(&0) {
        Kind::Binary
    } else {
        Kind::Text
    }
}

/// The body as a string: in the declared charset, else (HTML) a `<meta charset>` in the
/// first 1024 bytes, else UTF-8. A byte-order mark wins over both. Invalid bytes become
/// U+FFFD rather than an error: a page cut at the size cap may end mid-character.
pub fn decode(body: &[u8], charset: Option<&str>, kind: Kind) -> String {
    let declared = charset.and_then(|c| Encoding::for_label(c.as_bytes()));
    let sniffed = || (kind == Kind::Html).then(|| meta_charset(body)).flatten();
    let encoding = declared.or_else(sniffed).unwrap_or(UTF_8);
    encoding.decode(body).0.into_owned()
}

fn meta_charset(body: &[u8]) -> Option<&'static Encoding> {
    let head = String::from_utf8_lossy(&body[..body.len().min(1024)]).to_ascii_lowercase();
    let at = head.find("charset=")? + "charset=".len();
    let label: String = head[at..]
        .trim_start_matches(['"', '\''])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        .collect();
    Encoding::for_label(label.as_bytes())
}

/// Elements nested deeper than this are cut off: the parser and the renderer both slow
/// down with depth, and real pages stay far below it.
const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvertError {
    /// Parsing was still going at the fetch's deadline.
    Deadline,
    Failed(String),
}

/// Readable text of an HTML page: Markdown-like, no tags, no scripts or styles, links as
/// numbered references listed at the end, tables as one block per cell.
///
/// The input is hostile and up to the size cap, and html2text is superlinear in places, so:
/// parsing stops at `deadline`; elements deeper than [`MAX_DEPTH`] are cut off; tables are
/// rendered raw (cell padding can multiply the size of the output) and without row or
/// column spans (certain combinations make html2text 0.17 panic).
pub fn html_to_text(html: &str, deadline: Instant) -> Result<String, ConvertError> {
    let config = html2text::config::plain().raw_mode(true).allow_width_overflow();
    let dom = config.parse_html(UntilDeadline { rest: html.as_bytes(), deadline }).map_err(|e| {
        if Instant::now() >= deadline { ConvertError::Deadline } else { ConvertError::Failed(e.to_string()) }
    })?;
    let cut = tame(&dom.document);
    let tree = config.dom_to_render_tree(&dom).map_err(|e| ConvertError::Failed(e.to_string()))?;
    let mut text = config.render_to_string(tree, WIDTH).map_err(|e| ConvertError::Failed(e.to_string()))?;
    if cut {
        text.push_str(&format!("\n\n[content nested deeper than {MAX_DEPTH} elements was left out]"));
    }
    Ok(text)
}

/// Cut the DOM down to what renders in bounded time; `true` if anything was cut.
/// Iterative: the DOM may be far deeper than the stack.
fn tame(root: &Handle) -> bool {
    let mut cut = false;
    let mut stack = vec![(root.clone(), 0)];
    while let Some((node, depth)) = stack.pop() {
        if let Element { attrs, .. } = &node.data {
            attrs
                .borrow_mut()
                .retain(|a| a.name.local != local_name!("colspan") && a.name.local != local_name!("rowspan"));
        }
        let mut children = node.children.borrow_mut();
        if depth >= MAX_DEPTH {
            cut |= !children.is_empty();
            children.clear();
            continue;
        }
        stack.extend(children.iter().map(|child| (child.clone(), depth + 1)));
    }
    cut
}

/// Feeds the parser in small reads and fails once the deadline has passed, so a document
/// built to make the parser quadratic costs at most the fetch's time.
struct UntilDeadline<'a> {
    rest: &'a [u8],
    deadline: Instant,
}

impl Read for UntilDeadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() >= self.deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "conversion deadline"));
        }
        let n = buf.len().min(self.rest.len()).min(4096);
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

/// What the model sees instead of a body that is not text.
pub fn binary_summary(essence: &str, length: Option<u64>) -> String {
    let essence = if essence.is_empty() { "unknown" } else { essence };
    match length {
        Some(n) => format!("binary content of type {essence}, {n} bytes (not shown)"),
        None => format!("binary content of type {essence}, size unknown (not shown)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn content_types() {
        let rows = [
            (Some("text/html; charset=UTF-8"), "text/html", Some("UTF-8"), Kind::Html),
            (Some("Text/HTML"), "text/html", None, Kind::Html),
            (Some("application/xhtml+xml"), "application/xhtml+xml", None, Kind::Html),
            (Some("text/plain;charset=\"iso-8859-1\""), "text/plain", Some("iso-8859-1"), Kind::Text),
            (Some("text/markdown"), "text/markdown", None, Kind::Text),
            (Some("application/json"), "application/json", None, Kind::Text),
            (Some("application/ld+json"), "application/ld+json", None, Kind::Text),
            (Some("application/rss+xml"), "application/rss+xml", None, Kind::Text),
            (Some("image/png"), "image/png", None, Kind::Binary),
            (Some("application/pdf"), "application/pdf", None, Kind::Binary),
            (Some("application/octet-stream"), "application/octet-stream", None, Kind::Binary),
            (None, "", None, Kind::Unknown),
        ];
        for (header, essence, charset, kind) in rows {
            let ct = ContentType::parse(header);
            assert_eq!((ct.essence.as_str(), ct.charset.as_deref(), ct.kind()), (essence, charset, kind), "{header:?}");
        }
    }

    #[test]
    fn sniffing_and_decoding() {
        assert_eq!(sniff(b"  <!DOCTYPE html><p>x"), Kind::Html);
        assert_eq!(sniff(b"hello"), Kind::Text);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0"), Kind::Binary);
        assert_eq!(decode(b"caf\xe9", Some("iso-8859-1"), Kind::Text), "café");
        assert_eq!(
            decode(b"<meta charset=\"windows-1252\">caf\xe9", None, Kind::Html),
            "<meta charset=\"windows-1252\">café"
        );
        assert_eq!(decode("café".as_bytes(), None, Kind::Text), "café");
        // Cut in the middle of a character, as at the size cap.
        assert_eq!(decode(&"é".as_bytes()[..1], None, Kind::Text), "\u{fffd}");
    }

    fn convert(html: &str) -> Result<String, ConvertError> {
        html_to_text(html, Instant::now() + Duration::from_secs(60))
    }

    #[test]
    fn html_becomes_text_without_markup() {
        let html = r#"<html><head><title>T</title><style>body { color: red }</style>
            <script>alert("secret")</script></head>
            <body><h1>Cats</h1><p>Cats are <b>small</b> &amp; furry.</p>
            <table><tr><th>Legs</th><td>4</td></tr></table>
            <a href="/dogs">Dogs</a></body></html>"#;
        let text = convert(html).unwrap();
        assert!(text.contains("# Cats"), "{text}");
        assert!(text.contains("Cats are **small** & furry."), "{text}");
        assert!(text.contains("Legs") && text.contains('4'), "{text}");
        assert!(text.contains("[Dogs][1]") && text.contains("[1]: /dogs"), "{text}");
        for absent in ["<", "alert", "secret", "color: red", "&amp;"] {
            assert!(!text.contains(absent), "{absent:?} in {text}");
        }
    }

    #[test]
    fn hostile_html_is_tamed() {
        // Deep nesting: cut off, with a note, instead of quadratic time.
        let text = convert(&format!("<p>top</p>{}bottom", "<div>".repeat(5_000))).unwrap();
        assert!(text.contains("top") && text.contains("left out") && !text.contains("bottom"), "{text}");
        // Row and column spans that make html2text 0.17 panic.
        let spans = "<table><tr><td colspan=1000>x</td><td rowspan=1000>y</td></tr></table>".repeat(3);
        assert!(convert(&spans).unwrap().contains('y'));
        // Table padding does not multiply the output.
        let tall = format!("<table><tr><td>{}</table>", "<p>x</p>".repeat(2000));
        assert!(convert(&tall).unwrap().len() < tall.len());
        // A deadline already passed stops the parser.
        assert_eq!(html_to_text("<p>x</p>", Instant::now()), Err(ConvertError::Deadline));
    }

    #[test]
    fn binary_summaries() {
        assert_eq!(binary_summary("image/png", Some(12)), "binary content of type image/png, 12 bytes (not shown)");
        assert_eq!(binary_summary("", None), "binary content of type unknown, size unknown (not shown)");
    }
}
