//! `multipart/form-data` bodies (RFC 7578) as the stand-ins receive them: text fields and
//! files, each with its headers' name, file name and content type.

/// One part of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    /// Set for file parts.
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

impl Part {
    /// A text field's value (None for a file or bytes that are not UTF-8).
    pub fn text(&self) -> Option<&str> {
        self.file_name.is_none().then(|| std::str::from_utf8(&self.bytes).ok()).flatten()
    }
}

/// The boundary of a `multipart/form-data; boundary=...` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    let media_type = parts.next()?.trim();
    if !media_type.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parts.find_map(|part| {
        let (k, v) = part.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("boundary")).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Every part of `body`, in order; an error for a body that is not a whole form.
pub fn parse(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let malformed = |why: &str| format!("can't parse multipart/form-data: {why}");
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    let mut pieces = split_bytes(body, delimiter.as_bytes()).into_iter().skip(1);
    for piece in pieces.by_ref() {
        if piece.starts_with(b"--") {
            return Ok(out);
        }
        let piece = piece.strip_prefix(b"\r\n").ok_or_else(|| malformed("no line break after a boundary"))?;
        let piece = piece.strip_suffix(b"\r\n").ok_or_else(|| malformed("no line break before a boundary"))?;
        let split = find_bytes(piece, b"\r\n\r\n").ok_or_else(|| malformed("a part without headers"))?;
        let headers = std::str::from_utf8(&piece[..split]).map_err(|_| malformed("headers are not text"))?;
        let header = |name: &str| {
            headers
                .split("\r\n")
                .find_map(|h| h.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)))
                .map(|(_, v)| v.trim().to_string())
        };
        let disposition = header("content-disposition").ok_or_else(|| malformed("a part without a name"))?;
        let attr = |key: &str| {
            disposition.split(';').find_map(|a| {
                let (k, v) = a.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        let name = attr("name").ok_or_else(|| malformed("a part without a name"))?;
        out.push(Part {
            name,
            file_name: attr("filename"),
            content_type: header("content-type"),
            bytes: piece[split + 4..].to_vec(),
        });
    }
    Err(malformed("no closing boundary"))
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn split_bytes<'a>(mut haystack: &'a [u8], needle: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(at) = find_bytes(haystack, needle) {
        out.push(&haystack[..at]);
        haystack = &haystack[at + needle.len()..];
    }
    out.push(haystack);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_files() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
                     --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"voice.oga\"\r\n\
                     Content-Type: audio/ogg\r\n\r\nOggS\x00\x01\r\n--XyZ--\r\n";
        let parts = parse(body, "XyZ").unwrap();
        assert_eq!(parts[0].text(), Some("whisper-1"));
        assert_eq!(parts[1].file_name.as_deref(), Some("voice.oga"));
        assert_eq!(parts[1].content_type.as_deref(), Some("audio/ogg"));
        assert_eq!(parts[1].bytes, b"OggS\x00\x01");
        assert_eq!(parts[1].text(), None);
        assert!(parse(b"--XyZ\r\ngarbage", "XyZ").is_err());
        assert_eq!(boundary("multipart/form-data; boundary=\"a b\""), Some("a b".into()));
        assert_eq!(boundary("application/json"), None);
    }
}
