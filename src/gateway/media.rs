//! Files people send: which ones the gateway takes (size and type), and the words around them
//! (the replies to what it does not take, the note the agent's model reads). Pure; the worker
//! fetches and hands on.

use super::commands::Attachment;

/// Telegram's Bot API hands out files of at most 20 MB (`getFile`); nothing larger can be
/// fetched, whatever the setting.
pub const TELEGRAM_DOWNLOAD_MAX: u64 = 20 * 1000 * 1000;

/// Taken when no `--file-types` is given: documents the exec tools can read (`pdftotext`,
/// `grep`, `jq`, `csvlook`...) and office files; no programs, archives or disk images.
pub const DEFAULT_TYPES: &str =
    "pdf,txt,md,markdown,csv,tsv,json,jsonl,xml,yaml,yml,toml,ini,log,html,htm,rtf,docx,xlsx,pptx,odt,ods,odp,epub";

pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// MIME types by the extension they stand for, for files sent without a usable name.
const MIME_EXTENSIONS: &[(&str, &str)] = &[
    ("application/pdf", "pdf"),
    ("text/plain", "txt"),
    ("text/markdown", "md"),
    ("text/csv", "csv"),
    ("text/tab-separated-values", "tsv"),
    ("application/json", "json"),
    ("application/xml", "xml"),
    ("text/xml", "xml"),
    ("application/yaml", "yaml"),
    ("text/html", "html"),
    ("application/rtf", "rtf"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    ("application/vnd.openxmlformats-officedocument.presentationml.presentation", "pptx"),
    ("application/vnd.oasis.opendocument.text", "odt"),
    ("application/vnd.oasis.opendocument.spreadsheet", "ods"),
    ("application/vnd.oasis.opendocument.presentation", "odp"),
    ("application/epub+zip", "epub"),
];

/// Which documents the gateway fetches and hands to agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPolicy {
    pub max_bytes: u64,
    /// Lower-case extensions without the dot.
    pub types: Vec<String>,
    /// Voice notes and audio are transcribed (a transcription model is set).
    pub transcribe: bool,
    /// Photos go to the model as image input (the installation's model takes images).
    pub photos: bool,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            types: parse_types(DEFAULT_TYPES).unwrap_or_default(),
            transcribe: false,
            photos: false,
        }
    }
}

/// The `--file-types` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTypes(pub Vec<String>);

impl FileTypes {
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_types(text).map(FileTypes)
    }
}

/// `pdf, .TXT,csv` -> `["pdf", "txt", "csv"]`; refuses an empty list or an odd entry.
pub fn parse_types(text: &str) -> Result<Vec<String>, String> {
    let mut types = Vec::new();
    for entry in text.split(',').map(|t| t.trim().trim_start_matches('.').to_ascii_lowercase()) {
        if entry.is_empty() {
            continue;
        }
        if entry.len() > 16 || !entry.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("{entry:?} is not a file extension (letters and digits, e.g. pdf)"));
        }
        if !types.contains(&entry) {
            types.push(entry);
        }
    }
    if types.is_empty() {
        return Err("name at least one file extension, e.g. pdf,txt".into());
    }
    Ok(types)
}

/// A byte count, e.g. `10Mi`, `5M` or `1048576`, at most what Telegram lets bots download.
pub fn parse_max_bytes(text: &str) -> Result<u64, String> {
    let bytes = crate::quantity::Quantity::parse(text.trim())
        .ok()
        .and_then(|q| q.whole())
        .ok_or_else(|| format!("{text:?} is not a size (e.g. 10Mi)"))?;
    if bytes == 0 {
        return Err("must be more than 0".into());
    }
    if bytes > TELEGRAM_DOWNLOAD_MAX {
        return Err(format!("Telegram lets bots fetch files of at most {}", size(TELEGRAM_DOWNLOAD_MAX)));
    }
    Ok(bytes)
}

/// The extension of a sender's file name, lower case, if it has a usable one.
fn extension(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let (stem, ext) = base.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty() && ext.len() <= 16 && ext.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| ext.to_ascii_lowercase())
}

/// The extension a declared MIME type stands for (parameters such as `; charset=` ignored).
fn mime_extension(mime: &str) -> Option<&'static str> {
    let essence = mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    MIME_EXTENSIONS.iter().find(|(m, _)| *m == essence).map(|(_, ext)| *ext)
}

impl MediaPolicy {
    /// Whether a document is taken, by its declared size and type; the reply if not.
    pub fn admit(&self, file: &Attachment) -> Result<(), String> {
        if let Some(declared) = file.size
            && declared > self.max_bytes
        {
            return Err(too_large(declared, self.max_bytes));
        }
        self.file_type(file).map(drop)
    }

    /// The extension the file is taken as: its name's, or failing that its MIME type's.
    pub fn file_type(&self, file: &Attachment) -> Result<String, String> {
        let by_name = file.file_name.as_deref().and_then(extension);
        let by_mime = file.mime_type.as_deref().and_then(mime_extension).map(str::to_string);
        match by_name.or(by_mime) {
            Some(ext) if self.types.contains(&ext) => Ok(ext),
            Some(ext) => Err(format!(
                "Sorry, I don't take .{ext} files. I can take these kinds of documents: {}.",
                self.types.iter().map(|t| format!(".{t}")).collect::<Vec<_>>().join(" ")
            )),
            None => Err(format!(
                "Sorry, I can't tell what kind of file that is. Send it with a file name ending in one of: {}.",
                self.types.iter().map(|t| format!(".{t}")).collect::<Vec<_>>().join(" ")
            )),
        }
    }

    /// The name to ask the agent to save the file under: the sender's, or one made from the
    /// type. The agent makes it safe (and unique); this only gives it a sensible start.
    pub fn file_name(&self, file: &Attachment, ext: &str) -> String {
        match file.file_name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            Some(name) if extension(name).is_some() => name.to_string(),
            Some(name) => format!("{name}.{ext}"),
            None => format!("document.{ext}"),
        }
    }
}

pub fn too_large(bytes: u64, max: u64) -> String {
    format!("Sorry, that file is too large ({}): I take files of up to {}.", size(bytes), size(max))
}

/// The reply to a kind of message the bot does not take.
pub fn unsupported_text(kind: &str) -> String {
    format!(
        "Sorry, I can't take {kind}. I understand text messages and documents (PDF, text, CSV, \
         Markdown, JSON and the like): send me text, or the file as a document."
    )
}

pub const NO_TRANSCRIPTION: &str = "Sorry, I can't take voice messages here: this installation has no \
     transcription set up. Please write your message as text.";
pub const NO_WORDS: &str = "I could not make out any words in that voice message. Could you say it again, or write it?";

/// The reply when a voice note could not be transcribed.
pub fn transcription_failed(error: &crate::gateway::broker::transcription::TranscribeError) -> String {
    use crate::gateway::broker::transcription::TranscribeError;
    match error {
        TranscribeError::Limited(why) => format!("Sorry, I can't transcribe that voice message now: {why}"),
        TranscribeError::Refused(why) => format!("Sorry, I can't transcribe that voice message: {why}"),
        TranscribeError::Provider(_) => "Sorry, I could not transcribe that voice message just now. Please try \
             again in a little while, or write it as text."
            .to_string(),
    }
}

/// The name and type a voice note or audio file is sent to the transcription service under
/// (Telegram's voice notes are OGG/Opus).
pub fn audio_upload_name(file: &Attachment) -> (String, String) {
    let mime = file.mime_type.clone().unwrap_or_else(|| "audio/ogg".to_string());
    let name = match file.file_name.as_deref().filter(|n| extension(n).is_some()) {
        Some(name) => name.to_string(),
        None if mime.contains("mpeg") => "audio.mp3".to_string(),
        None => "voice.ogg".to_string(),
    };
    (name, mime)
}

/// What the model reads for a voice note: the transcript, marked as one.
pub fn transcript_note(text: &str, caption: Option<&str>) -> String {
    let mut note = format!("[voice message, transcribed] {}", text.trim());
    if let Some(caption) = caption.map(str::trim).filter(|c| !c.is_empty()) {
        note.push_str("\n[written with it] ");
        note.push_str(caption);
    }
    note
}

/// What the model reads with a photo (which it gets as image input beside this).
pub fn photo_note(saved_as: &str, caption: Option<&str>) -> String {
    let mut note = format!("[The person sent a photo; it is attached, and saved as files/{saved_as}.]");
    if let Some(caption) = caption.map(str::trim).filter(|c| !c.is_empty()) {
        note.push_str("\nTheir message with it: ");
        note.push_str(caption);
    }
    note
}

/// What the model reads about a file saved in `files/`.
pub fn document_note(saved_as: &str, bytes: u64, mime_type: Option<&str>, caption: Option<&str>) -> String {
    let kind = mime_type.map(|m| format!(", {m}")).unwrap_or_default();
    let mut note = format!(
        "[The person sent a file. It is saved as files/{saved_as} ({}{kind}); use the tools to read it, \
         e.g. `pdftotext {saved_as} -` for a PDF or `head` for text.]",
        size(bytes)
    );
    match caption.map(str::trim).filter(|c| !c.is_empty()) {
        Some(caption) => {
            note.push_str("\nTheir message with it: ");
            note.push_str(caption);
        }
        None => note.push_str("\nThey wrote nothing with it: say what the file is and ask what to do with it."),
    }
    note
}

/// A byte count for people: `512 bytes`, `1.5 KiB`, `10.0 MiB`.
pub fn size(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    match UNITS.iter().find(|(_, unit)| n >= *unit) {
        Some((name, unit)) => format!("{:.1} {name}", n as f64 / *unit as f64),
        None => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: Option<&str>, mime: Option<&str>, size: Option<u64>) -> Attachment {
        Attachment {
            file_id: "f".into(),
            file_name: name.map(str::to_string),
            mime_type: mime.map(str::to_string),
            size,
            caption: None,
        }
    }

    #[test]
    fn types_by_extension_then_mime() {
        let policy = MediaPolicy::default();
        assert_eq!(policy.file_type(&doc(Some("Report.PDF"), None, None)), Ok("pdf".into()));
        assert_eq!(policy.file_type(&doc(Some("notes"), Some("text/plain; charset=utf-8"), None)), Ok("txt".into()));
        assert_eq!(policy.file_type(&doc(None, Some("text/csv"), None)), Ok("csv".into()));
        let exe = policy.file_type(&doc(Some("setup.exe"), Some("application/pdf"), None)).unwrap_err();
        assert!(exe.contains(".exe") && exe.contains(".pdf"), "{exe}");
        let unknown = policy.file_type(&doc(Some("blob"), Some("application/octet-stream"), None)).unwrap_err();
        assert!(unknown.contains("can't tell"), "{unknown}");
        assert!(policy.file_type(&doc(Some(".bashrc"), None, None)).is_err(), "a dot file has no extension");
        assert_eq!(policy.file_name(&doc(Some("notes"), None, None), "txt"), "notes.txt");
        assert_eq!(policy.file_name(&doc(None, None, None), "csv"), "document.csv");
        assert_eq!(policy.file_name(&doc(Some("a.pdf"), None, None), "pdf"), "a.pdf");
    }

    #[test]
    fn declared_size_is_checked() {
        let policy = MediaPolicy { max_bytes: 1024, types: vec!["txt".into()], transcribe: false, photos: false };
        assert!(policy.admit(&doc(Some("a.txt"), None, Some(1024))).is_ok());
        let refused = policy.admit(&doc(Some("a.txt"), None, Some(1025))).unwrap_err();
        assert_eq!(refused, "Sorry, that file is too large (1.0 KiB): I take files of up to 1.0 KiB.");
    }

    #[test]
    fn settings_parse() {
        assert_eq!(parse_types(" PDF, .txt,,pdf").unwrap(), ["pdf", "txt"]);
        assert!(parse_types(",").is_err());
        assert!(parse_types("pdf,../x").is_err());
        assert_eq!(parse_max_bytes("10Mi"), Ok(10 << 20));
        assert_eq!(parse_max_bytes("1000"), Ok(1000));
        assert!(parse_max_bytes("0").is_err());
        assert!(parse_max_bytes("50Mi").unwrap_err().contains("at most"));
        assert!(parse_max_bytes("lots").is_err());
    }

    #[test]
    fn voice_notes_are_marked_as_transcripts() {
        assert_eq!(transcript_note(" buy milk ", None), "[voice message, transcribed] buy milk");
        assert_eq!(
            transcript_note("buy milk", Some("urgent")),
            "[voice message, transcribed] buy milk\n[written with it] urgent"
        );
        let voice = Attachment { mime_type: Some("audio/ogg".into()), ..Attachment::default() };
        assert_eq!(audio_upload_name(&voice), ("voice.ogg".into(), "audio/ogg".into()));
        let song = Attachment { file_name: Some("talk.m4a".into()), mime_type: Some("audio/mp4".into()), ..voice };
        assert_eq!(audio_upload_name(&song), ("talk.m4a".into(), "audio/mp4".into()));
    }

    #[test]
    fn the_note_names_the_file_and_carries_the_caption() {
        let note = document_note("report (2).pdf", 2048, Some("application/pdf"), Some(" summarise it "));
        assert!(note.contains("files/report (2).pdf (2.0 KiB, application/pdf)"), "{note}");
        assert!(note.ends_with("Their message with it: summarise it"), "{note}");
        assert!(document_note("a.txt", 3, None, None).contains("They wrote nothing"));
    }
}
