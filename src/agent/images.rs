//! Photos the person sent, for the model: read from `files/` (where the gateway saved them)
//! and sent as `image_url` content parts holding `data:` URLs, beside the text of the message
//! they came with. Only the newest message's photos are sent; earlier ones are in the history
//! as their note ("saved as files/photo.jpg"), so the request stays small.

use base64::Engine;

use super::files;
use super::workspace::Workspace;

/// Photos sent with one message, at most.
pub const IMAGES_MAX: usize = 4;
/// One photo, at most (Telegram's largest photo size is far below this).
pub const IMAGE_MAX_BYTES: usize = 5 * 1024 * 1024;

/// A photo ready for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub data_url: String,
}

/// The image type a file name stands for; None: not an image the model takes.
pub fn mime_of(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => Some("image/jpeg"),
        "png" => Some("image/png"),
        "webp" => Some("image/webp"),
        "gif" => Some("image/gif"),
        _ => None,
    }
}

/// `data:image/jpeg;base64,...`. Pure.
pub fn data_url(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Whether a name the gateway sent is a plain image name in `files/`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains(['/', '\0'])
        && name != "."
        && name != ".."
        && mime_of(name).is_some()
}

/// The photos named, read from `files/` (links not followed); one that cannot be read is left
/// out (its note still tells the model where it is). Blocking.
pub fn load(workspace: &Workspace, names: &[String]) -> Vec<Image> {
    let Ok(dir) = workspace.files_dir() else { return Vec::new() };
    names
        .iter()
        .take(IMAGES_MAX)
        .filter_map(|name| {
            let mime = mime_of(name)?;
            let read = files::read(std::os::fd::AsFd::as_fd(&dir), name, 0, IMAGE_MAX_BYTES + 1);
            match read {
                Ok(out) if out.bytes.len() <= IMAGE_MAX_BYTES => Some(Image { data_url: data_url(mime, &out.bytes) }),
                Ok(_) => {
                    tracing::warn!(name = %name, "photo larger than {IMAGE_MAX_BYTES} bytes; not sent to the model");
                    None
                }
                Err(e) => {
                    tracing::warn!(name = %name, error = %e, "photo unreadable; not sent to the model");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        assert_eq!(mime_of("photo (2).JPG"), Some("image/jpeg"));
        assert_eq!(mime_of("notes.txt"), None);
        assert_eq!(data_url("image/png", b"\x89PNG"), "data:image/png;base64,iVBORw==");
        assert!(valid_name("photo.jpg"));
        for bad in ["", "../photo.jpg", "a/b.jpg", "x.txt", "a\0.jpg"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn photos_are_read_from_files_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path(), true).unwrap();
        std::fs::write(dir.path().join("files/a.jpg"), b"\xff\xd8\xff").unwrap();
        std::fs::write(dir.path().join("files/big.png"), vec![0u8; IMAGE_MAX_BYTES + 1]).unwrap();
        let names = ["a.jpg", "missing.jpg", "big.png"].map(String::from);
        let images = load(&ws, &names);
        assert_eq!(images, vec![Image { data_url: "data:image/jpeg;base64,/9j/".into() }]);
    }
}
