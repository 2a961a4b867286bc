//! Secrets (the master key, the provider's key, the bot token, the agent's token, the webhook
//! secret): read in one way, from a mounted file or else the environment, and held so that
//! they cannot be printed.

use std::fmt;
use std::path::{Path, PathBuf};

/// A value kept out of output: `Debug` shows `Secret(..)`, and there is no `Display`, so a
/// secret cannot be formatted into a log line, an error or a header by mistake (reqwest's
/// `bearer_auth` takes any `Display`); [`Secret::expose`] marks each place it is used.
#[derive(Clone, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: impl Into<T>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Where one secret comes from: the file `--{flag}` names (env `{env}_FILE`), else the value
/// in env `{env}`. Files are preferred: a flag's value shows in process listings.
#[derive(Debug, Clone, Copy)]
pub struct SecretSource {
    /// What the secret is, for errors: "bot token".
    pub what: &'static str,
    /// The flag naming the file, without dashes: "bot-token-file".
    pub flag: &'static str,
    /// The variable holding the value itself: "MOLTMATE_BOT_TOKEN".
    pub env: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no {what}: set --{flag} ({env}_FILE) to a file holding it, or {env}")]
    Missing { what: &'static str, flag: &'static str, env: &'static str },
    #[error("reading the {what} from {path} (--{flag}): {source}")]
    Read { what: &'static str, flag: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the {what} in {origin} is empty")]
    Empty { what: &'static str, origin: String },
    #[error("the {what} in {origin}: {reason}")]
    Invalid { what: &'static str, origin: String, reason: String },
}

impl SecretSource {
    /// The secret as text: from `file` if given, else from the environment; trimmed, not empty.
    pub fn text(&self, file: Option<&Path>) -> Result<Secret<String>, SecretError> {
        self.parse(file, |bytes| {
            String::from_utf8(bytes.to_vec()).map(Secret::new).map_err(|_| "not UTF-8 text".to_string())
        })
    }

    /// As [`Self::text`], then checked by `check`, whose refusal is named with the file or variable.
    pub fn parse<T>(
        &self,
        file: Option<&Path>,
        check: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<T, SecretError> {
        let inline = match file {
            Some(_) => None,
            None => std::env::var_os(self.env).map(|v| v.into_encoded_bytes()),
        };
        self.parse_from(file, inline, check)
    }

    fn parse_from<T>(
        &self,
        file: Option<&Path>,
        inline: Option<Vec<u8>>,
        check: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<T, SecretError> {
        let Self { what, flag, env } = *self;
        let (raw, origin) = match (file, inline) {
            (Some(path), _) => (
                std::fs::read(path).map_err(|source| SecretError::Read { what, flag, path: path.into(), source })?,
                format!("{} (--{flag})", path.display()),
            ),
            (None, Some(value)) => (value, env.to_string()),
            (None, None) => return Err(SecretError::Missing { what, flag, env }),
        };
        let trimmed = raw.trim_ascii();
        if trimmed.is_empty() {
            return Err(SecretError::Empty { what, origin });
        }
        check(trimmed).map_err(|reason| SecretError::Invalid { what, origin, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: SecretSource = SecretSource { what: "bot token", flag: "bot-token-file", env: "MOLTMATE_BOT_TOKEN" };

    fn text(file: Option<&Path>, inline: Option<&str>) -> Result<String, SecretError> {
        TOKEN.parse_from(file, inline.map(|v| v.as_bytes().to_vec()), |b| Ok(String::from_utf8(b.to_vec()).unwrap()))
    }

    #[test]
    fn a_file_wins_over_the_environment_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "123:abc\n").unwrap();
        assert_eq!(text(Some(&path), Some("from-env")).unwrap(), "123:abc");
        assert_eq!(text(None, Some("  from-env ")).unwrap(), "from-env");
    }

    #[test]
    fn errors_name_the_file_and_the_flag_or_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let shown = path.display().to_string();

        let missing = text(None, None).unwrap_err().to_string();
        assert_eq!(
            missing,
            "no bot token: set --bot-token-file (MOLTMATE_BOT_TOKEN_FILE) to a file holding it, or MOLTMATE_BOT_TOKEN"
        );
        let unreadable = text(Some(&path), None).unwrap_err().to_string();
        assert!(
            unreadable.starts_with(&format!("reading the bot token from {shown} (--bot-token-file): ")),
            "{unreadable}"
        );

        std::fs::write(&path, " \n").unwrap();
        let empty = text(Some(&path), None).unwrap_err().to_string();
        assert_eq!(empty, format!("the bot token in {shown} (--bot-token-file) is empty"));
        assert_eq!(text(None, Some("")).unwrap_err().to_string(), "the bot token in MOLTMATE_BOT_TOKEN is empty");

        std::fs::write(&path, "short").unwrap();
        let refused = TOKEN.parse_from(Some(&path), None, |_| Err::<(), _>("too short".into())).unwrap_err();
        assert_eq!(refused.to_string(), format!("the bot token in {shown} (--bot-token-file): too short"));
    }

    #[test]
    fn text_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, [0xff, 0xfe, b'k']).unwrap();
        assert!(matches!(TOKEN.text(Some(&path)), Err(SecretError::Invalid { .. })));
    }

    #[test]
    fn debug_never_shows_the_value() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Config {
            key: Secret<String>,
            bytes: Secret<Vec<u8>>,
        }
        let config = Config { key: Secret::new("sk-very-secret"), bytes: Secret::new(b"master-bytes".to_vec()) };
        for shown in [format!("{config:?}"), format!("{config:#?}"), format!("{:?}", config.key)] {
            assert!(!shown.contains("very-secret") && !shown.contains("master"), "{shown}");
            assert!(!shown.contains("109, 97"), "nor as bytes: {shown}");
        }
        assert_eq!(format!("{:?}", config.key), "Secret(..)");
        assert_eq!(config.key.expose(), "sk-very-secret");
    }

    #[test]
    fn there_is_no_display() {
        // Resolves only while exactly one impl applies: implementing Display for Secret adds
        // the second, and this stops compiling.
        trait AmbiguousIfDisplay<A> {
            fn check() {}
        }
        impl<T: ?Sized> AmbiguousIfDisplay<()> for T {}
        impl<T: ?Sized + fmt::Display> AmbiguousIfDisplay<u8> for T {}
        <Secret<String> as AmbiguousIfDisplay<_>>::check();
    }
}
